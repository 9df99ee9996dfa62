"""BiFormer: Vision Transformer with Bi-Level Routing Attention (Zhu et al., CVPR 2023, arXiv:2303.08810).

Architecture as rayleizhu/BiFormer (``models/biformer.py``, ``models/biformer_stl.py`` on the legacy
``ops/bra_legacy.py``, which every released checkpoint uses). Details the released weights depend on, all
reproduced here:

* Stem: conv3x3 s2 (C/2) -> BN -> GELU -> conv3x3 s2 -> BN; downsampling: conv3x3 s2 -> BN (STL: a 4x4 s4 patch
  conv -> BN stem and BN -> conv2x2 s2 downsampling, as Swin-T's layout).
* Block: ``x + dwconv3x3(x)`` (conditional position encoding; not in STL), then a pre-norm transformer layer with
  LayerNorm eps 1e-6, attention, LayerNorm, MLP (Linear, GELU, Linear; ratio 3, STL 4).
* Stages 1-3, bi-level routing attention (``visionzoo.layers.BiLevelRoutingAttention`` on the shared
  ``routing_attention`` kernel): fused qkv with bias laid out [q | k | v], ``n_win`` x ``n_win`` regions, top-k
  routing (topk 1, 4, 16) on detached region means, **scale qk_dim ** -0.5 (the whole stage width, not the head
  dim)** in both the routing and the attention, LePE = depthwise 5x5 conv **on V** added before the output
  projection. Heads of 32 channels.
* Stage 4 (official ``topk=-2``): plain full attention with LePE, ``AttentionLePE`` as the official code builds
  it: **8 heads whatever the width** (the class default, head dim 64 for T/S, 96 for B/STL), scale head_dim ** -0.5,
  **no qkv bias**, and LePE on the attention **input** (the normed block input), not on V.
* Final norm: **BatchNorm2d** on the stage-4 map, then global average pooling and the Linear classifier.
* Official checkpoints hold their weights under ``model`` (read first here: ``checkpoint_prefer``).

Any input size (the official code asserts that each stage-1..3 map is a multiple of ``n_win``: multiples of
112 px at n_win 7): the region *count* ``n_win`` stays as constructed and the region size follows the input,
``ceil(side / n_win)``. By default the maps are not padded: the routing kernel masks the positions past the map
(they are not tokens: no key, no query, not in the region means; regions without a real position are never
routed to and topk is clamped to the regions that have one). ``auto_pad=True`` reproduces the official
``auto_pad`` of the detection / segmentation models instead: zero padding of x before the qkv projection, so
that padded positions carry the projection's bias and take part. Where the maps are whole regions both are
exactly the official model. Minimum input 32 x 32 (one position at stride 32); at n_win 7 maps smaller than
7 rows (inputs below 112 px at stage 3, 56 px at stage 2 ...) simply have fewer non-empty regions.

``n_win`` per size: the official settings are 7 at 224 (classification: 8x8, 4x4, 2x2 positions per region in
stages 1-3), 8 at 512x512 crops (ADE20K) and 16 at ~800x1333 (COCO); :func:`n_win_for_size` gives
``max(7, round(sqrt(H * W) / 64))``, which yields those three (about 16x16 stage-1 positions per region above
224 px). Pass it as ``n_win`` (also through ``VisionZooBackbone(..., n_win=...)``) or change it later with
``model.set_n_win``; no parameter depends on it.

Out of scope: ``biformer_stl_nchw`` (the refactored ``nchwBRA``: other key names, 1x1-conv MLPs, and padding
numerics that deliberately differ from the legacy BRA on non-divisible inputs).
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from visionzoo.kernels import window_attention
from visionzoo.layers import BiLevelRoutingAttention, ClassifierHead, Linear, Mlp, check_image_input, fold_bn
from visionzoo.layers.routing import region_pair

from ._checkpoint import WRAPPER_KEYS, PretrainedFileMixin, build_zoo_model, check_keys, unwrap_state_dict
from ._dense import DenseHook
from ._family import Family
from ._official import OfficialCode, import_from_checkout, stub_missing
from ._pyramid import PyramidMixin

__all__ = ["FAMILY", "BiFormer", "checkpoint_filter_fn", "n_win_for_size"]

MIN_INPUT_SIZE = 32  # one position at stride 32
FULL_ATTENTION = -2  # the official topk value of the last stage: full attention with LePE (AttentionLePE)
LAYOUTS = ("biformer", "stl")


def _official_biformer(checkout: str, name: str, img_size: int) -> nn.Module:
    """The official ``models/biformer.py`` (legacy BRA; a module of the checkout's ``models`` package), the
    constructor named as the variant; padded to whole regions where the size is not a multiple of 112."""
    stub_missing("fairscale.nn.checkpoint", checkpoint_wrapper=lambda module, *args, **kwargs: module)  # unused here
    module = import_from_checkout(checkout, "models/biformer.py", "rayleizhu/BiFormer", package="models")
    return getattr(module, name[len("vz_"):])(auto_pad=img_size % 112 != 0)


FAMILY = Family(
    name="biformer",
    contract_model="vz_biformer_tiny",
    reduced=dict(depths=(1, 1, 1, 1), embed_dims=(32, 64, 96, 128)),
    kernels=("routing_attention", "window_attention"),
    no_weight_decay_may_be_empty=True,  # the official no_weight_decay names no parameter (1-D ones are exempt anyway)
    smoke_configs=("mmdet/biformer/mask-rcnn_biformer-small_fpn_1x_coco.py",
                   "mmseg/biformer/upernet_biformer-small_160k_ade20k-512x512.py"),
    official=OfficialCode("rayleizhu/BiFormer", ("vz_biformer_tiny", "vz_biformer_small", "vz_biformer_base"),
                          _official_biformer, zoo_kwargs=lambda img_size: dict(auto_pad=img_size % 112 != 0)),
)


def n_win_for_size(height: int, width: int) -> int:
    """Regions per side for an input of ``height`` x ``width`` pixels: ``max(7, round(sqrt(H * W) / 64))``.

    It gives the official choices: 7 at 224 (classification), 8 at 512x512 (ADE20K crops), 16 at 800x1333
    (COCO), i.e. about 16x16 positions per stage-1 region above 224 px, never fewer than 7 regions per side."""
    return max(7, round(math.sqrt(height * width) / 64))


class Stem(nn.Module):
    """conv3x3 s2 (C/2) -> BN -> GELU -> conv3x3 s2 (C) -> BN. Also the model's entry point: validates the input
    and switches to channels_last memory, which every later layer keeps (free NHWC views for the blocks)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.in_chans = in_chans
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1)
        self.norm1 = nn.BatchNorm2d(dim // 2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1)
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans, MIN_INPUT_SIZE, self.conv1.weight.dtype, "BiFormer")
        x = x.contiguous(memory_format=torch.channels_last)
        if self.training:
            return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        # eval: the BatchNorms folded into the convs (exact: affine maps after convs)
        x = self.act(_conv_bn(x, self.conv1, self.norm1))
        return _conv_bn(x, self.conv2, self.norm2)


