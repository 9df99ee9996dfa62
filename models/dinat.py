"""NAT and DiNAT: (Dilated) Neighborhood Attention Transformers (Hassani et al., CVPR 2023, arXiv:2204.07143;
Hassani and Shi, arXiv:2209.15001), the official hierarchical models and DiNAT_s.

Two architectures, as SHI-Labs/Neighborhood-Attention-Transformer ``classification/``:

* ``DiNAT`` (``nat.py`` / ``dinat.py``; NAT is DiNAT with every dilation 1): a stem of two 3x3 stride-2 convs (with
  bias, nothing between them) then LayerNorm; four stages of pre-norm layers (LayerNorm eps 1e-5, neighbourhood
  attention with a relative-position bias, LayerNorm, MLP with GELU), optional layer scale (``gamma1``/``gamma2``,
  1e-5 in NAT-S/B and DiNAT-B; DiNAT-S has none); between stages a 3x3 stride-2 conv without bias then LayerNorm;
  final LayerNorm on every token, average pool, Linear.
* ``DiNATs`` (``dinats.py``, DiNAT_s): Swin's layout with NA instead of window attention: a 4x4 patch embedding
  (input zero-padded at the right / bottom to a multiple of 4) with LayerNorm, Swin's patch merging between stages
  (odd maps padded, LayerNorm over 4C, then a Linear 4C -> 2C without bias), no layer scale.

The whole model is channels-last: each stage takes and returns an NCHW view of an NHWC tensor (free permutes), so
``features_only`` / ``forward_intermediates`` give NCHW maps and the blocks work on (B, H, W, C).

Checkpoints: the official files are raw state dicts with the downsampler inside the *preceding* level
(``levels.{i}.downsample`` / ``layers.{i}.downsample``); here it sits at the start of the next stage
(``stages.{i+1}.downsample``, timm's layout), so a stage's output is the pre-downsample map the official det/seg
backbones return. ``checkpoint_filter_fn`` maps the official keys (and resizes ``rpb`` tables trained for another
kernel size, bicubic, as the official 11x11 "interp" checkpoint was made).

Dilations: per block (``dilations``, one tuple per stage). The official ImageNet schedule alternates 1 and the
stage's dilation ``d_i`` with k * d_i equal to the feature map's side at the training size (224: 8, 4, 2, 1; 384:
13, 6, 3, 1); the det/seg configs use their own, larger lists. At 224, k * d is exactly the map side, so the model
is the official one. Any other input size works (minimum 32 px, one token at stride 32): a layer whose map is
smaller than k * d reproduces the legacy NATTEN (<= 0.14) module the weights were trained and evaluated with, which
zero-pads its input to k * d before qkv and crops after (``dilation_mode="pad"``, the default); ``"adapt"`` lowers
each layer's dilation to ``max(1, min(d, min(H, W) // k))`` instead (the rule asked for in NAT issue #103: k * d at
most the map side), and ``"strict"`` raises (NATTEN >= 0.15). See ``visionzoo.layers.neighborhood``.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from visionzoo.layers import ClassifierHead, Linear, Mlp, NeighborhoodAttention2D, check_image_input
from visionzoo.layers.neighborhood import check_dilation_mode, check_kernel_and_dilation

from ._checkpoint import PretrainedFileMixin, build_zoo_model, check_keys, unwrap_state_dict
from ._dense import DenseHook
from ._family import Family
from ._pyramid import PyramidMixin

__all__ = ["FAMILY", "DiNAT", "DiNATs", "checkpoint_filter_fn", "official_key", "resize_rpb"]

MIN_INPUT_SIZE = 32  # one token at stride 32

# The contract model: vz_dinat_mini and vz_nat_mini tie as the smallest (19,984,174 parameters each); DiNAT-Mini is
# chosen because it runs the dilated path (and, at small inputs, the legacy padding) the other variants share.
FAMILY = Family(
    name="dinat",
    contract_model="vz_dinat_mini",
    reduced=dict(embed_dim=16, depths=(2, 1, 1, 1), num_heads=(1, 2, 2, 4), dilations=((1, 2), (2,), (1,), (1,))),
    kernels=("neighborhood_attention",),
    det_seg_no_decay=("rpb", "norm"),
    smoke_configs=("mmdet/dinat/mask-rcnn_dinat-mini_fpn_ms-crop-3x_coco.py",
                   "mmseg/dinat/upernet_dinat-mini_160k_ade20k-512x512.py"),
)

LayerNorm = nn.LayerNorm  # eps 1e-5 everywhere, as the official models (torch's default)


# ---------------------------------------------------------------------------------------------------- blocks

class ConvStem(nn.Module):
    """NAT's ``ConvTokenizer``: conv3x3 s2 (C/2, bias) -> conv3x3 s2 (C, bias) -> LayerNorm. Stride 4.

    Also the model's entry: validates the input and switches to channels_last memory."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.in_chans = in_chans
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1)
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans, MIN_INPUT_SIZE, self.conv1.weight.dtype, "NAT/DiNAT")
        x = self.conv2(self.conv1(x.contiguous(memory_format=torch.channels_last)))
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PatchEmbedStem(nn.Module):
    """DiNAT_s's (Swin's) patch embedding: zero-pad right / bottom to a multiple of 4, conv4x4 s4, LayerNorm."""

    def __init__(self, in_chans: int, dim: int, patch_size: int = 4):
        super().__init__()
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans, MIN_INPUT_SIZE, self.proj.weight.dtype, "DiNAT_s")
        p = self.patch_size
        pad_b, pad_r = -x.shape[2] % p, -x.shape[3] % p
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        x = self.proj(x.contiguous(memory_format=torch.channels_last))
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvDownsample(nn.Module):
    """NAT's ``ConvDownsampler``: conv3x3 s2 (C -> 2C, no bias) -> LayerNorm. NCHW (channels_last) in and out."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1, bias=False)
        self.norm = LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PatchMerging(nn.Module):
    """Swin's patch merging (DiNAT_s): odd maps zero-padded at the right / bottom, the 2x2 neighbours concatenated
    in Swin's order [(0,0), (1,0), (0,1), (1,1)], LayerNorm over 4C, Linear 4C -> 2C without bias."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = LayerNorm(4 * dim)
        self.reduction = Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        H, W = x.shape[1:3]
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x)).permute(0, 3, 1, 2)


