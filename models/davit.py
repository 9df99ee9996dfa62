"""DaViT: Dual Attention Vision Transformers (Ding et al., ECCV 2022, arXiv:2204.03645), and the DaViT image
towers of Florence-2 (Xiao et al., CVPR 2024, arXiv:2311.06242).

Architecture as dingmyu/davit (its vendored ``timm/models/davit.py`` and mmdet/mmseg backbones) and timm's
``davit.py``, which converted the official weights (``timm/davit_*.msft_in1k``) and Florence-2's towers.
Details the weights depend on, all reproduced here:

* Stem: 7x7 conv, stride 4, padding 3, then LayerNorm. The official code first pads the input right/bottom to a
  multiple of 4; those zeros are exactly the conv's own zero padding (output ``ceil(H / 4)`` either way), so
  nothing is padded here.
* Downsampling (stages 2-4): LayerNorm on the *input* width, then a 2x2 stride-2 conv (3x3 stride 2 padding 1 in
  the Florence-2 towers, ``down_kernel_size=3``). A 2x2 conv on an odd map first pads the normalised map with
  zeros at the right/bottom (official).
* Every "depth" unit is a spatial block then a channel block; each has its own MLP, so DaViT-T has 12
  transformer sub-blocks. Pre-norm LayerNorms with eps 1e-5, qkv bias, MLP ratio 4, exact (erf) GELU, no layer
  scale, no relative position bias.
* ConvPosEnc before the attention (``cpe1``, official ``cpe.0``) and before the MLP (``cpe2``, ``cpe.1``): a
  residual 3x3 depthwise conv without activation (``visionzoo.layers.ConvPosEnc``).
* Spatial block: window attention, window 7 (12 in DaViT-L and the Florence-2 towers), scale head_dim ** -0.5, no
  shift, no mask. The official code zero-pads the *normalised* map right/bottom to whole windows before the qkv
  projection, and the padded tokens take part as keys (their k and v are the qkv biases); then it crops. That is
  the default here (``attn_pad="zeros"``): the map is padded before ``qkv`` and ``visionzoo.kernels.window_attention``
  runs on the padded map, where nothing is masked. ``attn_pad="mask"`` instead leaves the map unpadded and lets
  the kernel mask the padded keys (no padding value reaches a real token): cleaner for inputs that are not whole
  windows, but not what the weights saw.
* Channel block: DaViT's channel (group) attention, ``visionzoo.kernels.channel_attention``. Version 1 (DaViT):
  ``A = softmax(k^T v * C_g ** -0.5)`` per group, applied to q. Version 2 (Florence-2 towers,
  ``channel_attn_v2=True``, timm's ``ChannelAttentionV2`` with ``dynamic_scale``): ``softmax(q^T k * N ** -0.5)``
  applied to v. Groups are the attention heads.
* Head: global average pool -> LayerNorm (official ``norms``) -> Linear (``head``). The Florence-2 towers were
  released without the norm; loading their weights sets it to the identity (weight 1, bias 0), as timm's
  non-strict load leaves it.
* Stochastic depth: the official schedule, a linspace from 0 over the 2 x sum(depths) sub-blocks (each spatial and
  each channel block its own rate). timm uses one rate per depth unit; this only matters for training.

Beyond the official code: channels-last (B, H, W, C) maps end to end (the convolutions see free NCHW views, no
token <-> image transposes), the CPE residual folded into its convolution, the masked-padding option, and the
timm contract (features_only, forward_intermediates, grad checkpointing, any input of at least 32x32, non-square
included). Parameter counts equal the official models' (timm's for the variants only timm defines).

Weights: timm's conversions (``timm/davit_{tiny,small,base}.msft_in1k``) use this module's parameter names. The
official layout (``patch_embeds``, ``main_blocks``, ``cpe.N``, ``norms``, ``head``; det/seg backbones add
``norm0..3``, taken by the det/seg hook) and Florence-2's ``vision_tower`` layout are mapped by
``checkpoint_filter_fn``.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from visionzoo.kernels import channel_attention, choose_backend, window_attention
from visionzoo.layers import ClassifierHead, ConvPosEnc, Linear, Mlp, check_image_input, residual_mlp

from ._checkpoint import PretrainedFileMixin, build_zoo_model, check_keys, unwrap_state_dict
from ._dense import DenseHook
from ._family import Family
from ._pyramid import PyramidMixin

__all__ = ["FAMILY", "DaViT", "checkpoint_filter_fn"]

MIN_INPUT_SIZE = 32  # one token at stride 32 (the official code pads anything smaller up to it)
ATTN_PAD_MODES = ("zeros", "mask")
# a stage's map per group of images (DaViTStage.images_per_tile); smaller groups keep their temporaries (4x the
# map in the MLP) closer to the caches: eval 8% faster than with 8 MiB (DaViT-T, 224, batch 8, 1 thread, 2026-12-07)
STAGE_TILE_BYTES = 2 << 20

FAMILY = Family(
    name="davit",
    contract_model="vz_davit_tiny",
    reduced=dict(embed_dims=(32, 64, 96, 128), depths=(1, 1, 1, 1), num_heads=(2, 2, 3, 4)),
    kernels=("window_attention", "channel_attention"),
    headless=("vz_davit_base_fl", "vz_davit_huge_fl"),
    no_weight_decay_may_be_empty=True,  # no position tables, no layer scale: every parameter decays
    det_seg_no_decay=(),  # the official det/seg recipes decay every parameter (no paramwise rule)
    smoke_configs=("mmdet/davit/mask-rcnn_davit-tiny_fpn_ms-crop-1x_coco.py",
                   "mmseg/davit/upernet_davit-tiny_160k_ade20k-512x512.py"),
)

LayerNorm = partial(nn.LayerNorm, eps=1e-5)


def _check_groups(dim: int, groups: int, what: str) -> None:
    if groups <= 0 or dim % groups:
        divisors = [d for d in range(1, dim + 1) if dim % d == 0]
        raise ValueError(f"DaViT: {what}={groups} does not divide the width {dim}: each head/group needs "
                         f"{dim} / {groups} channels; allowed values for width {dim}: {divisors}")


class Stem(nn.Module):
    """7x7 stride-4 conv (padding 3) -> LayerNorm; NCHW image in, channels-last NCHW map out.

    Also the model's entry point: validates the input and switches to channels-last memory, which every later
    layer keeps (the blocks work on free (B, H, W, C) views)."""

    def __init__(self, in_chans: int, out_chs: int):
        super().__init__()
        self.in_chans = in_chans
        self.conv = nn.Conv2d(in_chans, out_chs, 7, stride=4, padding=3)
        self.norm = LayerNorm(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans, MIN_INPUT_SIZE, self.conv.weight.dtype, "DaViT")
        x = self.conv(x.contiguous(memory_format=torch.channels_last))
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Downsample(nn.Module):
    """LayerNorm on the input width -> stride-2 conv (kernel 2, or 3 with padding 1); channels-last NCHW maps."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 2):
        super().__init__()
        if kernel_size not in (2, 3):
            raise ValueError(f"DaViT: down_kernel_size must be 2 (DaViT) or 3 (Florence-2), got {kernel_size}")
        self.norm = LayerNorm(in_chs)
        self.even_k = kernel_size == 2
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=2, padding=0 if self.even_k else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.permute(0, 2, 3, 1))  # (B, H, W, C)
        H, W = x.shape[1:3]
        if self.even_k and (H % 2 or W % 2):  # official: zeros after the norm, right/bottom
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        return self.conv(x.permute(0, 3, 1, 2))