class PatchStem(nn.Module):
    """BiFormer-STL: a 4x4 stride-4 patch conv -> BN (Swin-T's layout)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.in_chans = in_chans
        self.conv = nn.Conv2d(in_chans, dim, 4, stride=4)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans, MIN_INPUT_SIZE, self.conv.weight.dtype, "BiFormer")
        x = x.contiguous(memory_format=torch.channels_last)
        return self.norm(self.conv(x)) if self.training else _conv_bn(x, self.conv, self.norm)


def _conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    weight, bias = fold_bn(conv.weight, conv.bias, bn)
    return nn.functional.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class Downsample(nn.Module):
    """conv3x3 s2 -> BN (BiFormer); BN -> conv2x2 s2 (STL)."""

    def __init__(self, in_dim: int, out_dim: int, layout: str):
        super().__init__()
        self.layout = layout
        if layout == "stl":
            self.norm = nn.BatchNorm2d(in_dim)
            self.conv = nn.Conv2d(in_dim, out_dim, 2, stride=2)
        else:
            self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)
            self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "stl":
            return self.conv(self.norm(x))
        return self.norm(self.conv(x)) if self.training else _conv_bn(x, self.conv, self.norm)


class AttentionLePE(nn.Module):
    """The official last stage: full multi-head attention (no qkv bias, scale head_dim ** -0.5) plus LePE, a
    depthwise conv of the attention's *input*, before the output projection. On (B, H, W, C) maps; the attention
    runs on the shared ``window_attention`` kernel with one window covering the map."""

    def __init__(self, dim: int, num_heads: int, side_dwconv: int = 5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"the last stage's width {dim} is not divisible by its {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = Linear(dim, 3 * dim, bias=False)
        self.proj = Linear(dim, dim)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).view(B, H, W, 3, self.num_heads, C // self.num_heads).unbind(3)
        out = window_attention(q, k, v, (H, W), "block", scale=self.scale).reshape(B, H, W, C)
        out = out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj(out)


class Block(nn.Module):
    """[x + dwconv3x3(x)] -> x + attn(LN(x)) -> x + MLP(LN(x)), on NCHW maps kept in channels_last memory."""

    def __init__(self, dim: int, qk_dim: int, head_dim: int, topk: int, n_win: Tuple[int, int], mlp_ratio: float,
                 side_dwconv: int, last_stage_heads: int, cpe: bool, auto_pad: bool, drop_path: float):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if cpe else None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if topk == FULL_ATTENTION:
            self.attn = AttentionLePE(dim, last_stage_heads, side_dwconv)
        else:
            self.attn = BiLevelRoutingAttention(dim, qk_dim // head_dim, n_win, topk, qk_dim=qk_dim,
                                                side_dwconv=side_dwconv, auto_pad=auto_pad, data_format="nhwc")
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            x = x + self.pos_embed(x)
        x = x.permute(0, 2, 3, 1)  # NHWC: a free view of channels_last memory
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)


class BiFormerStage(nn.Module):
    def __init__(self, in_dim: int, dim: int, depth: int, layout: str, drop_path: Sequence[float], **block_args):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample(in_dim, dim, layout) if in_dim else nn.Identity()
        self.blocks = nn.Sequential(*[Block(dim, drop_path=drop_path[i], **block_args) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def _per_stage(value, name: str, n: int = 4) -> List:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} must be one value or {n} (one per stage), got {value!r}")
    return values


class BiFormerDenseHook(DenseHook):
    """The official det/seg backbone (``BiFormer_mm``): the four stage outputs, each through a timm LayerNorm2d
    (eps 1e-6) saved as ``extra_norms.{i}``; classifier and final BatchNorm dropped. The official configs build it
    with ``n_win=16`` (COCO, ~800x1333) or ``n_win=8`` (ADE20K, 512 crops) and ``auto_pad=True``: pass those as
    ``VisionZooBackbone`` arguments (they reach the model; see ``n_win_for_size``)."""

    def __init__(self):
        super().__init__(norm_eps=1e-6, official_norm_key="extra_norms.{i}")


class BiFormer(PyramidMixin, PretrainedFileMixin, nn.Module):
    """BiFormer backbone + classifier (see the module docstring).

    Args:
        depths: blocks per stage.
        embed_dims: width of each stage.
        qk_dims: channels of q and k in the routing-attention stages (default: the stage widths, as every
            released model).
        head_dim: channels per head of the routing-attention stages (official 32).
        mlp_ratios: MLP hidden width / stage width (one value or one per stage).
        n_win: regions per side (int, (nh, nw), or one of those per stage); the region size follows the input.
        topks: key regions per query region in each stage; ``-2`` = full attention with LePE (official last stage).
            Larger than the number of regions is clamped (see ``BiLevelRoutingAttention``).
        side_dwconv: LePE kernel size.
        last_stage_heads: heads of the full-attention stage (the official ``AttentionLePE`` default 8).
        auto_pad: the official detection / segmentation padding (zero-pad x before qkv) instead of masking.
        layout: ``"biformer"`` (T/S/B) or ``"stl"`` (Swin-T layout: patch stem, BN-conv downsampling, no CPE).
        drop_path_rate: stochastic depth of the last block; linearly less before it (official schedule).
    """

    checkpoint_prefer = ("model",) + tuple(k for k in WRAPPER_KEYS if k != "model")  # official eval reads `model`

    dense_hook = BiFormerDenseHook()

    def __init__(
            self,
            depths: Sequence[int] = (4, 4, 18, 4),
            embed_dims: Sequence[int] = (64, 128, 256, 512),
            qk_dims: Optional[Sequence[int]] = None,
            head_dim: int = 32,
            mlp_ratios: Union[float, Sequence[float]] = 3,
            n_win: Union[int, Sequence] = 7,
            topks: Sequence[int] = (1, 4, 16, FULL_ATTENTION),
            side_dwconv: int = 5,
            last_stage_heads: int = 8,
            auto_pad: bool = False,
            layout: str = "biformer",
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        depths, embed_dims = list(depths), list(embed_dims)
        n = len(depths)
        if len(embed_dims) != n or n != 4:
            raise ValueError(f"depths and embed_dims must give 4 stages, got {tuple(depths)} and {tuple(embed_dims)}")
        qk_dims = _per_stage(qk_dims if qk_dims is not None else embed_dims, "qk_dims")
        mlp_ratios = _per_stage(mlp_ratios, "mlp_ratios")
        topks = _per_stage(topks, "topks")
        n_wins = [region_pair(w) for w in (n_win if _is_per_stage(n_win) else [n_win] * 4)]
        for i, (topk, dim, qk_dim) in enumerate(zip(topks, embed_dims, qk_dims)):
            if topk == FULL_ATTENTION:
                continue
            if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
                raise ValueError(f"topks[{i}] must be a positive int (routing attention, clamped to the number of "
                                 f"regions) or {FULL_ATTENTION} (full attention with LePE), got {topk!r}")
            if qk_dim % head_dim or dim % (qk_dim // head_dim):
                raise ValueError(f"stage {i}: qk_dim {qk_dim} must be a multiple of head_dim {head_dim}, and the "
                                 f"width {dim} divisible by its {qk_dim // head_dim} heads")
        self.layout = layout
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.auto_pad = auto_pad
        self.num_features = self.head_hidden_size = embed_dims[-1]

        self.stem = PatchStem(in_chans, embed_dims[0]) if layout == "stl" else Stem(in_chans, embed_dims[0])
        total = sum(depths)  # the official schedule: linspace(0, rate, blocks), the last block gets the full rate
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.feature_info = []
        stages = []
        for i in range(4):
            stage_rates, rates = rates[:depths[i]], rates[depths[i]:]
            stages.append(BiFormerStage(
                embed_dims[i - 1] if i else 0, embed_dims[i], depths[i], layout, stage_rates,
                qk_dim=qk_dims[i], head_dim=head_dim, topk=topks[i], n_win=n_wins[i], mlp_ratio=mlp_ratios[i],
                side_dwconv=side_dwconv, last_stage_heads=last_stage_heads, cpe=layout != "stl",
                auto_pad=auto_pad))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=4 * 2 ** i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(embed_dims[-1])
        self.head = ClassifierHead(self.num_features, num_classes, global_pool, drop_rate=drop_rate)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:  # as the official code: Linear trunc-normal 0.02, zero bias
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def set_n_win(self, n_win: Union[int, Sequence]) -> None:
        """Change the regions per side (int, pair, or one per stage) of every routing-attention layer."""
        n_wins = list(n_win) if _is_per_stage(n_win) else [n_win] * 4
        for stage, w in zip(self.stages, n_wins):
            for block in stage.blocks:
                if isinstance(block.attn, BiLevelRoutingAttention):
                    block.attn.set_n_win(w)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        # the official list ({'pos_embed', 'cls_token'}) names no parameter; timm exempts 1-D parameters anyway
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        if coarse:
            return dict(stem=r"^stem", blocks=[(r"^stages\.(\d+)", None), (r"^norm", (99999,))])
        return dict(stem=r"^stem", blocks=[(r"^stages\.(\d+)\.downsample", (0,)),
                                           (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                                           (r"^norm", (99999,))])

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The output of each stage (indices 0-3) and the final features (after the final BatchNorm);
        ``norm=True`` applies the final BatchNorm to the last stage's intermediate too."""
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
                intermediates.append(self.norm(x) if norm and i == last else x)
        if output_fmt == "NHWC":
            intermediates = [t.permute(0, 2, 3, 1) for t in intermediates]
        if intermediates_only:
            return intermediates
        return (self.norm(x) if len(stages) == len(self.stages) else x), intermediates

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
            # the final BatchNorm and the head were sized for the last stage
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.norm = nn.Identity()
            self.head = ClassifierHead(self.num_features, 0, "")
        else:
            if prune_norm:
                self.norm = nn.Identity()
            if prune_head:
                self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _is_per_stage(n_win) -> bool:
    return isinstance(n_win, (list, tuple)) and len(n_win) == 4