class NATBlock(nn.Module):
    """Pre-norm transformer layer on a (B, H, W, C) map: neighbourhood attention, then an MLP; optional layer scale.

    Parameter names as the official ``NATLayer``: norm1, attn.{qkv, rpb, proj}, norm2, mlp.{fc1, fc2}, gamma1/2."""

    def __init__(self, dim: int, num_heads: int, kernel_size: int, dilation: int, mlp_ratio: float,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, layer_scale: Optional[float] = None,
                 drop_path: float = 0.0, attn_drop: float = 0.0, proj_drop: float = 0.0, dilation_mode: str = "pad"):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = NeighborhoodAttention2D(dim, num_heads, kernel_size, dilation, bias=True, qkv_bias=qkv_bias,
                                            qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=proj_drop,
                                            dilation_mode=dilation_mode)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        if layer_scale is not None:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))
        else:
            self.gamma1 = self.gamma2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.norm1(x))
        x = x + self.drop_path(y if self.gamma1 is None else self.gamma1 * y)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y if self.gamma2 is None else self.gamma2 * y)


class NATStage(nn.Module):
    """Downsampler (none in the first stage), then the blocks. NCHW (channels_last) in and out."""

    def __init__(self, downsample: nn.Module, dim: int, num_heads: int, kernel_size: int, dilations: Sequence[int],
                 mlp_ratio: float, drop_path: Sequence[float], **block_kwargs):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = downsample
        self.blocks = nn.Sequential(*[
            NATBlock(dim, num_heads, kernel_size, d, mlp_ratio, drop_path=dp, **block_kwargs)
            for d, dp in zip(dilations, drop_path)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x).permute(0, 2, 3, 1)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x.permute(0, 3, 1, 2)


def _per_block_dilations(depths: Sequence[int], dilations) -> List[Tuple[int, ...]]:
    if dilations is None:
        return [(1,) * d for d in depths]
    dilations = [tuple(stage) for stage in dilations]
    if len(dilations) != len(depths) or any(len(s) != d for s, d in zip(dilations, depths)):
        raise ValueError(f"dilations must give one dilation per block of each stage (depths {tuple(depths)}), "
                         f"got {tuple(dilations)}")
    for stage in dilations:
        for d in stage:
            check_kernel_and_dilation(1, d, "DiNAT")
    return dilations


# ----------------------------------------------------------------------------------------------------- model

class _HierarchicalNA(PyramidMixin, PretrainedFileMixin, nn.Module):
    """Shared body of ``DiNAT`` and ``DiNATs``: stem, four stages, final per-token LayerNorm, pooled Linear head.

    Args:
        embed_dim: width of the first stage (doubled at each stage).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        kernel_size: neighbourhood side (odd).
        dilations: per stage, one dilation per block (None: all 1, i.e. NAT).
        mlp_ratio: MLP hidden width / width.
        layer_scale: initial value of the per-channel layer scale (None: no layer scale).
        qkv_bias, qk_scale: as the official models.
        dilation_mode: ``"pad"`` (legacy NATTEN, default), ``"adapt"`` or ``"strict"`` (see the module docstring).
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout after the attention projection and in the MLP (the official ``drop_rate``).
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth of the last block, linearly less before (official schedule).
    """

    stem_cls: type = ConvStem
    downsample_cls: type = ConvDownsample
    first_conv: str = "stem.conv1"
    dense_hook: DenseHook  # set below the class

    def __init__(
            self,
            embed_dim: int = 64,
            depths: Sequence[int] = (3, 4, 6, 5),
            num_heads: Sequence[int] = (2, 4, 8, 16),
            kernel_size: int = 7,
            dilations: Optional[Sequence[Sequence[int]]] = None,
            mlp_ratio: float = 3.0,
            layer_scale: Optional[float] = None,
            qkv_bias: bool = True,
            qk_scale: Optional[float] = None,
            dilation_mode: str = "pad",
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            proj_drop_rate: float = 0.0,
            attn_drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} must have the same length")
        kernel_size, _ = check_kernel_and_dilation(kernel_size, 1, type(self).__name__)
        self.dilations = _per_block_dilations(depths, dilations)
        self.kernel_size = kernel_size
        self.dilation_mode = check_dilation_mode(dilation_mode)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        dims = [int(embed_dim * 2 ** i) for i in range(len(depths))]
        self.num_features = dims[-1]

        self.stem = self.stem_cls(in_chans, embed_dim)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # the official linspace(0, rate)
        stages, self.feature_info = [], []
        for i, (dim, depth, heads) in enumerate(zip(dims, depths, num_heads)):
            stage_rates, rates = rates[:depth], rates[depth:]
            downsample = self.downsample_cls(dims[i - 1], dim) if i > 0 else nn.Identity()
            stages.append(NATStage(downsample, dim, heads, kernel_size, self.dilations[i], mlp_ratio, stage_rates,
                                   qkv_bias=qkv_bias, qk_scale=qk_scale, layer_scale=layer_scale,
                                   attn_drop=attn_drop_rate, proj_drop=proj_drop_rate, dilation_mode=dilation_mode))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, global_pool, drop_rate=drop_rate)
        self.head_hidden_size = self.head.num_features
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """The relative-position tables (the official ``no_weight_decay_keywords``: ``rpb``)."""
        return {n for n, _ in self.named_parameters() if n.endswith(".rpb")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        blocks = r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.downsample", (0,)),
                                                   (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                                                   (r"^norm", (99999,))]
        return dict(stem=r"^stem", blocks=blocks)

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The output of each stage (indices 0-3: the pre-downsample maps at strides 4-32, as the official det/seg
        backbones return them, before their output norms), plus the final features (normed).

        ``norm=True`` applies the final LayerNorm to the last stage's intermediate."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        last = len(self.stages) - 1
        stages = self.stages[:max_index + 1] if stop_early else self.stages
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(self._final_norm(x) if norm and i == last else x)
        if output_fmt == "NHWC":
            intermediates = [t.permute(0, 2, 3, 1) for t in intermediates]
        if intermediates_only:
            return intermediates
        return self._final_norm(x), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last index in ``indices`` (and the head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if max_index < len(self.feature_info) - 1:
            # the final norm and the head were sized for the last stage; what remains ends at an earlier width
            self.num_features = self.feature_info[max_index]["num_chs"]
            self.norm = nn.Identity()
            self.head = ClassifierHead(self.num_features, 0, "")
        else:
            if prune_norm:
                self.norm = nn.Identity()
            if prune_head:
                self.reset_classifier(0, "")
        self.head_hidden_size = self.head.num_features
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._final_norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class DiNAT(_HierarchicalNA):
    """NAT / DiNAT (``nat.py``, ``dinat.py``): conv stem, conv downsamplers. See ``_HierarchicalNA`` for the args."""

    stem_cls = ConvStem
    downsample_cls = ConvDownsample
    first_conv = "stem.conv1"


class DiNATs(_HierarchicalNA):
    """DiNAT_s (``dinats.py``): Swin's 4x4 patch embedding and patch merging. See ``_HierarchicalNA``."""

    stem_cls = PatchEmbedStem
    downsample_cls = PatchMerging
    first_conv = "stem.proj"


# ------------------------------------------------------------------------------------------------ checkpoints

_OFFICIAL_RULES = (
    (re.compile(r"^(?:levels|layers)\.(\d+)\.downsample\.(.+)$"), lambda m: f"stages.{int(m[1]) + 1}.downsample.{m[2]}"),
    (re.compile(r"^(?:levels|layers)\.(\d+)\.blocks\.(.+)$"), lambda m: f"stages.{m[1]}.blocks.{m[2]}"),
    (re.compile(r"^patch_embed\.proj\.0\.(.+)$"), lambda m: f"stem.conv1.{m[1]}"),
    (re.compile(r"^patch_embed\.proj\.1\.(.+)$"), lambda m: f"stem.conv2.{m[1]}"),
    (re.compile(r"^patch_embed\.(proj|norm)\.(weight|bias)$"), lambda m: f"stem.{m[1]}.{m[2]}"),
    (re.compile(r"^head\.(weight|bias)$"), lambda m: f"head.fc.{m[1]}"),
)


def official_key(key: str) -> Optional[str]:
    """Our name for a key of the official NAT / DiNAT / DiNAT_s layout; None for any other key (ours, ``norm.*``)."""
    for pattern, rename in _OFFICIAL_RULES:
        match = pattern.match(key)
        if match:
            return rename(match)
    return None


def resize_rpb(table: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """A (heads, 2k'-1, 2k'-1) relative-position table resized to kernel ``kernel_size``: bicubic (the
    interpolation the official ``dinat_large_in22k_224_11x11interp.pth`` states; Swin's for its windows)."""
    size = 2 * kernel_size - 1
    if tuple(table.shape[-2:]) == (size, size):
        return table
    out = F.interpolate(table[None].float(), size=(size, size), mode="bicubic", align_corners=False)
    return out[0].to(table.dtype)


def map_official_keys(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename official keys to ours; keys already in our layout are kept (official ones win on a clash)."""
    out = {}
    for key, value in state.items():
        new = official_key(key)
        if new is not None:
            out[new] = value
    for key, value in state.items():
        if official_key(key) is None:
            out.setdefault(key, value)
    return out


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: _HierarchicalNA) -> Dict[str, torch.Tensor]:
    """Map a checkpoint onto ``model``: the official raw state dicts (``levels.*`` / ``layers.*``, downsampler in the
    preceding level, ``patch_embed``, ``head``), our own safetensors, or a Lightning / DDP / EMA checkpoint.
    ``rpb`` tables of another kernel size are resized; keys that do not fit raise a ValueError naming them."""
    state = map_official_keys(unwrap_state_dict(state_dict))
    expected = model.state_dict()
    for key, value in list(state.items()):
        target = expected.get(key)
        if target is not None and key.endswith("attn.rpb") and value.shape != target.shape \
                and value.shape[0] == target.shape[0]:
            state[key] = resize_rpb(value, (target.shape[-1] + 1) // 2)
    check_keys(state, model, f"{type(model).__name__} (kernel_size {model.kernel_size})",
               first_conv=model.first_conv)
    return state


class NATDenseHook(DenseHook):
    """The official det/seg backbones: the pre-downsample output of each level through ``norm{i}`` (nn.LayerNorm,
    eps 1e-5); their checkpoints keep the classification layout (``levels.*`` / ``layers.*``), mapped here."""

    def official_keys(self, state):
        model_state, own = super().official_keys(state)
        return map_official_keys(model_state), own


_HierarchicalNA.dense_hook = NATDenseHook(norm_eps=1e-5, official_norm_key="norm{i}")


# ---------------------------------------------------------------------------------------------- registration

def _create(cls, variant: str, pretrained: bool, **kwargs):
    return build_zoo_model(cls, variant, pretrained, feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
                           **kwargs)


_BASE = "https://shi-labs.com/projects"
_DINAT_PAPER = dict(paper_name="Dilated Neighborhood Attention Transformer", paper_ids="arXiv:2209.15001")
_NAT_PAPER = dict(paper_name="Neighborhood Attention Transformer", paper_ids="arXiv:2204.07143")


def _cfg(url: str, size: int = 224, first_conv: str = "stem.conv1", paper=_DINAT_PAPER, **kwargs) -> Dict[str, Any]:
    """The official weights (direct URLs, raw state dicts) and eval transform: the official models carry no
    pretrained cfg, so their ``validate.py`` uses timm's defaults (bicubic, crop 0.875, ImageNet mean / std) at 224;
    the 384 fine-tunes were evaluated at crop 1.0 (their configs' ``crop_pct``)."""
    cfg = dict(
        url=url, num_classes=1000, input_size=(3, size, size), pool_size=(size // 32,) * 2,
        min_input_size=(3, MIN_INPUT_SIZE, MIN_INPUT_SIZE), fixed_input_size=False, interpolation="bicubic",
        crop_pct=0.875 if size == 224 else 1.0, crop_mode="center", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv=first_conv, classifier="head.fc", license="mit",
        custom_load=True,  # files and URLs load through PretrainedFileMixin.load_pretrained (safe official reader)
        origin_url="https://github.com/SHI-Labs/Neighborhood-Attention-Transformer",
        notes=("official weights (raw state dict), mapped by checkpoint_filter_fn",),
        **paper,
    )
    cfg.update(kwargs)
    return cfg


_IN1K = f"{_BASE}/dinat/checkpoints/imagenet1k"
_IN22K = f"{_BASE}/dinat/checkpoints/imagenet22k"
_21K = dict(num_classes=21841)
_S = dict(first_conv="stem.proj")

default_cfgs = generate_default_cfgs({
    "vz_nat_mini.in1k": _cfg(f"{_BASE}/nat/checkpoints/CLS/nat_mini.pth", paper=_NAT_PAPER),
    "vz_nat_tiny.in1k": _cfg(f"{_BASE}/nat/checkpoints/CLS/nat_tiny.pth", paper=_NAT_PAPER),
    "vz_nat_small.in1k": _cfg(f"{_BASE}/nat/checkpoints/CLS/nat_small.pth", paper=_NAT_PAPER),
    "vz_nat_base.in1k": _cfg(f"{_BASE}/nat/checkpoints/CLS/nat_base.pth", paper=_NAT_PAPER),
    "vz_dinat_mini.in1k": _cfg(f"{_IN1K}/dinat_mini_in1k_224.pth"),
    "vz_dinat_tiny.in1k": _cfg(f"{_IN1K}/dinat_tiny_in1k_224.pth"),
    "vz_dinat_small.in1k": _cfg(f"{_IN1K}/dinat_small_in1k_224.pth"),
    "vz_dinat_base.in1k": _cfg(f"{_IN1K}/dinat_base_in1k_224.pth"),
    "vz_dinat_large.in22k_ft_in1k": _cfg(f"{_IN1K}/dinat_large_in22k_in1k_224.pth"),
    "vz_dinat_large.in22k": _cfg(f"{_IN22K}/dinat_large_in22k_224.pth", **_21K),
    "vz_dinat_large_384.in22k_ft_in1k": _cfg(f"{_IN1K}/dinat_large_in22k_in1k_384.pth", 384),
    "vz_dinat_large_11x11.in22k": _cfg(f"{_IN22K}/dinat_large_in22k_224_11x11interp.pth", **_21K),
    "vz_dinat_large_384_11x11.in22k_ft_in1k": _cfg(f"{_IN1K}/dinat_large_in22k_in1k_384_11x11.pth", 384),
    "vz_dinat_s_tiny.in1k": _cfg(f"{_IN1K}/dinat_s_tiny_in1k_224.pth", **_S),
    "vz_dinat_s_small.in1k": _cfg(f"{_IN1K}/dinat_s_small_in1k_224.pth", **_S),
    "vz_dinat_s_base.in1k": _cfg(f"{_IN1K}/dinat_s_base_in1k_224.pth", **_S),
    "vz_dinat_s_large.in22k_ft_in1k": _cfg(f"{_IN1K}/dinat_s_large_in1k_224.pth", **_S),
    "vz_dinat_s_large.in22k": _cfg(f"{_IN22K}/dinat_s_large_in22k_224.pth", **_S, **_21K),
    "vz_dinat_s_large_384.in22k_ft_in1k": _cfg(f"{_IN1K}/dinat_s_large_in1k_384.pth", 384, **_S),
})


def imagenet_dilations(depths: Sequence[int], stage_dilations: Sequence[int]) -> Tuple[Tuple[int, ...], ...]:
    """The official ImageNet schedule: in stage i, blocks alternate dilation 1 and ``stage_dilations[i]``
    (1, d, 1, d, ...): at 224, (8, 4, 2, 1), so k * d = 56, 28, 14, 7 equals each stage's map side."""
    return tuple(tuple(1 if j % 2 == 0 else d for j in range(depth)) for depth, d in zip(depths, stage_dilations))


D224, D384 = (8, 4, 2, 1), (13, 6, 3, 1)

# official factories (classification/nat.py, dinat.py, dinats.py): widths, depths, heads, MLP ratio, layer scale
_ARCHS = dict(
    mini=dict(embed_dim=64, depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0),
    tiny=dict(embed_dim=64, depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0),
    small=dict(embed_dim=96, depths=(3, 4, 18, 5), num_heads=(3, 6, 12, 24), mlp_ratio=2.0),
    base=dict(embed_dim=128, depths=(3, 4, 18, 5), num_heads=(4, 8, 16, 32), mlp_ratio=2.0, layer_scale=1e-5),
    large=dict(embed_dim=192, depths=(3, 4, 18, 5), num_heads=(6, 12, 24, 48), mlp_ratio=2.0),
)
_S_ARCHS = dict(
    tiny=dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), mlp_ratio=4.0),
    small=dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), mlp_ratio=4.0),
    base=dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), mlp_ratio=4.0),
    large=dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), mlp_ratio=4.0),
)


