"""L²ViT: "The Linear Attention Resurrection in Vision Transformer" (Chuanyang Zheng, arXiv:2501.16182).

Architecture as ChuanyangZheng/L2ViT (``classification/models/l2vit.py``, ``block_type='mix_local_enhanced_vit'``,
``conv_stem=True``): a hierarchical 4-stage transformer whose stages alternate two blocks, starting with a local one:

* **local window block** (even block index; official ``LWABlock``): CPE, then softmax attention inside non-overlapping
  7 x 7 windows (12 x 12 for Base-384), CPE again, then the MLP. No relative position bias, no shifted windows.
* **linear global block** (odd block index; official ``LGABlock(enhanced=True)``): CPE, then linear attention over
  the whole map, then the local concentration module (LCM: depthwise 7x7 -> GELU -> BatchNorm -> depthwise 7x7,
  with its own pre-norm), then the MLP.

Quirks the published weights depend on, reproduced here:

* Linear attention: ReLU features, ``(q (kᵀv) * temperature) / clamp(q . sum_n k, min=100)`` with a learnable
  per-head ``temperature`` of shape (heads, 1, 1) initialised to head_dim^-0.5 (``visionzoo.kernels.linear_attention``
  with ``denom_min=100``). The clamp makes maps with few tokens (stage 4 at 224: 49 tokens) effectively
  un-normalised; the official models were trained in fp32 only (``--use_amp=false``).
* Window padding: a map that is not whole windows is padded with zero *tokens after the pre-norm*; they go through
  the qkv projection (their keys and values are the projection's biases) and are attended to, unmasked, as in the
  official code (and in the official detection backbone, whose weights saw it). ``masked_window_padding=True``
  masks them instead (the shared kernel's rule); at the training sizes nothing is padded either way.
* The stem pads the image (bottom/right, zeros) to a multiple of 4, each downsampling layer pads its normalised map
  to even sizes, as the official ``PatchEmbed`` does.
* CPE: a residual 3x3 depthwise conv with bias and no activation (``visionzoo.layers.ConvPosEnc``), twice in a local
  block (before the attention and before the MLP), once in a global block.
* Norms: ``nn.LayerNorm`` (eps 1e-5) everywhere but the stem's and the LCM's BatchNorms; the final norm is applied
  per token *before* the average pool. No layer scale (the official commands pass ``--layer_scale_init_value 0``,
  which the model ignores anyway). Stochastic depth rates are ``linspace(0, drop_path_rate, total blocks)``.

Beyond the official code: activations stay channels-last (B, H, W, C) throughout (no token <-> map transposes around
each convolution); the attention runs on the shared kernels (``window_attention`` straight from the qkv projection's
output, ``linear_attention`` with its fp32 accumulation); eval mode folds the stem's BatchNorms into its convs;
any input of at least 32 x 32, non-square included, without rebuilding; ``window_size`` is honoured by the det/seg
backbone (the official one ignores it and always uses 7); ``features_only`` / ``forward_intermediates``.

Weights: the official release files (GitHub release v1.0) are ConvNeXt-style training checkpoints with ``model``
and ``model_ema`` (and ``optimizer``, ``scaler``, ``args``). ``*-best-ema.pth`` files were saved when the EMA weights
evaluated best: their ``model_ema`` is loaded. ``*-best.pth`` files were saved when the raw weights evaluated best
(the README's evaluation reads ``model``): their ``model`` is loaded. The key used is logged.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from visionzoo.kernels import l2vit_features, linear_attention, window_attention
from visionzoo.layers import (ClassifierHead, ConvPosEnc, Linear, Mlp, check_image_input, depthwise_conv2d, fold_bn,
                              residual_mlp, store_weight_channels_last)
from visionzoo.layers.linear import linear

from ._checkpoint import PretrainedFileMixin, build_zoo_model, check_keys, unwrap_state_dict
from ._dense import DenseHook
from ._family import Family
from ._official import OfficialCode, import_from_checkout
from ._pyramid import PyramidMixin

__all__ = ["FAMILY", "L2ViT", "checkpoint_filter_fn"]

logger = logging.getLogger("visionzoo")

MIN_INPUT_SIZE = 32  # one token at stride 32
LINEAR_DENOM_MIN = 100.0  # L²ViT's clamp of the linear attention's denominator


_OFFICIAL_NAMES = {"vz_l2vit_tiny": "L2ViT_Tiny", "vz_l2vit_small": "L2ViT_Small", "vz_l2vit_base": "L2ViT_Base",
                   "vz_l2vit_base_384": "L2ViT_Base_384"}


def _official_l2vit(checkout: str, name: str, img_size: int) -> nn.Module:
    """The official ``classification/models/l2vit.py`` constructor of the variant."""
    module = import_from_checkout(checkout, "classification/models/l2vit.py", "ChuanyangZheng/L2ViT")
    return getattr(module, _OFFICIAL_NAMES[name])()


FAMILY = Family(
    name="l2vit",
    contract_model="vz_l2vit_tiny",
    # two blocks per stage: every stage keeps both block kinds (local window, then linear global)
    reduced=dict(embed_dims=(16, 32, 48, 64), depths=(2, 2, 2, 2), num_heads=(1, 2, 3, 4)),
    kernels=("window_attention", "linear_attention"),
    # timm's optimizer already exempts 1-D parameters and biases; the official recipe (ConvNeXt's optimizer
    # factory) decays everything else, the (heads, 1, 1) temperatures included
    no_weight_decay_may_be_empty=True,
    det_seg_no_decay=(),  # the official det/seg recipes decay every parameter (no paramwise rule)
    smoke_configs=("mmdet/l2vit/mask-rcnn_l2vit-tiny_fpn_ms-crop-1x_coco.py",
                   "mmseg/l2vit/upernet_l2vit-tiny_160k_ade20k-512x512.py"),
    official=OfficialCode("ChuanyangZheng/L2ViT", tuple(_OFFICIAL_NAMES), _official_l2vit),
)


def _pad_hw(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad a (B, H, W, C) map at the bottom/right to multiples of ``multiple``."""
    H, W = x.shape[1:3]
    pad_h, pad_w = -H % multiple, -W % multiple
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if pad_h or pad_w else x