class WindowAttention(nn.Module):
    """Multi-head attention inside non-overlapping windows of a (B, H, W, C) map (``qkv`` -> kernel -> ``proj``).

    ``pad="zeros"`` (official): the map is zero-padded right/bottom to whole windows before ``qkv``, the padded
    tokens are keys like any other (k, v = the qkv bias), and the output is cropped. ``pad="mask"``: the kernel
    pads and masks the padded keys instead."""

    def __init__(self, dim: int, num_heads: int, window: Tuple[int, int], qkv_bias: bool = True,
                 pad: str = "zeros"):
        super().__init__()
        _check_groups(dim, num_heads, "num_heads")
        if pad not in ATTN_PAD_MODES:
            raise ValueError(f"DaViT: attn_pad must be one of {ATTN_PAD_MODES}, got {pad!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window = tuple(window)
        self.pad = pad
        self.scale = self.head_dim ** -0.5
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        if self.pad == "mask":  # the kernel pads and masks: it needs the whole map
            q, k, v = self.qkv(x).view(B, H, W, 3, self.num_heads, self.head_dim).unbind(3)
            x = window_attention(q, k, v, self.window, "block", scale=self.scale).reshape(B, H, W, C)
            return self.proj(x)
        wh, ww = self.window
        pad_b, pad_r = -H % wh, -W % ww
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        nh, nw = (H + pad_b) // wh, (W + pad_r) // ww
        # Windows first (as the official code): one copy of the C-wide map, after which the qkv output is already
        # in window order and the kernel reads each window's q, k, v in place (one window per "image", nothing
        # masked: SDPA on CPU, which saves no (N, N) probabilities for backward); proj runs in window order too,
        # and one copy puts its output back. Partitioning q, k, v instead would copy 3C channels and keep them.
        x = x.view(B, nh, wh, nw, ww, C).transpose(2, 3).reshape(B * nh * nw, wh, ww, C)
        q, k, v = self.qkv(x).view(-1, wh, ww, 3, self.num_heads, self.head_dim).unbind(3)
        x = self.proj(window_attention(q, k, v, self.window, "block", scale=self.scale).reshape(-1, wh, ww, C))
        x = x.view(B, nh, nw, wh, ww, C).transpose(2, 3).reshape(B, nh * wh, nw * ww, C)
        return x[:, :H, :W] if pad_b or pad_r else x


class ChannelAttention(nn.Module):
    """DaViT's channel (group) attention on a (B, H, W, C) map: ``qkv`` -> ``channel_attention`` -> ``proj``.
    ``version=1``: DaViT; ``version=2``: Florence-2 (scale N ** -0.5, the kernel's default for v2).

    On the kernel's torch backend (CPU) the output projection is folded into the attention: per image,
    ``proj(channel_attention(q, k, v))`` is ``z @ M + b`` with ``z`` the operand the attention is applied to
    (q in v1, v in v2) and ``M`` the C x C matrix whose rows ``g*C_g .. (g+1)*C_g`` are ``A_g^T @ W_g^T`` (``A_g`` a
    group's C_g x C_g attention, ``W_g`` the projection's columns of that group). The same arithmetic regrouped:
    the per-token product with ``A`` (N x C x C_g multiply-adds per image) disappears into the C x C x C_g product
    that forms ``M``, and ``z`` is read straight from the qkv projection (no transposing copies of it or of the
    output). Folding pays only while a map has more tokens than channels: forming ``M`` costs C x C x C_g multiply-adds
    per image and saves the N x C x C_g of the per-token product, so maps with N <= C (DaViT-T stages 3-4 at 224:
    196 tokens at width 384, 49 at 768) run the kernel, then ``proj`` as one GEMM over all tokens (at stage 4 the
    folded form measured ~50 ms of a 3.4 s training step in small per-group matmuls, the kernel path a fraction).
    Other backends (Triton on GPU, the reference) always run ``visionzoo.kernels.channel_attention``, then ``proj``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, version: int = 1):
        super().__init__()
        _check_groups(dim, num_heads, "num_heads (channel groups)")
        self.groups = num_heads
        self.version = version
        self.scale = (dim // num_heads) ** -0.5 if version == 1 else None
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).view(B, H * W, 3 * C).split(C, dim=-1)
        if H * W > C and choose_backend("channel_attention", q, k, v) == "torch":  # fold only where it saves work
            return self._attend_and_project(q, k, v).view(B, H, W, C)
        x = channel_attention(q, k, v, self.groups, scale=self.scale, version=self.version)
        return self.proj(x.reshape(B, H, W, C))

    def _attend_and_project(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``proj(channel_attention(q, k, v))`` with the projection folded into the attention (class docstring)."""
        B, N, C = q.shape
        groups, d = self.groups, C // self.groups
        x, y, z = (k, v, q) if self.version == 1 else (q, k, v)  # scores = x^T y, applied to z
        scale = self.scale if self.scale is not None else N ** -0.5
        xg, yg = (t.unflatten(-1, (groups, d)).transpose(1, 2) for t in (x, y))  # (B, G, N, d) views
        if x.dtype in (torch.float16, torch.bfloat16):  # keep the sum over N in range, as the kernel does
            scores = (xg * scale).transpose(-1, -2) @ yg
        else:
            scores = (xg.transpose(-1, -2) @ yg) * scale  # (B, G, d, d)
        attn = scores.softmax(dim=-1, dtype=torch.promote_types(x.dtype, torch.float32))
        weight_t = self.proj.weight.t().reshape(groups, d, C)  # rows of W^T per group
        folded = (attn.to(weight_t.dtype).transpose(-1, -2) @ weight_t).reshape(B, C, C)
        return torch.baddbmm(self.proj.bias.to(folded.dtype), z.to(folded.dtype), folded)


class _Block(nn.Module):
    """cpe1 -> pre-norm attention (residual) -> cpe2 -> pre-norm MLP (residual), on a (B, H, W, C) map."""

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float, drop_path: float, cpe_act: bool, ffn: bool):
        super().__init__()
        act = nn.GELU if cpe_act else None
        self.cpe1 = ConvPosEnc(dim, 3, act_layer=act)
        self.norm1 = LayerNorm(dim)
        self.attn = attn
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.cpe2 = ConvPosEnc(dim, 3, act_layer=act)
        if ffn:
            self.norm2 = LayerNorm(dim)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
            self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        else:
            self.norm2 = self.mlp = self.drop_path2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe1(x)
        y = self.attn(self.norm1(x))
        if isinstance(self.drop_path1, nn.Identity) and y.dtype == x.dtype and not torch.compiler.is_compiling():
            x = y.add_(x)  # y is the projection's fresh output (not saved for backward): no new tensor
            # (under autocast y is low precision: the sum below keeps the residual stream in x's dtype)
        else:
            x = x + self.drop_path1(y)
        x = self.cpe2(x)
        if self.mlp is not None:  # x + drop_path2(mlp(norm2(x))), over chunks of tokens (visionzoo.layers)
            x = residual_mlp(x, self.norm2, self.mlp, self.drop_path2)
        return x