def _nat(arch: str, variant: str, pretrained: bool, **kwargs) -> DiNAT:
    """NAT: no dilation; NAT-S has layer scale (DiNAT-S does not)."""
    args = dict(_ARCHS[arch], kernel_size=7)
    if arch == "small":
        args["layer_scale"] = 1e-5
    return _create(DiNAT, variant, pretrained, **dict(args, **kwargs))


def _dinat(arch: str, variant: str, pretrained: bool, kernel_size: int = 7, stage_dilations=D224, **kwargs) -> DiNAT:
    args = dict(_ARCHS[arch], kernel_size=kernel_size)
    args["dilations"] = imagenet_dilations(args["depths"], stage_dilations)
    return _create(DiNAT, variant, pretrained, **dict(args, **kwargs))


def _dinat_s(arch: str, variant: str, pretrained: bool, stage_dilations=D224, **kwargs) -> DiNATs:
    args = dict(_S_ARCHS[arch], kernel_size=7)
    args["dilations"] = imagenet_dilations(args["depths"], stage_dilations)
    return _create(DiNATs, variant, pretrained, **dict(args, **kwargs))


@register_model
def vz_nat_mini(pretrained: bool = False, **kwargs) -> DiNAT:
    return _nat("mini", "vz_nat_mini", pretrained, **kwargs)