# ---------------------------------------------------------------------------------------------------- checkpoints

_BLOCK_RENAMES = (  # official block key -> ours (both layouts)
    ("attn.qkv.qkv.", "attn.qkv."),  # BRA's QKVLinear wrapper
    ("attn.wo.", "attn.proj."),
)


def _official_to_ours(key: str, layout: str) -> str:
    """One official key (rayleizhu/BiFormer legacy models) in our names; keys already in our layout pass."""
    m = re.match(r"^downsample_layers\.(\d+)\.(\d+)\.(.+)$", key)
    if m:
        stage, idx, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if stage == 0:
            names = {0: "conv", 1: "norm"} if layout == "stl" else {0: "conv1", 1: "norm1", 3: "conv2", 4: "norm2"}
            return f"stem.{names.get(idx, idx)}.{rest}"
        names = {0: "norm", 1: "conv"} if layout == "stl" else {0: "conv", 1: "norm"}
        return f"stages.{stage}.downsample.{names.get(idx, idx)}.{rest}"
    m = re.match(r"^stages\.(\d+)\.(?:blocks\.)?(\d+)\.(.+)$", key)
    if m:
        rest = m.group(3)
        for old, new in _BLOCK_RENAMES:
            if rest.startswith(old):
                rest = new + rest[len(old):]
        fc1, fc2 = ("mlp.0.", "mlp.2.") if layout == "stl" else ("mlp.0.", "mlp.3.")
        if rest.startswith(fc1):
            rest = "mlp.fc1." + rest[len(fc1):]
        elif rest.startswith(fc2):
            rest = "mlp.fc2." + rest[len(fc2):]
        return f"stages.{m.group(1)}.blocks.{m.group(2)}.{rest}"
    m = re.match(r"^head\.(weight|bias)$", key)
    if m:
        return f"head.fc.{m.group(1)}"
    return key


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: BiFormer) -> Dict[str, torch.Tensor]:
    """Map a checkpoint onto ``model``: the official BiFormer / BiFormer-STL layout (``{'model': state_dict}``,
    ``downsample_layers.*``, ``stages.{i}.{j}.*``, ``attn.qkv.qkv``/``attn.wo``, ``mlp.0``/``mlp.3``, ``head``),
    the backbone keys of the official det/seg checkpoints (through the det/seg hook), our own safetensors, or a
    Lightning/DDP/EMA checkpoint. Keys that do not fit raise a ValueError naming them."""
    state = unwrap_state_dict(state_dict, BiFormer.checkpoint_prefer)
    if any(".attn.qkv_linear." in k or ".attn.output_linear." in k for k in state):
        raise ValueError("this is a BiFormer-STL-nchw checkpoint (nchwBRA: attn.qkv_linear / attn.output_linear, "
                         "1x1-conv MLPs); only the legacy-BRA models (biformer_tiny/small/base/stl) are supported")
    out = {_official_to_ours(k, model.layout): v for k, v in state.items()}
    first_conv = "stem.conv" if model.layout == "stl" else "stem.conv1"
    check_keys(out, model, f"BiFormer ({model.layout} layout)", classifier="head.fc", first_conv=first_conv)
    return out