class Stem(nn.Module):
    """Official ``ConvStem`` ('2L'): conv3x3 s2 (C/2) -> BN -> ReLU -> conv3x3 s2 (C) -> BN, then a LayerNorm per
    token. The image is first zero-padded (bottom/right) to a multiple of 4. Also the model's entry point: it
    validates the input and returns a channels-last (B, H/4, W/4, C) map."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.in_chans = in_chans
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(dim // 2)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(dim)
        self.norm = nn.LayerNorm(dim)
        for conv in (self.conv1, self.conv2):  # see _conv_bn
            store_weight_channels_last(conv)

    def _conv_bn(self, x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
        # channels-last weights for the channels-last input (a contiguous one is reordered on every call)
        if self.training:
            weight = conv.weight.contiguous(memory_format=torch.channels_last)
            return bn(F.conv2d(x, weight, conv.bias, conv.stride, conv.padding))
        weight, bias = fold_bn(conv.weight, conv.bias, bn)  # eval: one pass instead of two
        return F.conv2d(x, weight.contiguous(memory_format=torch.channels_last), bias, conv.stride, conv.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans, MIN_INPUT_SIZE, self.conv1.weight.dtype, "L2ViT")
        pad_h, pad_w = -x.shape[2] % 4, -x.shape[3] % 4
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.act(self._conv_bn(x, self.conv1, self.bn1))
        x = self._conv_bn(x, self.conv2, self.bn2)
        return self.norm(x.permute(0, 2, 3, 1))


class Downsample(nn.Module):
    """Official ``PatchEmbed`` with patch 2: LayerNorm over the input channels, zero-pad to even sizes, then a 2x2
    stride-2 conv (non-overlapping). (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), C_out)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Conv2d(in_dim, dim, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_hw(self.norm(x), 2)
        # the 2x2 stride-2 conv as patches (one copy) times a matrix: CPU convs of this shape are slow to
        # differentiate (18 ms for the last one at 224, against ~2 ms for the two matmuls) and reorder their
        # weight on every call
        B, H, W, C = x.shape
        x = x.view(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H // 2, W // 2, 4 * C)
        weight = self.proj.weight.permute(0, 2, 3, 1).reshape(self.proj.out_channels, 4 * C)  # (kh, kw, C) order
        return linear(x, weight, self.proj.bias)


class WindowAttention(nn.Module):
    """Softmax attention inside non-overlapping windows of a (B, H, W, C) map (official ``WindowAttention``):
    fused qkv Linear laid out [q | k | v] (heads x head_dim each), scale head_dim^-0.5, no position bias.

    Maps that are not whole windows: zero tokens are appended and attended to (official), or masked
    (``masked_padding``); see the module docstring."""

    def __init__(self, dim: int, num_heads: int, window_size: int, masked_padding: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.masked_padding = masked_padding
        self.scale = self.head_dim ** -0.5
        self.qkv = Linear(dim, 3 * dim)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        if not self.masked_padding:
            x = _pad_hw(x, self.window_size)  # zero tokens, seen by the attention as the official code does
        Hp, Wp = x.shape[1:3]
        q, k, v = self.qkv(x).view(B, Hp, Wp, 3, self.num_heads, self.head_dim).unbind(3)
        x = window_attention(q, k, v, self.window_size, "block", scale=self.scale)
        if (Hp, Wp) != (H, W):
            x = x[:, :H, :W]
        return self.proj(x.reshape(B, H, W, C))


class LinearAttention(nn.Module):
    """L²ViT's linear attention over the whole map (official ``LinearAttention``): fused qkv Linear, ReLU features,
    ``(q (kᵀv) * temperature) / clamp(q . sum k, min=100)`` on the shared ``linear_attention`` kernel."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.temperature = nn.Parameter(torch.full((num_heads, 1, 1), self.head_dim ** -0.5))
        self.qkv = Linear(dim, 3 * dim)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim) views
        out = linear_attention(l2vit_features(q), l2vit_features(k), v, scale=self.temperature,
                               denom_min=LINEAR_DENOM_MIN)
        return self.proj(out.transpose(1, 2).reshape(B, H, W, C))


class LocalConcentration(nn.Module):
    """LCM, the local concentration module: depthwise 7x7 -> GELU -> BatchNorm -> depthwise 7x7 (on a
    channels-last (B, H, W, C) map)."""

    def __init__(self, dim: int, kernel_size: int = 7):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # depthwise_conv2d: the same convs with a ~10x faster CPU backward than nn.Conv2d's at 7x7
        x = depthwise_conv2d(x.permute(0, 3, 1, 2), self.conv1.weight, self.conv1.bias)
        x = self.bn(self.act(x))
        return depthwise_conv2d(x, self.conv2.weight, self.conv2.bias).permute(0, 2, 3, 1)


class LocalWindowBlock(nn.Module):
    """Official ``LWABlock``: x = cpe0(x); x += attn(norm1(x)); x = cpe1(x); x += mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, drop_path: float,
                 masked_padding: bool = False):
        super().__init__()
        self.cpe = nn.ModuleList([ConvPosEnc(dim, 3), ConvPosEnc(dim, 3)])
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, masked_padding)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe[0](x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = self.cpe[1](x)
        return residual_mlp(x, self.norm2, self.mlp, self.drop_path)


class GlobalLinearBlock(nn.Module):
    """Official ``LGABlock(enhanced=True)``: x = cpe(x); x += attn(norm1(x)); x += lcm(norm3(x));
    x += mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.cpe = nn.ModuleList([ConvPosEnc(dim, 3)])
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LinearAttention(dim, num_heads)
        self.norm3 = nn.LayerNorm(dim)
        self.local_mp = LocalConcentration(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe[0](x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.local_mp(self.norm3(x)))
        return residual_mlp(x, self.norm2, self.mlp, self.drop_path)


class L2ViTStage(nn.Module):
    """Optional downsampling (stages 2-4), then blocks alternating local window / linear global, local first."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 drop_path: Sequence[float], downsample: bool, masked_padding: bool = False):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            LocalWindowBlock(dim, num_heads, window_size, mlp_ratio, drop_path[j], masked_padding) if j % 2 == 0
            else GlobalLinearBlock(dim, num_heads, mlp_ratio, drop_path[j])
            for j in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def _per_stage(value: Union[float, int, Sequence], n: int, name: str) -> Tuple:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * n
    if len(values) != n:
        raise ValueError(f"{name} needs one value per stage ({n}), got {values}")
    return values


class L2ViT(PyramidMixin, PretrainedFileMixin, nn.Module):
    """L²ViT backbone + classifier (see the module docstring).

    Args:
        embed_dims: width of each stage.
        depths: blocks per stage (even indices local window blocks, odd indices linear global blocks).
        num_heads: attention heads per stage (the official default: width / 32).
        window_size: local attention window (7; 12 for the 384 fine-tune).
        mlp_ratio: MLP hidden width / width (one value or one per stage).
        masked_window_padding: mask the padded tokens of maps that are not whole windows instead of attending to
            them as the official code does (no effect at the training sizes).
        drop_path_rate: stochastic depth of the last block (``linspace(0, rate, total)``, the official schedule).
    """

    dense_hook = DenseHook(norm_eps=1e-5, official_norm_key="norm{i}")  # the official det/seg backbone's nn.LayerNorm

    def __init__(
            self,
            embed_dims: Sequence[int] = (96, 192, 384, 768),
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Optional[Sequence[int]] = None,
            window_size: int = 7,
            mlp_ratio: Union[float, Sequence[float]] = 4.0,
            masked_window_padding: bool = False,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        n = len(embed_dims)
        depths = _per_stage(depths, n, "depths")
        num_heads = _per_stage(num_heads if num_heads is not None else [d // 32 for d in embed_dims], n, "num_heads")
        mlp_ratio = _per_stage(mlp_ratio, n, "mlp_ratio")
        bad = [(d, h) for d, h in zip(embed_dims, num_heads) if h < 1 or d % h]
        if bad:
            raise ValueError(f"every stage width must be a positive multiple of its head count, got widths "
                             f"{tuple(embed_dims)} and heads {num_heads}")
        if not isinstance(window_size, int) or isinstance(window_size, bool) or window_size < 1:
            raise ValueError(f"window_size must be a positive int, got {window_size!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.window_size = window_size
        self.num_features = self.head_hidden_size = embed_dims[-1]

        self.stem = Stem(in_chans, embed_dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths), dtype=torch.float64, device="cpu").tolist()
        stages, self.feature_info, in_dim = [], [], embed_dims[0]
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            stage_rates, rates = rates[:depth], rates[depth:]
            stages.append(L2ViTStage(in_dim, dim, depth, num_heads[i], window_size, mlp_ratio[i], stage_rates,
                                     downsample=i > 0, masked_padding=masked_window_padding))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stages.{i}"))
            in_dim = dim
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, global_pool, drop_rate=drop_rate)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # ---- weights ------------------------------------------------------------------------------------------------

    def checkpoint_prefer_for(self, path: str) -> Sequence[str]:
        """``*-best-ema.pth``: the EMA weights (``model_ema``); ``*-best.pth``: the raw weights (``model``), which the
        official evaluation reads; anything else: ``checkpoint_prefer`` (timm's order, EMA first)."""
        name = os.path.basename(str(path))
        if "best-ema" in name:
            prefer = ("model_ema", "state_dict_ema", "model", "state_dict")
        elif "checkpoint-best" in name:
            prefer = ("model", "state_dict", "model_ema", "state_dict_ema")
        else:
            return self.checkpoint_prefer
        logger.info("%s: an official L2ViT %s file, preferring %r", path, "best-ema" if "ema" in prefer[0] else
                    "best", prefer[0])
        return prefer

    # ---- timm contract ------------------------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        if coarse:
            blocks = [(r"^stages\.(\d+)", None), (r"^norm", (99999,))]
        else:
            blocks = [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                      (r"^norm", (99999,))]
        return dict(stem=r"^stem", blocks=blocks)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The output of each stage (strides 4, 8, 16, 32); ``norm`` applies the final LayerNorm to the last
        stage's output."""
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
                out = self.norm(x) if norm and i == last else x
                intermediates.append(out if output_fmt == "NHWC" else out.permute(0, 3, 1, 2))
        if intermediates_only:
            return intermediates
        return self.norm(x).permute(0, 3, 1, 2), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last index in ``indices`` (and the final norm and head); returns the kept
        indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if max_index < len(self.feature_info) - 1:
            # the final norm and head were sized for the last stage; what remains ends at an earlier width
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.norm = nn.Identity()
            self.head = ClassifierHead(self.num_features, 0, "")
            self.num_classes, self.global_pool = 0, ""
        else:
            if prune_norm:
                self.norm = nn.Identity()
            if prune_head:
                self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final (B, C, H/32, W/32) map, after the per-token final LayerNorm."""
        return self.norm(self.stages(self.stem(x))).permute(0, 3, 1, 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _official_key(key: str) -> str:
    """One key of the official classification layout (``L2ViT`` in classification/models/l2vit.py) or of the
    official det/seg backbone, in ours."""
    parts = key.split(".")
    if key.startswith("downsample_layers.0.proj.proj."):  # the ConvStem's Sequential: conv, BN, ReLU, conv, BN
        name = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2"}[parts[4]]
        return f"stem.{name}.{'.'.join(parts[5:])}"
    if key.startswith("downsample_layers.0.norm."):
        return "stem.norm." + parts[-1]
    if key.startswith("downsample_layers."):  # downsample_layers.{i}.{norm,proj}.*
        return f"stages.{parts[1]}.downsample.{'.'.join(parts[2:])}"
    if key.startswith("stages.") and len(parts) > 2 and parts[2].isdigit():  # stages.{s}.{j}.* (no "blocks")
        return f"stages.{parts[1]}.blocks.{'.'.join(parts[2:])}"
    if key.startswith("head."):
        return "head.fc." + parts[-1]
    return key


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: L2ViT) -> Dict[str, torch.Tensor]:
    """Map a checkpoint onto ``model``: the official L²ViT layout (``downsample_layers.*``, ``stages.{s}.{j}.*``,
    ``head.*``), or ours (safetensors, Lightning, EMA). Keys that do not fit raise a ValueError naming them."""
    state = unwrap_state_dict(state_dict)
    if any(k.startswith("downsample_layers.") for k in state):
        if any(k.startswith("last_proj") for k in state):
            raise ValueError("this L2ViT checkpoint has a last_proj layer (last_proj=True), which no released "
                             "L2ViT model uses")
        state = {_official_key(k): v for k, v in state.items()}
    check_keys(state, model, f"L2ViT (widths {[i['num_chs'] for i in model.feature_info]})",
               classifier="head.fc", first_conv="stem.conv1")
    return state


def _create_l2vit(variant: str, pretrained: bool = False, **kwargs) -> L2ViT:
    return build_zoo_model(L2ViT, variant, pretrained,
                           feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)), **kwargs)


_RELEASE = "https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/"


def _cfg(file: str, size: int = 224, **kwargs) -> Dict[str, Any]:
    cfg = dict(
        url=_RELEASE + file, num_classes=1000, input_size=(3, size, size), pool_size=(size // 32,) * 2,
        min_input_size=(3, MIN_INPUT_SIZE, MIN_INPUT_SIZE), fixed_input_size=False, interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv="stem.conv1", classifier="head.fc",
        license="mit", custom_load=True,  # files and URLs load through PretrainedFileMixin (safe official reader)
        paper_name="The Linear Attention Resurrection in Vision Transformer", paper_ids="arXiv:2501.16182",
        origin_url="https://github.com/ChuanyangZheng/L2ViT",
    )
    if size == 224:  # classification/datasets.py: resize to 224 / 0.875, centre crop, bicubic
        cfg.update(crop_pct=0.875, crop_mode="center")
    else:  # >= 384: resize straight to the size (squash), no crop
        cfg.update(crop_pct=1.0, crop_mode="squash")
    cfg.update(kwargs)
    return cfg


default_cfgs = generate_default_cfgs({
    "vz_l2vit_tiny.in1k": _cfg("L2ViT-Tiny-checkpoint-best-ema.pth"),
    "vz_l2vit_small.in1k": _cfg("L2ViT-Small-checkpoint-best-ema.pth"),
    "vz_l2vit_base.in1k": _cfg("L2ViT-Base-checkpoint-best-ema.pth"),
    "vz_l2vit_base.in22k_ft_in1k": _cfg("L2ViT-Base-22k21k-finetune-224-checkpoint-best.pth"),
    # ImageNet-22k, 21841 classes in the authors' own class order (their custom_map22kto1k.txt maps it to 1k;
    # it differs from ConvNeXt's 22k ordering)
    "vz_l2vit_base.in22k": _cfg("L2ViT-Base-22k-pretrain-checkpoint-best.pth", num_classes=21841),
    "vz_l2vit_base_384.in22k_ft_in1k": _cfg("L2ViT-Base-22k21k-finetune-384-checkpoint-best.pth", 384),
})

# classification/models/l2vit.py: L2ViT_Tiny / _Small / _Base / _Base_384
_ARCHS = dict(
    tiny=dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    small=dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    base=dict(embed_dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
)


def _l2vit(variant: str, arch: str, pretrained: bool, window_size: int = 7, **kwargs) -> L2ViT:
    return _create_l2vit(variant, pretrained, **dict(_ARCHS[arch], window_size=window_size, **kwargs))


@register_model
def vz_l2vit_tiny(pretrained: bool = False, **kwargs) -> L2ViT:
    return _l2vit("vz_l2vit_tiny", "tiny", pretrained, **kwargs)


@register_model
def vz_l2vit_small(pretrained: bool = False, **kwargs) -> L2ViT:
    return _l2vit("vz_l2vit_small", "small", pretrained, **kwargs)


@register_model
def vz_l2vit_base(pretrained: bool = False, **kwargs) -> L2ViT:
    return _l2vit("vz_l2vit_base", "base", pretrained, **kwargs)


@register_model
def vz_l2vit_base_384(pretrained: bool = False, **kwargs) -> L2ViT:
    return _l2vit("vz_l2vit_base_384", "base", pretrained, **dict(dict(window_size=12), **kwargs))