@register_model
def vz_nat_tiny(pretrained: bool = False, **kwargs) -> DiNAT:
    return _nat("tiny", "vz_nat_tiny", pretrained, **kwargs)


@register_model
def vz_nat_small(pretrained: bool = False, **kwargs) -> DiNAT:
    return _nat("small", "vz_nat_small", pretrained, **kwargs)


@register_model
def vz_nat_base(pretrained: bool = False, **kwargs) -> DiNAT:
    return _nat("base", "vz_nat_base", pretrained, **kwargs)


@register_model
def vz_dinat_mini(pretrained: bool = False, **kwargs) -> DiNAT:
    return _dinat("mini", "vz_dinat_mini", pretrained, **kwargs)


@register_model
def vz_dinat_tiny(pretrained: bool = False, **kwargs) -> DiNAT:
    return _dinat("tiny", "vz_dinat_tiny", pretrained, **kwargs)


@register_model
def vz_dinat_small(pretrained: bool = False, **kwargs) -> DiNAT:
    return _dinat("small", "vz_dinat_small", pretrained, **kwargs)


@register_model
def vz_dinat_base(pretrained: bool = False, **kwargs) -> DiNAT:
    return _dinat("base", "vz_dinat_base", pretrained, **kwargs)


@register_model
def vz_dinat_large(pretrained: bool = False, **kwargs) -> DiNAT:
    """DiNAT-L at 224 (ImageNet-22K pre-trained; ``.in22k`` has the 21841-class head)."""
    return _dinat("large", "vz_dinat_large", pretrained, **kwargs)