# ---------------------------------------------------------------------------------------------------- registry

def _create_biformer(variant: str, pretrained: bool = False, **kwargs) -> BiFormer:
    if pretrained:
        kwargs = _official_file(variant, kwargs)
    return build_zoo_model(BiFormer, variant, pretrained,
                           feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)), **kwargs)


_ONEDRIVE_SHARES = "https://api.onedrive.com/v1.0/shares/"
_ONEDRIVE = _ONEDRIVE_SHARES + "{}/root/content"


def _official_file(variant: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """timm caches a URL's download under the URL's last path segment, ``content`` for every official OneDrive
    link (so the four models would share one cache file): download the official file under the name the official
    code caches it as (``biformer_small_in1k.pth`` ...) and hand timm that file."""
    from timm.models import _hub, resolve_pretrained_cfg

    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"), pretrained_cfg_overlay=overlay)
    if cfg.file or cfg.state_dict or not isinstance(cfg.url, str) or not cfg.url.startswith(_ONEDRIVE_SHARES):
        return kwargs
    overlay["file"] = _hub.download_cached_file((cfg.url, f"{variant[len('vz_'):]}_in1k.pth"), check_hash=False,
                                                progress=True)
    return dict(kwargs, pretrained_cfg_overlay=overlay)


def _cfg(share: str, first_conv: str = "stem.conv1", **kwargs) -> Dict[str, Any]:
    """The official OneDrive release (the README's API share links; downloaded by ``_official_file``)."""
    cfg = dict(
        url=_ONEDRIVE.format(share),
        num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), min_input_size=(3, MIN_INPUT_SIZE, MIN_INPUT_SIZE),
        fixed_input_size=False, crop_pct=0.875, crop_mode="center", interpolation="bicubic",  # DeiT eval: 256 -> 224
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv=first_conv, classifier="head.fc",
        license="mit", custom_load=True,
        paper_name="BiFormer: Vision Transformer with Bi-Level Routing Attention", paper_ids="arXiv:2303.08810",
        origin_url="https://github.com/rayleizhu/BiFormer",
        notes=("official ImageNet-1k weights (OneDrive share links, which have broken repeatedly: BiFormer issues "
               "#14, #15, #53); when the download fails, fetch the file in a browser from the official README and "
               "pass pretrained_cfg_overlay=dict(file=path)",),
    )
    cfg.update(kwargs)
    return cfg