class SpatialBlock(_Block):
    def __init__(self, dim: int, num_heads: int, window: Tuple[int, int], mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path: float = 0.0, cpe_act: bool = False, ffn: bool = True,
                 attn_pad: str = "zeros"):
        super().__init__(dim, WindowAttention(dim, num_heads, window, qkv_bias, attn_pad), mlp_ratio, drop_path,
                         cpe_act, ffn)


class ChannelBlock(_Block):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, cpe_act: bool = False, ffn: bool = True, version: int = 1):
        super().__init__(dim, ChannelAttention(dim, num_heads, qkv_bias, version), mlp_ratio, drop_path, cpe_act,
                         ffn)


class DaViTStage(nn.Module):
    """Downsample (stages 2-4), then ``depth`` (spatial block, channel block) pairs; channels-last NCHW in and out.

    Each pair is an ``nn.Sequential`` whose children are ``0``/``1`` (DaViT, timm) or ``spatial_block`` /
    ``channel_block`` (``named_blocks``, timm's Florence-2 towers)."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, num_heads: int, window: Tuple[int, int],
                 drop_path: Sequence[float], downsample: bool, down_kernel_size: int, named_blocks: bool,
                 **block_kwargs):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample(in_chs, out_chs, down_kernel_size) if downsample else nn.Identity()
        version = block_kwargs.pop("version")
        attn_pad = block_kwargs.pop("attn_pad")
        blocks = []
        for i in range(depth):
            pair = [("spatial_block", SpatialBlock(out_chs, num_heads, window, drop_path=drop_path[2 * i],
                                                   attn_pad=attn_pad, **block_kwargs)),
                    ("channel_block", ChannelBlock(out_chs, num_heads, drop_path=drop_path[2 * i + 1],
                                                   version=version, **block_kwargs))]
            blocks.append(nn.Sequential(OrderedDict(pair)) if named_blocks else nn.Sequential(*[m for _, m in pair]))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x).permute(0, 2, 3, 1)  # (B, H, W, C): a free view of channels-last memory
        images = self.images_per_tile(x)
        if images < x.shape[0]:  # images are independent: run the blocks on groups of them (see images_per_tile)
            return torch.cat([self._run_blocks(t) for t in x.split(images)]).permute(0, 3, 1, 2)
        return self._run_blocks(x).permute(0, 3, 1, 2)

    def _run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    @staticmethod
    def images_per_tile(x: torch.Tensor) -> int:
        """How many images the blocks process at a time without gradients: all of them unless a map of the batch exceeds
        ``STAGE_TILE_BYTES``, so that no block temporary (3x for qkv, the attention scores) reaches the C allocator's
        mmap threshold (glibc: at most 32 MiB; larger blocks are fresh kernel pages, faulted in and zeroed on every
        use). Every image is computed exactly as in a whole batch (no batch statistics anywhere in DaViT); only
        the grouping of the work changes. Not used under ``torch.compile``."""
        B, H, W, C = x.shape
        per_image = H * W * C * x.element_size()
        if torch.compiler.is_compiling() or torch.is_grad_enabled() or B * per_image <= STAGE_TILE_BYTES:
            return B  # with autograd the saved activations are fresh memory anyway: measured slower in tiles
        tiles = -(-B * per_image // STAGE_TILE_BYTES)
        return -(-B // tiles)  # balanced groups


def _pair(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class DaViT(PyramidMixin, PretrainedFileMixin, nn.Module):
    """DaViT backbone + classifier (see the module docstring).

    Args:
        depths: (spatial, channel) block pairs per stage.
        embed_dims: width of each stage.
        num_heads: attention heads (spatial) = channel groups (channel attention) per stage; must divide the width.
        window_size: spatial attention window (7; 12 for DaViT-L and the Florence-2 towers).
        mlp_ratio: MLP hidden width / width.
        qkv_bias: bias in the qkv projections.
        down_kernel_size: 2 (DaViT: 2x2 stride-2 downsampling) or 3 (Florence-2: 3x3, stride 2, padding 1).
        channel_attn_v2: Florence-2's channel attention (q^T k, scale N ** -0.5) instead of DaViT's (k^T v).
        named_blocks: name each pair's blocks ``spatial_block`` / ``channel_block`` (timm's Florence-2 towers)
            instead of ``0`` / ``1``; either checkpoint layout loads into either model.
        attn_pad: ``"zeros"`` (official): maps that are not whole windows are zero-padded before the qkv
            projection and the padded tokens act as keys; ``"mask"``: the padded keys are masked out.
        cpe_act: GELU on the CPE convolutions' output (the official code's option; off in every released model).
        ffn: MLPs in the blocks (the official code's option; on in every released model).
        drop_path_rate: stochastic depth of the last sub-block; linearly less before it (official schedule).
    """

    dense_hook = DenseHook(norm_eps=1e-5, official_norm_key="norm{i}")  # official det/seg: nn.LayerNorm norm0..3

    def __init__(
            self,
            depths: Sequence[int] = (1, 1, 3, 1),
            embed_dims: Sequence[int] = (96, 192, 384, 768),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            window_size: Union[int, Sequence[int]] = 7,
            mlp_ratio: float = 4.0,
            qkv_bias: bool = True,
            down_kernel_size: int = 2,
            channel_attn_v2: bool = False,
            named_blocks: bool = False,
            attn_pad: str = "zeros",
            cpe_act: bool = False,
            ffn: bool = True,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if not len(depths) == len(embed_dims) == len(num_heads):
            raise ValueError(f"DaViT: depths {tuple(depths)}, embed_dims {tuple(embed_dims)} and num_heads "
                             f"{tuple(num_heads)} must have one entry per stage")
        for dim, heads in zip(embed_dims, num_heads):
            _check_groups(dim, heads, "num_heads")
        if attn_pad not in ATTN_PAD_MODES:
            raise ValueError(f"DaViT: attn_pad must be one of {ATTN_PAD_MODES}, got {attn_pad!r}")
        self.window_size = _pair(window_size)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.num_features = embed_dims[-1]

        self.stem = Stem(in_chans, embed_dims[0])
        total = 2 * sum(depths)
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]  # torch.linspace(0, r, total)
        stages, self.feature_info, in_chs = [], [], embed_dims[0]
        for i, (dim, depth, heads) in enumerate(zip(embed_dims, depths, num_heads)):
            stage_rates, rates = rates[:2 * depth], rates[2 * depth:]
            stages.append(DaViTStage(
                in_chs, dim, depth, heads, self.window_size, stage_rates, downsample=i > 0,
                down_kernel_size=down_kernel_size, named_blocks=named_blocks, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                cpe_act=cpe_act, ffn=ffn, version=2 if channel_attn_v2 else 1, attn_pad=attn_pad))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stages.{i}"))
            in_chs = dim
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(self.num_features, num_classes, global_pool, norm_layer=LayerNorm,
                                   drop_rate=drop_rate)
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
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        if coarse:
            return dict(stem=r"^stem", blocks=[(r"^stages\.(\d+)", None), (r"^head", (99999,))])
        return dict(stem=r"^stem", blocks=[(r"^stages\.(\d+)\.downsample", (0,)),
                                           (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                                           (r"^head", (99999,))])

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features of each stage (indices 0-3, strides 4-32), plus the final features.

        ``norm`` is accepted for timm compatibility; DaViT's only final norm sits in the head, after pooling.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        stages = self.stages[:max_index + 1] if stop_early else self.stages
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x.permute(0, 2, 3, 1) if output_fmt == "NHWC" else x)
        if intermediates_only:
            return intermediates
        return x, intermediates

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
            # the head was sized for the last stage; what remains ends at an earlier width
            self.num_features = self.feature_info[max_index]["num_chs"]
            self.head = ClassifierHead(self.num_features, 0, "")
        elif prune_head:
            self.reset_classifier(0, "")
        self.head_hidden_size = self.head.num_features
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------- checkpoints

# official (dingmyu/davit) -> ours, applied in order to each key
_OFFICIAL_RULES = (
    (r"^patch_embeds\.0\.proj\.", "stem.conv."),
    (r"^patch_embeds\.0\.norm\.", "stem.norm."),
    (r"^patch_embeds\.(\d+)\.proj\.", r"stages.\1.downsample.conv."),
    (r"^patch_embeds\.(\d+)\.norm\.", r"stages.\1.downsample.norm."),
    (r"^main_blocks\.(\d+)\.", r"stages.\1.blocks."),
    (r"\.cpe\.0\.", ".cpe1."),
    (r"\.cpe\.1\.", ".cpe2."),
    (r"^norms\.", "head.norm."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
)

# Florence-2 (``vision_tower.`` removed) -> ours, as timm converts it
_FLORENCE2_RULES = (
    (r"^convs\.0\.", "stem."),
    (r"^convs\.(\d+)\.proj\.", r"stages.\1.downsample.conv."),
    (r"^convs\.(\d+)\.norm\.", r"stages.\1.downsample.norm."),
    (r"^blocks\.(\d+)\.", r"stages.\1.blocks."),
    (r"\.conv1\.fn\.dw\.", ".cpe1.proj."),
    (r"\.conv2\.fn\.dw\.", ".cpe2.proj."),
    (r"\.(window|channel)_attn\.norm\.", ".norm1."),
    (r"\.(window|channel)_attn\.fn\.", ".attn."),
    (r"\.ffn\.norm\.", ".norm2."),
    (r"\.ffn\.fn\.net\.", ".mlp."),
)
_STEM_RULE = (r"^stem\.proj\.", "stem.conv.")


def _apply_rules(key: str, rules) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def _match_block_names(state: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Rename each pair's blocks ``0``/``1`` <-> ``spatial_block``/``channel_block`` to the model's choice."""
    expected = model.state_dict()
    names = ("spatial_block", "channel_block")
    out = {}
    for key, value in state.items():
        if key not in expected:
            m = re.match(r"^(stages\.\d+\.blocks\.\d+\.)(0|1|spatial_block|channel_block)\.(.*)$", key)
            if m:
                kind = m.group(2)
                other = names[int(kind)] if kind in "01" else str(names.index(kind))
                renamed = f"{m.group(1)}{other}.{m.group(3)}"
                if renamed in expected:
                    key = renamed
        out[key] = value
    return out


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: DaViT) -> Dict[str, torch.Tensor]:
    """Map a checkpoint onto ``model``: timm's (``timm/davit_*``, this module's names), the official classification
    layout (``patch_embeds``, ``main_blocks``, ``cpe.N``, ``norms``, ``head``), a Florence-2 checkpoint (its
    ``vision_tower.*`` keys; the language model and projections are ignored), our own safetensors, or a
    Lightning/DDP/EMA checkpoint. The Florence-2 towers have no head norm: it is set to the identity. Keys that do
    not fit raise a ValueError naming them."""
    state = unwrap_state_dict(state_dict)
    source = "timm"
    if any(k.startswith("vision_tower.") for k in state):
        source = "Florence-2"
        state = {_apply_rules(k[len("vision_tower."):], _FLORENCE2_RULES + (_STEM_RULE,)): v
                 for k, v in state.items() if k.startswith("vision_tower.")}
    elif any(k.startswith(("patch_embeds.", "main_blocks.")) for k in state):
        source = "official DaViT"
        state = {_apply_rules(k, _OFFICIAL_RULES): v for k, v in state.items()}
    state = _match_block_names(state, model)
    expected = model.state_dict()
    for name in ("weight", "bias"):  # towers released without the head norm (timm leaves its init: identity)
        key = f"head.norm.{name}"
        if key in expected and key not in state and source == "Florence-2":
            state[key] = torch.ones_like(expected[key], device="cpu") if name == "weight" else \
                torch.zeros_like(expected[key], device="cpu")
    check_keys(state, model, f"DaViT ({source} layout)", first_conv="stem.conv")
    return state