@register_model
def vz_dinat_large_384(pretrained: bool = False, **kwargs) -> DiNAT:
    """DiNAT-L fine-tuned at 384: dilations 13, 6, 3, 1 (k * d = 91, 42, 21, 7 on 96, 48, 24, 12 maps)."""
    return _dinat("large", "vz_dinat_large_384", pretrained, stage_dilations=D384, **kwargs)


@register_model
def vz_dinat_large_11x11(pretrained: bool = False, **kwargs) -> DiNAT:
    """DiNAT-L with 11x11 neighbourhoods at 224, the official ``dinat_large_21k_11x11``: its only weights are the
    ImageNet-22K ones with the 7x7 tables bicubic-interpolated to 11x11 (21841 classes), the start of the 384 fine-tune.
    The 224 dilations are kept, so k * d (88, 44, 22, 11) exceeds the map sides at 224 (legacy padding)."""
    return _dinat("large", "vz_dinat_large_11x11", pretrained, kernel_size=11, **kwargs)


@register_model
def vz_dinat_large_384_11x11(pretrained: bool = False, **kwargs) -> DiNAT:
    """DiNAT-L with 11x11 neighbourhoods fine-tuned at 384; the official model keeps the 224 dilations (8, 4, 2, 1)."""
    return _dinat("large", "vz_dinat_large_384_11x11", pretrained, kernel_size=11, **kwargs)


@register_model
def vz_dinat_s_tiny(pretrained: bool = False, **kwargs) -> DiNATs:
    return _dinat_s("tiny", "vz_dinat_s_tiny", pretrained, **kwargs)


@register_model
def vz_dinat_s_small(pretrained: bool = False, **kwargs) -> DiNATs:
    return _dinat_s("small", "vz_dinat_s_small", pretrained, **kwargs)


@register_model
def vz_dinat_s_base(pretrained: bool = False, **kwargs) -> DiNATs:
    return _dinat_s("base", "vz_dinat_s_base", pretrained, **kwargs)


@register_model
def vz_dinat_s_large(pretrained: bool = False, **kwargs) -> DiNATs:
    return _dinat_s("large", "vz_dinat_s_large", pretrained, **kwargs)


@register_model
def vz_dinat_s_large_384(pretrained: bool = False, **kwargs) -> DiNATs:
    return _dinat_s("large", "vz_dinat_s_large_384", pretrained, stage_dilations=D384, **kwargs)