default_cfgs = generate_default_cfgs({
    "vz_biformer_tiny.in1k": _cfg("s!AkBbczdRlZvChHEOoGkgwgQzEDlM"),
    "vz_biformer_small.in1k": _cfg("s!AkBbczdRlZvChHDyM-x9KWRBZ832"),
    "vz_biformer_base.in1k": _cfg("s!AkBbczdRlZvChHI_XPhoadjaNxtO"),
    "vz_biformer_stl.in1k": _cfg("s!AkBbczdRlZvChSf-m7ujkvx9lIQ1", first_conv="stem.conv"),
})

# official factories (models/biformer.py, models/biformer_stl.py): head_dim 32, topks (1, 4, 16, -2), n_win 7,
# LePE 5x5, qk_dims = widths
_ARCHS = dict(
    tiny=dict(depths=(2, 2, 8, 2), embed_dims=(64, 128, 256, 512), mlp_ratios=3),
    small=dict(depths=(4, 4, 18, 4), embed_dims=(64, 128, 256, 512), mlp_ratios=3),
    base=dict(depths=(4, 4, 18, 4), embed_dims=(96, 192, 384, 768), mlp_ratios=3),
    stl=dict(depths=(2, 2, 6, 2), embed_dims=(96, 192, 384, 768), mlp_ratios=4, layout="stl"),
)


def _biformer(arch: str, pretrained: bool, **kwargs) -> BiFormer:
    return _create_biformer(f"vz_biformer_{arch}", pretrained, **dict(_ARCHS[arch], **kwargs))


@register_model
def vz_biformer_tiny(pretrained: bool = False, **kwargs) -> BiFormer:
    return _biformer("tiny", pretrained, **kwargs)


@register_model
def vz_biformer_small(pretrained: bool = False, **kwargs) -> BiFormer:
    return _biformer("small", pretrained, **kwargs)


@register_model
def vz_biformer_base(pretrained: bool = False, **kwargs) -> BiFormer:
    return _biformer("base", pretrained, **kwargs)


@register_model
def vz_biformer_stl(pretrained: bool = False, **kwargs) -> BiFormer:
    return _biformer("stl", pretrained, **kwargs)