# ---------------------------------------------------------------------------------------------- registry

def _create_davit(variant: str, pretrained: bool = False, **kwargs) -> DaViT:
    return build_zoo_model(DaViT, variant, pretrained,
                           feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)), **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    cfg = dict(
        num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7),
        min_input_size=(3, MIN_INPUT_SIZE, MIN_INPUT_SIZE), fixed_input_size=False,
        crop_pct=0.9, crop_mode="center", interpolation="bicubic",  # official DaViT_224 eval (timm uses 0.95)
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv="stem.conv", classifier="head.fc", license="mit",
        custom_load=True,  # files and URLs load through PretrainedFileMixin.load_pretrained (safe official reader)
        paper_name="DaViT: Dual Attention Vision Transformers", paper_ids="arXiv:2204.03645",
        origin_url="https://github.com/dingmyu/davit",
    )
    cfg.update(kwargs)
    return cfg


_FLORENCE2 = dict(
    num_classes=0, input_size=(3, 768, 768), pool_size=(24, 24),
    crop_pct=1.0, crop_mode="squash",  # Florence-2's processor: resize to 768x768 (bicubic), no crop
    paper_name="Florence-2: Advancing a Unified Representation for a Variety of Vision Tasks",
    paper_ids="arXiv:2311.06242", origin_url="https://huggingface.co/microsoft/Florence-2-base",
    notes=("Florence-2's DaViT image tower (vision_tower.* of the Florence-2 checkpoint), as timm converts it; "
           "released without the head norm (loaded as the identity)",),
)

default_cfgs = generate_default_cfgs({
    "vz_davit_tiny.msft_in1k": _cfg(hf_hub_id="timm/davit_tiny.msft_in1k",
                                    notes=("official DaViT-T weights, converted by timm",)),
    "vz_davit_small.msft_in1k": _cfg(hf_hub_id="timm/davit_small.msft_in1k",
                                     notes=("official DaViT-S weights, converted by timm",)),
    "vz_davit_base.msft_in1k": _cfg(hf_hub_id="timm/davit_base.msft_in1k",
                                    notes=("official DaViT-B weights, converted by timm",)),
    # the official DaViT-L is `DaViT_large_window12_384` (window 12, 384 input); no weights were released
    "vz_davit_large": _cfg(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0,
                           notes=("official DaViT_large_window12_384; no released weights",)),
    "vz_davit_huge": _cfg(notes=("timm's definition; no released weights",)),
    "vz_davit_giant": _cfg(notes=("timm's definition; no released weights",)),
    "vz_davit_base_fl.msft_florence2": _cfg(hf_hub_id="microsoft/Florence-2-base", **_FLORENCE2),
    "vz_davit_huge_fl.msft_florence2": _cfg(hf_hub_id="microsoft/Florence-2-large",
                                           **dict(_FLORENCE2, origin_url="https://huggingface.co/microsoft/Florence-2-large")),
})

# official DaViT_{tiny,small,base,large_window12_384} (dingmyu/davit), timm's davit_{huge,giant,base_fl,huge_fl}
_ARCHS = dict(
    tiny=dict(depths=(1, 1, 3, 1), embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24)),
    small=dict(depths=(1, 1, 9, 1), embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24)),
    base=dict(depths=(1, 1, 9, 1), embed_dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32)),
    large=dict(depths=(1, 1, 9, 1), embed_dims=(192, 384, 768, 1536), num_heads=(6, 12, 24, 48), window_size=12),
    huge=dict(depths=(1, 1, 9, 1), embed_dims=(256, 512, 1024, 2048), num_heads=(8, 16, 32, 64)),
    giant=dict(depths=(1, 1, 12, 3), embed_dims=(384, 768, 1536, 3072), num_heads=(12, 24, 48, 96)),
)
_FL = dict(window_size=12, down_kernel_size=3, channel_attn_v2=True, named_blocks=True)


def _davit(variant: str, arch: Dict[str, Any], pretrained: bool, **kwargs) -> DaViT:
    return _create_davit(variant, pretrained, **dict(arch, **kwargs))


@register_model
def vz_davit_tiny(pretrained: bool = False, **kwargs) -> DaViT:
    return _davit("vz_davit_tiny", _ARCHS["tiny"], pretrained, **kwargs)


@register_model
def vz_davit_small(pretrained: bool = False, **kwargs) -> DaViT:
    return _davit("vz_davit_small", _ARCHS["small"], pretrained, **kwargs)


@register_model
def vz_davit_base(pretrained: bool = False, **kwargs) -> DaViT:
    return _davit("vz_davit_base", _ARCHS["base"], pretrained, **kwargs)


@register_model
def vz_davit_large(pretrained: bool = False, **kwargs) -> DaViT:
    return _davit("vz_davit_large", _ARCHS["large"], pretrained, **kwargs)


@register_model
def vz_davit_huge(pretrained: bool = False, **kwargs) -> DaViT:
    return _davit("vz_davit_huge", _ARCHS["huge"], pretrained, **kwargs)


@register_model
def vz_davit_giant(pretrained: bool = False, **kwargs) -> DaViT:
    return _davit("vz_davit_giant", _ARCHS["giant"], pretrained, **kwargs)


@register_model
def vz_davit_base_fl(pretrained: bool = False, **kwargs) -> DaViT:
    """Florence-2-base's image tower (timm's ``davit_base_fl``)."""
    return _davit("vz_davit_base_fl", dict(_ARCHS["base"], **_FL), pretrained, **kwargs)


@register_model
def vz_davit_huge_fl(pretrained: bool = False, **kwargs) -> DaViT:
    """Florence-2-large's image tower (timm's ``davit_huge_fl``)."""
    return _davit("vz_davit_huge_fl", dict(_ARCHS["huge"], **_FL), pretrained, **kwargs)
