"""OverLoCK: an Overview-first-Look-Closely-next ConvNet with context-mixing dynamic kernels (Lou & Yu, CVPR 2025,
arXiv:2502.20087), the official models (LMMMEng/OverLoCK, ``models/overlock.py``).

Three sub-networks, all NCHW convolutions:

* **Base-Net**: a 4-conv stem (stride 4) and three stages of ``RepConvBlock`` at strides 4, 8, 16;
* **Overview-Net**: a fourth stage at stride 32 whose output is the *context* (also fed to the auxiliary head);
* **Focus-Net**: ``ContMixBlock`` stages at strides 16 and 32 that carry C4/4 context channels beside the features.
  The context is projected to C4/4 (``ctx_proj``), bilinearly upsampled to stride 16 (the *prior*); the first block
  takes the prior as its context, later blocks mix the carried context with the prior (LayerScale each); stage 5
  downsamples features and context (strided conv + BN each) and uses the raw stride-32 prior.

ContMix (the dynamic convolution of a Focus block), step by step as in the official ``_forward_inner``:

1. features + context -> residual depthwise 3x3 -> LayerNorm2d (``xf``) -> fusion (dw3x3, BN, GELU, 1x1, GRN) -> x;
2. gate = SiLU(BN(1x1 x)); LePE = BN(dilated-reparam large-kernel depthwise conv of x);
3. query = BN(1x1 of xf's feature part) * (dim / groups)^-0.5 with groups = 2 * heads; key = BN(1x1 of xf's context
   part **average-pooled to 7x7 whatever the input size** (49 region tokens: the weights expect exactly 49));
4. per group, the query-key affinities (H*W x 49) go through one shared linear map to K^2 + S^2 values per pixel
   (S = 5, K = 13 in stage 4 / 7 in stage 5), each part plus a NAT-indexed relative-position bias, softmax per part;
5. the first half of x's channels is aggregated over each pixel's 5x5 neighbourhood, the second half over its KxK one,
   with those per-pixel weights (``visionzoo.kernels.na2d_av``: NATTEN's border rule, windows shifted inward);
6. 1x1 + BN, + LePE, squeeze-excite, x gate, BN + 1x1, LayerScale'd residual; then an MLP with a residual depthwise
   conv and GRN.

Quirks reproduced because the weights depend on them:

* Small maps (any side < K): features and normed input are bilinearly upsampled so that the shorter side is K (the
  other ``int(K / short * long)``, Python float arithmetic as in the official code), ContMix runs there, and its
  output is adaptive-average-pooled back. The key is always pooled to 7x7 (issue #39 upstream).
* LayerScale multiplies the *identity* path (``res_scale=True``): ``x = ls(x) + f(x)``; it is a per-channel affine map
  (weight (C, 1, 1, 1) and a bias, as the official grouped conv). Stages 1-2 have none.
* The query scale is (dim / groups)^-0.5, though each group's query has dim / (2 * groups) channels.
* Dilated reparam blocks (UniRepLKNet): a KxK depthwise conv + BN plus dilated branches + BN, summed.
  ``reparameterize()`` (``model.reparam()``, ``timm.utils.reparameterize_model``) merges them into one KxK conv with
  bias; the BN after the block stays, as in the official deploy form.
* Head: 1x1 conv to 1024 -> BN -> SiLU (part of ``forward_features`` here, as timm's EfficientNet ``conv_head``) ->
  average pool -> linear classifier. Auxiliary (Overview) head: BN -> pool -> linear, on the Overview context.
* BatchNorms: torch defaults (eps 1e-5, momentum 0.1); LayerNorm2d eps 1e-6; GRN eps 1e-6.

Beyond the official code: any input of at least 32x32, non-square included (``MIN_INPUT_SIZE``); the neighbourhood
aggregation runs on the shared kernel (Triton on CUDA, a tiled torch path elsewhere: no NATTEN, no k*k copies of
the values); in eval mode every BatchNorm is folded into its conv and the dilated branches are merged on the fly
(the training form runs as fast as the re-parameterised one); the affinity and its 49 -> K^2 + S^2 projection are
one matmul against the projected keys; ``*_reparam`` variants take model kwargs (num_classes ...) and all load their
weights (two official ones never do); a training-form checkpoint loads into a ``*_reparam`` model (merged on load).
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from visionzoo.kernels import autocast_dtype, na2d_av
from visionzoo.kernels._neighborhood import rpb_index
from visionzoo.layers import ClassifierHead, Linear, SqueezeExcite, check_image_input, fold_bn

from ._checkpoint import PretrainedFileMixin, build_zoo_model, check_keys, unwrap_state_dict
from ._dense import DenseHook
from ._family import Family
from ._official import OfficialCode, import_from_checkout, stub_missing
from ._pyramid import PyramidMixin

__all__ = ["FAMILY", "OverLoCK", "checkpoint_filter_fn", "OverLoCKDenseHook"]

logger = logging.getLogger("visionzoo")

MIN_INPUT_SIZE = 32  # one pixel at stride 32 (smaller maps inside ContMix are upsampled, as officially)
KEY_POOL = 7  # ContMix's key is pooled to 7x7 = 49 region tokens whatever the input size (the weights expect 49)
SMALL_KERNEL = 5


def unfold_na2d_av(attn: torch.Tensor, value: torch.Tensor, kernel_size: int, dilation: int = 1) -> torch.Tensor:
    """The official ``contmix.py``'s own maths for ``na2d_av`` without NATTEN (a valid unfold, its window grid
    replicate-padded to the map, an einsum): (B, g, H, W, k*k) weights, (B, g, H, W, c) values -> (B, g, H, W, c).
    What the official model runs here, where NATTEN 0.17 cannot be installed (its import is answered with this)."""
    if dilation != 1:
        raise ValueError("the unfold formulation has no dilation")
    B, g, H, W, c = value.shape
    k, p = kernel_size, kernel_size // 2
    v = value.permute(0, 1, 4, 2, 3).reshape(B, g * c, H, W)
    windows = F.unfold(v, kernel_size=k).view(B, g * c * k * k, H - 2 * p, W - 2 * p)
    windows = F.pad(windows, (p, p, p, p), mode="replicate").view(B, g, c, k * k, H, W)
    return torch.einsum("bghwt,bgcthw->bghwc", attn, windows)


def _official_overlock(checkout: str, name: str, img_size: int) -> nn.Module:
    """The official ``models/overlock.py`` constructor of the variant (plain convolutions, ``use_gemm=False``)."""
    stub_missing("natten.functional", na2d_av=unfold_na2d_av)
    stub_missing("mmengine.runner", load_checkpoint=None)  # the det/seg loader; unused here
    module = import_from_checkout(checkout, "models/overlock.py", "LMMMEng/OverLoCK")
    return getattr(module, name[len("vz_"):])(use_gemm=False)


FAMILY = Family(
    name="overlock",
    contract_model="vz_overlock_xt",
    # every code path at a fraction of the cost: every stage kind, a first and a later Focus block, the small-map
    # path at 64 px, DRBs with their fewest branches (the parity tests run the official kernel sizes)
    reduced=dict(depths=(1, 1, 1, 1), sub_depths=(1, 1), embed_dims=(8, 16, 32, 48), sub_num_heads=(1, 2),
                 kernel_sizes=(5, 5, 7, 5), projection=32),
    kernels=("neighborhood_aggregation",),
    aux_outputs=("aux_logits",),
    deploy_only=("vz_overlock_xt_reparam", "vz_overlock_t_reparam", "vz_overlock_s_reparam",
                 "vz_overlock_b_reparam"),
    # the official ImageNet training (timm's optimizer factory, no no_weight_decay list) decays every >= 2-D tensor
    no_weight_decay_may_be_empty=True,
    # the official det/seg recipes: custom_keys 'norm' (and absent absolute_pos_embed / relative_position_bias_table)
    det_seg_no_decay=("norm", "absolute_pos_embed", "relative_position_bias_table"),
    smoke_configs=("mmdet/overlock/mask-rcnn_overlock-t_fpn_1x_coco.py",
                   "mmseg/overlock/upernet_overlock-t_160k_ade20k-512x512.py"),
    official=OfficialCode("LMMMEng/OverLoCK", ("vz_overlock_xt", "vz_overlock_t", "vz_overlock_s", "vz_overlock_b"),
                          _official_overlock, logits_key="main"),
)

# UniRepLKNet's dilated reparam branches (kernel, dilation) for each large kernel size, in the official order
DRB_BRANCHES: Dict[int, Tuple[Tuple[int, int], ...]] = {
    19: ((5, 1), (7, 1), (9, 1), (9, 2), (3, 4), (3, 5), (3, 7)),
    17: ((5, 1), (7, 1), (9, 2), (3, 4), (3, 5), (3, 7)),
    15: ((5, 1), (7, 1), (7, 2), (3, 3), (3, 5), (3, 7)),
    13: ((5, 1), (7, 1), (7, 2), (3, 3), (3, 4), (3, 5)),
    11: ((5, 1), (7, 1), (5, 2), (3, 3), (3, 4), (3, 5)),
    9: ((5, 1), (7, 1), (5, 2), (3, 3), (3, 4)),
    7: ((5, 1), (3, 1), (3, 2), (3, 3)),
    5: ((3, 1), (3, 2)),
}


# ------------------------------------------------------------------------------------------------ small blocks

class ConvBN(nn.Module):
    """Conv -> BatchNorm; with the BatchNorm in eval mode, one conv with the BatchNorm folded in."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 bias: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn.training:
            return self.bn(self.conv(x))
        c = self.conv
        return F.conv2d(x, *fold_bn(c.weight, c.bias, self.bn), c.stride, c.padding, c.dilation, c.groups)


class BNConv(nn.Module):
    """BatchNorm -> 1x1 conv (bias); with the BatchNorm in eval mode, one conv with the BatchNorm folded in."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs)
        self.conv = nn.Conv2d(in_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn.training:
            return self.conv(self.bn(x))
        scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
        shift = self.bn.bias - self.bn.running_mean * scale
        w = self.conv.weight[:, :, 0, 0]
        return F.conv2d(x, (w * scale)[:, :, None, None], self.conv.bias + w @ shift)


class ResDWConv(nn.Conv2d):
    """x + depthwise conv(x) (bias), same size."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


class LayerScale2d(nn.Module):
    """Per-channel affine map ``x * weight + bias`` (the official grouped 1x1 conv: weight (C, 1, 1, 1), bias (C,))."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim, 1, 1, 1), float(init_value)))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt-V2), NCHW: ``x + gamma * x * N(x) + beta`` with
    ``N(x) = ||x||_HW / (mean_C ||x||_HW + 1e-6)``. Parameters (1, C, 1, 1) as officially (4-D tensors: weight decay
    applies to them in the official recipes)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, dim=(2, 3), keepdim=True)
        nx = gx / (gx.mean(dim=1, keepdim=True) + self.eps)
        return torch.addcmul(self.beta, x, self.gamma * nx + 1)


def _dilate_kernel(weight: torch.Tensor, dilation: int, size: int) -> torch.Tensor:
    """A (C, 1, k, k) depthwise kernel with dilation r as the equivalent dense (C, 1, size, size) kernel, centred."""
    if dilation == 1 and weight.shape[-1] == size:
        return weight
    k = weight.shape[-1]
    span = dilation * (k - 1) + 1
    dense = weight.new_zeros(weight.shape[0], weight.shape[1], span, span)
    dense[:, :, ::dilation, ::dilation] = weight
    pad = size // 2 - span // 2
    return F.pad(dense, (pad, pad, pad, pad))


def merge_dilated_branches(conv_weight: torch.Tensor, conv_bias: Optional[torch.Tensor], bn: nn.BatchNorm2d,
                           branches: Sequence[Tuple[torch.Tensor, nn.BatchNorm2d, int]]
                           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the one KxK depthwise conv equal to ``bn(conv(x)) + sum bn_i(conv_i(x))`` (eval-mode BNs;
    each branch (weight, bn, dilation) zero-padded, so the sum is exact at the borders too)."""
    size = conv_weight.shape[-1]
    weight, bias = fold_bn(conv_weight, conv_bias, bn)
    for w, b_bn, dilation in branches:
        w, b = fold_bn(w, None, b_bn)
        weight = weight + _dilate_kernel(w, dilation, size)
        bias = bias + b
    return weight, bias


class DilatedReparamConv(nn.Module):
    """UniRepLKNet's dilated reparam block: a KxK depthwise conv + BN and dilated depthwise branches + BN, summed.

    In eval mode (BNs in eval) the branches are merged on the fly into one KxK conv (the same maths as the deploy
    form, one pass over the activations); ``reparameterize()`` makes that permanent (deploy form: ``conv`` with a
    bias and nothing else, the official ``lk_origin``).
    """

    def __init__(self, dim: int, kernel_size: int, deploy: bool = False):
        super().__init__()
        if kernel_size not in DRB_BRANCHES:
            raise ValueError(f"OverLoCK: dilated reparam blocks exist for kernel sizes {sorted(DRB_BRANCHES)}, "
                             f"got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=deploy)
        if deploy:
            self.bn = None
            self.branches = None
        else:
            self.bn = nn.BatchNorm2d(dim)
            self.branches = nn.ModuleDict({
                f"k{k}_{r}": _DilatedBranch(dim, k, r) for k, r in DRB_BRANCHES[kernel_size]})

    @property
    def deploy(self) -> bool:
        return self.branches is None

    def merged(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the equivalent single KxK conv (eval-mode BatchNorm statistics)."""
        if self.deploy:
            return self.conv.weight, self.conv.bias
        return merge_dilated_branches(self.conv.weight, None, self.bn,
                                      [(b.conv.weight, b.bn, b.dilation) for b in self.branches.values()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.conv(x)
        if not self.bn.training:
            return F.conv2d(x, *self.merged(), padding=self.kernel_size // 2, groups=x.shape[1])
        out = self.bn(self.conv(x))
        for branch in self.branches.values():
            out = out + branch(x)
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge the branches into ``conv`` (with bias) and drop them: the official ``merge_dilated_branches``."""
        if self.deploy:
            return
        weight, bias = self.merged()
        conv = nn.Conv2d(weight.shape[0], weight.shape[0], self.kernel_size, padding=self.kernel_size // 2,
                         groups=weight.shape[0], bias=True, device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        self.conv, self.bn, self.branches = conv, None, None


class _DilatedBranch(nn.Module):
    def __init__(self, dim: int, kernel_size: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=dilation * (kernel_size - 1) // 2, dilation=dilation,
                              groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LargeKernelBN(nn.Module):
    """Dilated reparam block -> BatchNorm (the official ``proj.1``/``proj.2`` and ``lepe.0``/``lepe.1``); in eval
    mode one KxK depthwise conv with the branches merged and the BatchNorm folded in."""

    def __init__(self, dim: int, kernel_size: int, deploy: bool = False):
        super().__init__()
        self.lk = DilatedReparamConv(dim, kernel_size, deploy)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn.training or (not self.lk.deploy and self.lk.bn.training):
            return self.bn(self.lk(x))
        weight, bias = fold_bn(*self.lk.merged(), self.bn)
        return F.conv2d(x, weight, bias, padding=self.lk.kernel_size // 2, groups=x.shape[1])


class ConvMlp(nn.Module):
    """1x1 -> GELU -> residual depthwise 3x3 -> GRN -> 1x1."""

    def __init__(self, in_chs: int, hidden: int, out_chs: int):
        super().__init__()
        self.fc1 = nn.Conv2d(in_chs, hidden, 1)
        self.act = nn.GELU()
        self.dwconv = ResDWConv(hidden, 3)
        self.grn = GRN(hidden)
        self.fc2 = nn.Conv2d(hidden, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.grn(self.dwconv(self.act(self.fc1(x)))))


# ------------------------------------------------------------------------------------------------ blocks

class RepConvBlock(nn.Module):
    """Base/Overview block: residual dw3x3, then ``ls(x) + f(x)`` with f = LN -> dilated reparam KxK + BN -> SE ->
    ConvMlp (ratio ``mlp_ratio``) -> drop path; ``ls`` is a LayerScale (stages 3-4) or the identity."""

    def __init__(self, dim: int, kernel_size: int, mlp_ratio: float, ls_init_value: Optional[float],
                 drop_path: float, deploy: bool = False):
        super().__init__()
        self.dwconv = ResDWConv(dim, 3)
        self.ln = LayerNorm2d(dim, eps=1e-6)  # named ln, not norm: the official det/seg recipes decay it
        self.large_kernel = LargeKernelBN(dim, kernel_size, deploy)
        self.se = SqueezeExcite(dim, max(16, dim // 8), act_layer=nn.GELU)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.ls = LayerScale2d(dim, ls_init_value) if ls_init_value is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dwconv(x)
        return self.ls(x) + self.drop_path(self.mlp(self.se(self.large_kernel(self.ln(x)))))


class Fusion(nn.Module):
    """Features + context (out_dim) -> dw3x3 + BN -> GELU -> 1x1 to dim -> GRN."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.dw = ConvBN(in_chs, in_chs, 3, groups=in_chs, bias=True)
        self.act = nn.GELU()
        self.proj = nn.Conv2d(in_chs, out_chs, 1)
        self.grn = GRN(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grn(self.proj(self.act(self.dw(x))))


class ContMixBlock(nn.Module):
    """Focus block (the official ``DynamicConvBlock``): context mixing with dynamic kernels (module docstring).

    Takes the features ``x`` (dim), the carried context ``ctx`` (ctx_dim) and the prior (ctx_dim); returns the
    block's full output (dim + ctx_dim channels: features, then context).
    """

    def __init__(self, dim: int, ctx_dim: int, kernel_size: int, num_heads: int, mlp_ratio: float,
                 ls_init_value: Optional[float], drop_path: float, first: bool, deploy: bool = False,
                 small_kernel: int = SMALL_KERNEL):
        super().__init__()
        out_dim = dim + ctx_dim
        self.dim, self.ctx_dim = dim, ctx_dim
        self.kernel_size, self.small_kernel = kernel_size, small_kernel
        self.groups = 2 * num_heads
        if dim % (2 * self.groups):
            raise ValueError(f"OverLoCK: a Focus stage's width ({dim}) must be a multiple of 4 * num_heads "
                             f"(= {2 * self.groups}): queries and both value halves split into {self.groups} groups")
        self.scale = (dim // self.groups) ** -0.5  # official: head_dim = dim // groups, queries have half that
        self.first = first
        if not first:
            self.x_scale = LayerScale2d(ctx_dim, 1.0)
            self.h_scale = LayerScale2d(ctx_dim, 1.0)
        self.dwconv1 = ResDWConv(out_dim, 3)
        self.norm1 = LayerNorm2d(out_dim, eps=1e-6)
        self.fusion = Fusion(out_dim, dim)
        self.query = ConvBN(dim, dim // 2)
        self.key = ConvBN(ctx_dim, dim // 2)
        self.weight_proj = Linear(KEY_POOL * KEY_POOL, kernel_size ** 2 + small_kernel ** 2)
        self.mix_proj = ConvBN(dim, dim)
        self.lepe = LargeKernelBN(dim, kernel_size, deploy)
        self.se = SqueezeExcite(dim, max(16, dim // 8), act_layer=nn.GELU)
        self.gate = ConvBN(dim, dim)
        self.gate_act = nn.SiLU()
        self.proj = BNConv(dim, out_dim)
        self.dwconv2 = ResDWConv(out_dim, 3)
        self.norm2 = LayerNorm2d(out_dim, eps=1e-6)
        self.mlp = ConvMlp(out_dim, int(dim * mlp_ratio), out_dim)
        self.ls1 = LayerScale2d(out_dim, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.ls2 = LayerScale2d(out_dim, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.rpb1 = nn.Parameter(torch.zeros(self.groups, 2 * small_kernel - 1, 2 * small_kernel - 1))
        self.rpb2 = nn.Parameter(torch.zeros(self.groups, 2 * kernel_size - 1, 2 * kernel_size - 1))

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        if not self.first:
            ctx = self.x_scale(ctx) + self.h_scale(prior)
        xf = self.dwconv1(torch.cat([x, ctx], dim=1))
        identity = xf
        xf = self.norm1(xf)
        x = self.fusion(xf)
        gate = self.gate_act(self.gate(x))
        lepe = self.lepe(x)
        x = self.mix_proj(self.contmix(x, xf)) + lepe
        x = self.proj(gate * self.se(x))
        x = self.ls1(identity) + self.drop_path(x)
        x = self.dwconv2(x)
        return self.ls2(x) + self.drop_path(self.mlp(self.norm2(x)))

    def contmix(self, x: torch.Tensor, xf: torch.Tensor) -> torch.Tensor:
        """Dynamic kernels from the query-context affinities, applied by neighbourhood aggregation (steps 3-5)."""
        B, C, H, W = x.shape
        K, S = self.kernel_size, self.small_kernel
        size = (H, W)
        if min(H, W) < K:  # the official small-map rule: upsample so the shorter side is K, pool back afterwards
            size = (K, int(K / H * W)) if H < W else (int(K / W * H), K)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            xf = F.interpolate(xf, size=size, mode="bilinear", align_corners=False)
        h, w = size
        g = self.groups
        query = self.query(xf[:, :C]) * self.scale  # (B, C/2, h, w)
        key = self.key(F.adaptive_avg_pool2d(xf[:, C:], KEY_POOL))  # (B, C/2, 7, 7)
        c = C // 2 // g
        # weight_proj(q^T k) = q^T (k Wp^T) + b: project the 49 keys first (c x (K^2+S^2) per group, not HW x 49)
        key = torch.matmul(key.reshape(B, g, c, KEY_POOL * KEY_POOL), self.weight_proj.weight.t())
        logits = torch.matmul(query.reshape(B, g, c, h * w).transpose(-1, -2), key)  # (B, g, hw, S^2 + K^2)
        logits = logits + self.weight_proj.bias
        bias1 = self.rpb1.flatten(1)[:, rpb_index(h, w, S, device=x.device)]  # (g, hw, S^2)
        bias2 = self.rpb2.flatten(1)[:, rpb_index(h, w, K, device=x.device)]  # (g, hw, K^2)
        attn1 = torch.softmax(logits[..., :S * S] + bias1, dim=-1).view(B, g, h, w, S * S)
        attn2 = torch.softmax(logits[..., S * S:] + bias2, dim=-1).view(B, g, h, w, K * K)
        # value channels (half, group, c): the first half is aggregated over 5x5, the second over KxK
        value = x.reshape(B, 2, g, C // 2 // g, h, w).permute(1, 0, 2, 4, 5, 3)  # (2, B, g, h, w, c) view
        amp_dtype = autocast_dtype(x.device.type)
        if amp_dtype is not None:  # an aggregation is a matmul: autocast's dtype, as matmul's
            value = value.to(amp_dtype)
        out = torch.stack([na2d_av(attn1, value[0], S), na2d_av(attn2, value[1], K)], dim=1)  # (B, 2, g, h, w, c)
        out = out.permute(0, 1, 2, 5, 3, 4).reshape(B, C, h, w)
        if (h, w) != (H, W):
            out = F.adaptive_avg_pool2d(out, (H, W))
        return out


# ------------------------------------------------------------------------------------------------ stages

class Stem(nn.Module):
    """conv3x3 s2 + BN + GELU, conv3x3 + BN + GELU, conv3x3 s2 + BN + GELU, conv3x3 + BN (convs without bias).

    Also the model's entry point: validates the input."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.in_chans = in_chans
        self.conv1 = ConvBN(in_chans, dim // 2, 3, 2)
        self.conv2 = ConvBN(dim // 2, dim // 2, 3)
        self.conv3 = ConvBN(dim // 2, dim, 3, 2)
        self.conv4 = ConvBN(dim, dim, 3)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans, MIN_INPUT_SIZE, self.conv1.conv.weight.dtype, "OverLoCK")
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.act(self.conv3(x))
        return self.conv4(x)


def _run(block: nn.Module, grad_checkpointing: bool, *args: torch.Tensor) -> torch.Tensor:
    if grad_checkpointing and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)


class BaseStage(nn.Module):
    """Base-Net / Overview-Net stage: optional downsample (conv3x3 s2 + BN), then RepConvBlocks."""

    def __init__(self, in_chs: int, dim: int, depth: int, kernel_size: int, mlp_ratio: float,
                 ls_init_value: Optional[float], drop_path: Sequence[float], downsample: bool, deploy: bool):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = ConvBN(in_chs, dim, 3, 2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            RepConvBlock(dim, kernel_size, mlp_ratio, ls_init_value, drop_path[i], deploy) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            x = _run(block, self.grad_checkpointing, x)
        return x


class ContextDownsample(nn.Module):
    """Focus-Net stage 5 entry (official ``CTXDownsample``): conv3x3 s2 + BN for the features and for the context."""

    def __init__(self, in_chs: int, dim: int, ctx_dim: int):
        super().__init__()
        self.x_proj = ConvBN(in_chs, dim, 3, 2)
        self.ctx_proj = ConvBN(ctx_dim, ctx_dim, 3, 2)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.x_proj(x), self.ctx_proj(ctx)


class FocusStage(nn.Module):
    """Focus-Net stage of ContMix blocks.

    The first Focus stage (stride 16) owns the context projection (1x1 conv with bias, C4 -> C4/4) of the Overview
    output; its prior is that projection bilinearly upsampled to stride 16, and its first block takes the prior as
    context. The second (stride 32) downsamples features and context and uses the raw projection as prior.
    """

    def __init__(self, in_chs: int, dim: int, ctx_in: int, ctx_dim: int, depth: int, kernel_size: int,
                 num_heads: int, mlp_ratio: float, ls_init_value: Optional[float], drop_path: Sequence[float],
                 first: bool, deploy: bool):
        super().__init__()
        self.grad_checkpointing = False
        self.first = first
        self.dim = dim
        if first:
            self.ctx_proj = nn.Conv2d(ctx_in, ctx_dim, 1)
        else:
            self.downsample = ContextDownsample(in_chs, dim, ctx_dim)
        self.blocks = nn.ModuleList([
            ContMixBlock(dim, ctx_dim, kernel_size, num_heads, mlp_ratio, ls_init_value, drop_path[i],
                         first=first and i == 0, deploy=deploy) for i in range(depth)])

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """First stage: (base features at stride 16, Overview output) -> (full output, raw prior at stride 32).
        Second: (previous full output, raw prior) -> (full output, raw prior)."""
        if self.first:
            prior = self.ctx_proj(ctx)
            h = F.interpolate(prior, size=x.shape[2:], mode="bilinear", align_corners=False)
            local_prior = h
        else:
            prior = ctx
            x, h = self.downsample(*x.split([x.shape[1] - prior.shape[1], prior.shape[1]], dim=1))
            local_prior = prior
        full = x
        for i, block in enumerate(self.blocks):
            if i:
                x, h = full[:, :self.dim], full[:, self.dim:]
            full = _run(block, self.grad_checkpointing, x, h, local_prior)
        return full, prior


class ConvHead(ConvBN):
    """1x1 conv (no bias) -> BN -> SiLU: the official head's pre-pooling part."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__(in_chs, out_chs)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class AuxHead(nn.Module):
    """The Overview-Net's auxiliary classifier (deep supervision): BN -> global average pool -> linear."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(dim)
        self.fc = Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = Linear(self.bn.num_features, num_classes, device=self.bn.weight.device) if num_classes > 0 \
            else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.bn.training:  # the BN only shifts and scales the pooled vector
            scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
            return self.fc(x.mean((2, 3)) * scale + (self.bn.bias - self.bn.running_mean * scale))
        return self.fc(self.bn(x).mean((2, 3)))


# ------------------------------------------------------------------------------------------------ the model

class OverLoCK(PyramidMixin, PretrainedFileMixin, nn.Module):
    """OverLoCK backbone + classifier (see the module docstring).

    Args:
        depths: RepConvBlocks of the Base-Net stages 1-3 and the Overview-Net stage 4.
        sub_depths: ContMix blocks of the Focus-Net stages at strides 16 and 32.
        embed_dims: widths of stages 1-4 (the Focus stages run at widths 3 and 4, plus embed_dims[3] // 4 context).
        kernel_sizes: large kernel per stage (dilated reparam blocks; ContMix uses those of stages 3 and 4).
        mlp_ratios / sub_mlp_ratio: MLP widths of RepConvBlocks / ContMix blocks (x their dim).
        sub_num_heads: ContMix heads per Focus stage (2 x heads groups).
        ls_init_values: LayerScale init per stage (None: no LayerScale).
        projection: width of the head's 1x1 conv before pooling.
        aux_head: the Overview-Net's auxiliary classifier (official ``use_ds``), used by ``forward_train``.
        deploy: build the re-parameterised form (single large-kernel convs with bias).
        dense_context: for the det/seg backbone only (``OverLoCKDenseHook``): add the Overview context back to the
            stride-32 output (the official detection backbone does: True; the segmentation one does not: False,
            the default, so that the generic backbone is the plain pyramid).
        drop_path_rate: stochastic depth, linearly from 0 over every block (Base, Overview, then Focus).
    """

    dense_hook: "OverLoCKDenseHook"  # set below the class
    checkpoint_prefer = ("state_dict", "model", "state_dict_ema", "model_ema")  # what mmengine's loader reads

    def __init__(
            self,
            depths: Sequence[int] = (2, 2, 3, 2),
            sub_depths: Sequence[int] = (6, 2),
            embed_dims: Sequence[int] = (56, 112, 256, 336),
            kernel_sizes: Sequence[int] = (17, 15, 13, 7),
            mlp_ratios: Sequence[float] = (4, 4, 4, 4),
            sub_mlp_ratio: Union[float, Sequence[float]] = 3,
            sub_num_heads: Sequence[int] = (4, 6),
            ls_init_values: Sequence[Optional[float]] = (None, None, 1.0, 1.0),
            projection: int = 1024,
            aux_head: bool = True,
            deploy: bool = False,
            dense_context: bool = False,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if not (len(depths) == len(embed_dims) == len(kernel_sizes) == len(mlp_ratios) == len(ls_init_values) == 4):
            raise ValueError("OverLoCK: depths, embed_dims, kernel_sizes, mlp_ratios and ls_init_values need 4 entries "
                             f"(stages 1-4), got {tuple(depths)}, {tuple(embed_dims)}, {tuple(kernel_sizes)}, "
                             f"{tuple(mlp_ratios)}, {tuple(ls_init_values)}")
        if len(sub_depths) != 2 or len(sub_num_heads) != 2 or min(sub_depths) < 1:
            raise ValueError(f"OverLoCK: sub_depths and sub_num_heads need 2 entries (Focus stages at strides 16 and "
                             f"32, at least one block each), got {tuple(sub_depths)}, {tuple(sub_num_heads)}")
        sub_mlp = (sub_mlp_ratio,) * 2 if isinstance(sub_mlp_ratio, (int, float)) else tuple(sub_mlp_ratio)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.deploy = deploy
        self.dense_context = dense_context
        self.embed_dims = tuple(embed_dims)
        ctx_dim = embed_dims[3] // 4
        self.ctx_dim = ctx_dim

        total = sum(depths) + sum(sub_depths)
        # the official linear schedule (in float64: float32 rounding would exceed drop_path_rate at the top)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stem = Stem(in_chans, embed_dims[0])
        stages = []
        for i in range(4):
            stages.append(BaseStage(embed_dims[i - 1] if i else embed_dims[0], embed_dims[i], depths[i],
                                    kernel_sizes[i], mlp_ratios[i], ls_init_values[i], rates[:depths[i]],
                                    downsample=i > 0, deploy=deploy))
            rates = rates[depths[i]:]
        stages.append(FocusStage(embed_dims[2], embed_dims[2], embed_dims[3], ctx_dim, sub_depths[0], kernel_sizes[2],
                                 sub_num_heads[0], sub_mlp[0], ls_init_values[2], rates[:sub_depths[0]], first=True,
                                 deploy=deploy))
        rates = rates[sub_depths[0]:]
        stages.append(FocusStage(embed_dims[2], embed_dims[3], embed_dims[3], ctx_dim, sub_depths[1], kernel_sizes[3],
                                 sub_num_heads[1], sub_mlp[1], ls_init_values[3], rates, first=False, deploy=deploy))
        self.stages = nn.ModuleList(stages)
        # outputs (forward_intermediates indices 0-3): Base stages 1-2, Focus stages at strides 16 and 32
        self._feature_stages = (0, 1, 4, 5)
        self.feature_info = [
            dict(num_chs=embed_dims[0], reduction=4, module="stages.0"),
            dict(num_chs=embed_dims[1], reduction=8, module="stages.1"),
            dict(num_chs=embed_dims[2] + ctx_dim, reduction=16, module="stages.4"),
            dict(num_chs=embed_dims[3] + ctx_dim, reduction=32, module="stages.5"),
        ]
        self.conv_head = ConvHead(embed_dims[3] + ctx_dim, projection)
        self.num_features = self.head_hidden_size = projection
        self.aux_head = AuxHead(embed_dims[3], num_classes) if aux_head else None
        self.head = ClassifierHead(projection, num_classes, global_pool, drop_rate=drop_rate)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if module.weight.is_meta:  # nothing to initialise (and trunc_normal_ is slow on meta tensors)
                return
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # ---- re-parameterisation ----------------------------------------------------------------------------------

    @torch.no_grad()
    def reparam(self) -> "OverLoCK":
        """Merge every dilated reparam block's branches in place (the official ``reparam()``); returns the model.
        Its state dict then has the layout of the ``*_reparam`` variants."""
        for module in self.modules():
            if isinstance(module, DilatedReparamConv):
                module.reparameterize()
        self.deploy = True
        return self

    # ---- timm contract ----------------------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return set()  # as officially: timm's factory exempts biases and 1-D norm parameters by itself

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        blocks = r"^stages\.(\d+)" if coarse else [
            (r"^stages\.(\d+)\.(?:downsample|ctx_proj)", (0,)),
            (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            (r"^conv_head|^head|^aux_head", (99999,)),
        ]
        return dict(stem=r"^stem", blocks=blocks)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        super().reset_classifier(num_classes, global_pool)
        if self.aux_head is not None:
            self.aux_head.reset(num_classes)

    def _forward(self, x: torch.Tensor, take: Sequence[int] = (), last: Optional[int] = None,
                 stage2_norm: Optional[nn.Module] = None
                 ) -> Tuple[torch.Tensor, List[torch.Tensor], Optional[torch.Tensor]]:
        """(last map, the maps of output indices ``take``, the Overview context or None), up to output ``last``.
        ``stage2_norm``: applied to the stage-2 output before everything after it (the det/seg backbone)."""
        n = len(self.stages)
        last = 3 if last is None else last
        intermediates: List[torch.Tensor] = []
        x = self.stem(x)
        for i in range(2):
            if i < n and i <= last:
                x = self.stages[i](x)
                if i == 1 and stage2_norm is not None:
                    x = stage2_norm(x)
                if i in take:
                    intermediates.append(x)
        if n <= 2 or last < 2:
            return x, intermediates, None
        x = self.stages[2](x)
        ctx = self.stages[3](x)
        x, prior = self.stages[4](x, ctx)
        if 2 in take:
            intermediates.append(x)
        if n > 5 and last >= 3:
            x, _ = self.stages[5](x, prior)
            if 3 in take:
                intermediates.append(x)
        return x, intermediates, ctx

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Outputs 0-3 (Base stages 1-2, Focus stages at strides 16 and 32, each Focus output with its context
        channels), plus the final features. ``norm`` is accepted for timm compatibility (no final norm)."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        last = max_index if (stop_early or intermediates_only) else None
        final, intermediates, _ = self._forward(x, take_indices, last)
        if output_fmt == "NHWC":
            intermediates = [t.permute(0, 2, 3, 1) for t in intermediates]
        if intermediates_only:
            return intermediates
        if last is None or last == len(self.feature_info) - 1:
            final = self.conv_head(final)
        return final, intermediates

    def forward_dense(self, x: torch.Tensor, indices: Sequence[int], stage2_norm: Optional[nn.Module] = None
                      ) -> Tuple[List[torch.Tensor], Optional[torch.Tensor]]:
        """For the det/seg hook: (the maps of outputs ``indices``, the Overview context, None if not computed).
        With ``stage2_norm``, output 1 is normed and the later stages run on the normed map (official det/seg)."""
        _, intermediates, ctx = self._forward(x, tuple(indices), max(indices), stage2_norm)
        return intermediates, ctx

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop what outputs after the last index in ``indices`` need (and the heads); returns the kept indices.
        Output 2 needs the whole Overview-Net (its context feeds the Focus-Net)."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        self.stages = self.stages[:self._feature_stages[max_index] + 1]
        self.aux_head = None
        if prune_norm or max_index < len(self.feature_info) - 1:
            # the head's 1x1 conv (the "norm" of forward_features) goes, and the classifier it fed
            self.conv_head = nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.head = ClassifierHead(self.num_features, 0, "")
            self.num_classes, self.global_pool = 0, ""
        elif prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self._forward(x)[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_head(self.forward_features(x))
        if self.training and self.aux_head is not None and torch.is_grad_enabled():
            # a plain training forward (no auxiliary loss: forward_train is the recipe's) still gives the auxiliary
            # head's parameters a (zero) gradient, so DDP without find_unused_parameters works; the values are
            # unchanged (a zero times the parameters, not their activations: no NaN from an inf)
            x = x + 0.0 * sum(p.sum() for p in self.aux_head.parameters())
        return x

    def forward_train(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The logits and the auxiliary (Overview) head's logits (``aux_logits``; the official training forward's
        ``dict(main=..., aux=...)``), for the training loss with ``aux_loss_weights``."""
        final, _, ctx = self._forward(x)
        out = {"logits": self.forward_head(self.conv_head(final))}
        if self.aux_head is not None:
            out["aux_logits"] = self.aux_head(ctx)
        return out


# ------------------------------------------------------------------------------------------------ det/seg hook

class OverLoCKDenseHook(DenseHook):
    """The official det/seg backbone (``detection/models/overlock.py``, ``segmentation/models/overlock.py``).

    Outputs: Base stages 1-2 (C1, C2), the Focus outputs with their context (C3 + C4/4, C4 + C4/4), each through a
    LayerNorm2d (eps 1e-6, official ``extra_norm.{0-3}``). Two quirks of the official backbones, reproduced:

    * the stages after stage 2 run on its *normed* output (``extra_norm.1``'s output feeds stage 3: the official
      ``forward_features`` passes the normed list entry on); where output 1 is not requested, that norm is
      ``extras.stage2_norm`` (loaded from ``extra_norm.1`` too);
    * the detection backbone adds the Overview context back to the stride-32 output after its norm:
      ``norm3(x) + ls(conv1x1(norm4(ctx)))`` (``extra_norm.4``, ``h_proj``: a 1x1 conv C4 -> C4 + C4/4 and a
      LayerScale initialised to 1e-5; here ``extras.ctx_norm`` and ``extras.h_proj``), built with
      ``dense_context=True`` (the det configs pass it). The segmentation backbone does not (the default).

    With ``out_norm=False`` the outputs are not normed (not the official backbone); ``extras.stage2_norm``, where
    built (output 1 not returned), still feeds stage 3.
    """

    def __init__(self):
        super().__init__(norm_eps=1e-6, official_norm_key="extra_norm.{i}")

    def extra_modules(self, model: nn.Module, out_indices: Sequence[int]) -> Optional[nn.Module]:
        extras = nn.ModuleDict()
        if max(out_indices) >= 2 and 1 not in out_indices:
            extras["stage2_norm"] = LayerNorm2d(model.embed_dims[1], eps=self.norm_eps)
        if getattr(model, "dense_context", False) and 3 in out_indices:
            c4 = model.embed_dims[3]
            width = c4 + model.ctx_dim
            extras["ctx_norm"] = LayerNorm2d(c4, eps=self.norm_eps)
            extras["h_proj"] = nn.Sequential(nn.Conv2d(c4, width, 1), LayerScale2d(width, 1e-5))
        return extras if len(extras) else None

    def _stage2_norm(self, extras: Optional[nn.Module], norms: Mapping[str, nn.Module]) -> Optional[nn.Module]:
        if "1" in norms:
            return norms["1"]
        return extras["stage2_norm"] if extras is not None and "stage2_norm" in extras else None

    def features(self, model: nn.Module, extras: Optional[nn.Module], x: torch.Tensor,
                 levels: Sequence[int]) -> List[torch.Tensor]:
        return model.forward_dense(x, levels)[0]

    def outputs(self, model: nn.Module, extras: Optional[nn.Module], norms: nn.ModuleDict, x: torch.Tensor,
                levels: Sequence[int], out_indices: Sequence[int]) -> List[torch.Tensor]:
        stage2_norm = self._stage2_norm(extras, norms)
        feats, ctx = model.forward_dense(x, levels, stage2_norm)
        outs = [norms[str(i)](f) if str(i) in norms and i != 1 else f for i, f in zip(out_indices, feats)]
        if extras is not None and "h_proj" in extras:
            j = list(out_indices).index(3)
            outs[j] = outs[j] + extras["h_proj"](extras["ctx_norm"](ctx))
        return outs

    def official_keys(self, state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        own_prefixes = ("extra_norm.4.", "h_proj.")
        model_state, own = super().official_keys({k: v for k, v in state.items() if not k.startswith(own_prefixes)})
        for key, value in state.items():
            if key.startswith("extra_norm.4."):
                own["extras.ctx_norm." + key[len("extra_norm.4."):]] = value
            elif key.startswith("h_proj."):
                own["extras.h_proj." + key[len("h_proj."):]] = value
            elif key.startswith("extra_norm.1."):
                own["extras.stage2_norm." + key[len("extra_norm.1."):]] = value
        return model_state, own


OverLoCK.dense_hook = OverLoCKDenseHook()


# ------------------------------------------------------------------------------------------------ checkpoints

# official key -> ours: (pattern, replacement) applied in order, the first match wins
_TOP_LEVEL = [
    (r"^patch_embed1\.(\d+)\.", lambda m: "stem.conv{}.{}.".format(int(m.group(1)) // 3 + 1,
                                                                 ("conv", "bn")[int(m.group(1)) % 3])),
    (r"^patch_embed([234])\.", lambda m: f"stages.{int(m.group(1)) - 1}.downsample.<cb>"),
    (r"^blocks([1234])\.(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.<rep>"),
    (r"^high_level_proj\.", "stages.4.ctx_proj."),
    (r"^sub_blocks3\.(\d+)\.", r"stages.4.blocks.\1.<mix>"),
    (r"^patch_embedx\.x_proj\.", "stages.5.downsample.x_proj.<cb>"),
    (r"^patch_embedx\.h_proj\.", "stages.5.downsample.ctx_proj.<cb>"),
    (r"^sub_blocks4\.(\d+)\.", r"stages.5.blocks.\1.<mix>"),
    (r"^aux_head\.0\.", "aux_head.bn."), (r"^aux_head\.2\.", "aux_head.fc."),
    (r"^head\.0\.", "conv_head.conv."), (r"^head\.1\.", "conv_head.bn."), (r"^head\.4\.", "head.fc."),
]
_CONV_BN = [(r"^0\.", "conv."), (r"^1\.", "bn.")]  # an official nn.Sequential(conv, BN)
_DRB = [  # inside a dilated reparam block
    (r"^lk_origin\.", "lk.conv."), (r"^origin_bn\.", "lk.bn."),
    (r"^dil_conv_k(\d+)_(\d+)\.", r"lk.branches.k\1_\2.conv."), (r"^dil_bn_k(\d+)_(\d+)\.", r"lk.branches.k\1_\2.bn."),
]
_REP_BLOCK = [
    (r"^proj\.0\.", "ln."), (r"^proj\.1\.", "large_kernel.<drb>"), (r"^proj\.2\.", "large_kernel.bn."),
    (r"^proj\.3\.proj\.1\.", "se.fc1."), (r"^proj\.3\.proj\.3\.", "se.fc2."),
    (r"^proj\.4\.", "mlp.fc1."), (r"^proj\.6\.", "mlp.dwconv."), (r"^proj\.7\.", "mlp.grn."), (r"^proj\.8\.", "mlp.fc2."),
]
_MIX_BLOCK = [
    (r"^fusion\.0\.", "fusion.dw.conv."), (r"^fusion\.1\.", "fusion.dw.bn."), (r"^fusion\.3\.", "fusion.proj."),
    (r"^fusion\.4\.", "fusion.grn."),
    (r"^weight_query\.0\.", "query.conv."), (r"^weight_query\.1\.", "query.bn."),
    (r"^weight_key\.1\.", "key.conv."), (r"^weight_key\.2\.", "key.bn."),
    (r"^dyconv_proj\.0\.", "mix_proj.conv."), (r"^dyconv_proj\.1\.", "mix_proj.bn."),
    (r"^lepe\.0\.", "lepe.<drb>"), (r"^lepe\.1\.", "lepe.bn."),
    (r"^se_layer\.proj\.1\.", "se.fc1."), (r"^se_layer\.proj\.3\.", "se.fc2."),
    (r"^gate\.0\.", "gate.conv."), (r"^gate\.1\.", "gate.bn."),
    (r"^proj\.0\.", "proj.bn."), (r"^proj\.1\.", "proj.conv."),
    (r"^mlp\.0\.", "mlp.fc1."), (r"^mlp\.2\.", "mlp.dwconv."), (r"^mlp\.3\.", "mlp.grn."), (r"^mlp\.4\.", "mlp.fc2."),
]
_COMPILED = {name: [(re.compile(p), r) for p, r in rules]
             for name, rules in (("top", _TOP_LEVEL), ("<cb>", _CONV_BN), ("<drb>", _DRB), ("<rep>", _REP_BLOCK), ("<mix>", _MIX_BLOCK))}


def _apply(rules: str, key: str) -> Optional[str]:
    """``key`` renamed by the first matching rule of ``rules`` (markers like ``<drb>`` rename the rest of the key by
    that rule set, keeping it as it is when nothing matches); None when no rule matches."""
    for pattern, repl in _COMPILED[rules]:
        match = pattern.match(key)
        if match:
            head = match.expand(repl) if isinstance(repl, str) else repl(match)
            tail = key[match.end():]
            if head.endswith(">"):
                marker = head[head.rindex("<"):]
                head, tail = head[:-len(marker)], _apply(marker, tail) or tail
            return head + tail
    return None


def official_to_ours(key: str) -> str:
    """The name in this module of an official OverLoCK key (keys that are already ours come back unchanged)."""
    return _apply("top", key) or key


def _is_official(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("patch_embed1.", "blocks1.", "sub_blocks3.")) for k in state)


def _merge_checkpoint_branches(state: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """A training-form state (our names) for a deploy-form model: merge each dilated reparam block's branches."""
    out = dict(state)
    for name, module in model.named_modules():
        if not isinstance(module, DilatedReparamConv) or f"{name}.bn.weight" not in state:
            continue
        prefix = name + "."

        def bn_of(p: str) -> nn.BatchNorm2d:
            bn = nn.BatchNorm2d(state[p + "weight"].shape[0])
            for attr in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, attr).data = state[p + attr].float()
            bn.eps = 1e-5
            return bn.eval()

        branches = []
        for k, r in DRB_BRANCHES[module.kernel_size]:
            bp = f"{prefix}branches.k{k}_{r}."
            branches.append((state[bp + "conv.weight"].float(), bn_of(bp + "bn."), r))
        weight, bias = merge_dilated_branches(state[prefix + "conv.weight"].float(), None, bn_of(prefix + "bn."),
                                              branches)
        dtype = state[prefix + "conv.weight"].dtype
        for key in [k for k in out if k.startswith(prefix)]:
            del out[key]
        out[prefix + "conv.weight"], out[prefix + "conv.bias"] = weight.detach().to(dtype), bias.detach().to(dtype)
    return out


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: OverLoCK) -> Dict[str, torch.Tensor]:
    """Map a checkpoint onto ``model``: the official layout (``overlock_*_in1k_224.pth`` and ``*_reparam.pth``, bare
    or under ``state_dict``), our own safetensors, or a Lightning/DDP/EMA checkpoint.

    A training-form checkpoint loads into a re-parameterised model (the branches are merged here); the reverse is
    impossible and says so. An auxiliary head of another width (num_classes) is left at its initialisation, as the
    classifier is. Keys that do not fit raise a ValueError naming them.
    """
    state = unwrap_state_dict(state_dict)
    if _is_official(state) or any(k.startswith(("head.0.", "head.4.", "aux_head.0.")) for k in state):
        state = {official_to_ours(k): v for k, v in state.items()}
    for key in ("head.fc.weight", "aux_head.fc.weight"):  # the official classifiers are 1x1 convs
        if key in state and state[key].dim() == 4:
            state[key] = state[key].flatten(1)
    for key in [k for k in state if k.endswith("weight_proj.weight") and state[k].dim() == 4]:
        state[key] = state[key].flatten(1)  # a 1x1 conv over the 49 affinity channels officially
    expected = model.state_dict()
    has_branches = any(".lk.branches." in k for k in state)
    model_branches = any(".lk.branches." in k for k in expected)
    if has_branches and not model_branches:
        state = _merge_checkpoint_branches(state, model)
    elif model_branches and not has_branches and any(".lk.conv.bias" in k for k in state):
        raise ValueError("this is a re-parameterised OverLoCK checkpoint (merged large-kernel convs); load it into "
                         "a *_reparam variant (e.g. vz_overlock_t_reparam) or a model built with deploy=True")
    if not any(k.startswith("aux_head.") for k in expected):  # built without the auxiliary head
        state = {k: v for k, v in state.items() if not k.startswith("aux_head.")}
    for key in [k for k in state if k.startswith("aux_head.fc.")]:
        target = expected.get(key)
        if target is None:
            del state[key]  # num_classes=0: no auxiliary classifier
        elif target.shape != state[key].shape:  # another num_classes: it keeps its initialisation, as the classifier
            logger.info("OverLoCK: auxiliary classifier %s not loaded (checkpoint %s, model %s)", key,
                        tuple(state[key].shape), tuple(target.shape))
            state[key] = target.detach().clone()
    check_keys(state, model, f"OverLoCK ({'training form' if model_branches else 're-parameterised'})",
               first_conv="stem.conv1.conv")
    return state


# ------------------------------------------------------------------------------------------------ registry

def _create_overlock(variant: str, pretrained: bool = False, **kwargs) -> OverLoCK:
    return build_zoo_model(OverLoCK, variant, pretrained,
                           feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)), **kwargs)


_RELEASE = "https://github.com/LMMMEng/OverLoCK/releases/download/v1/"


def _cfg(file: str, crop_pct: float, **kwargs) -> Dict[str, Any]:
    cfg = dict(
        url=_RELEASE + file, num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7),
        min_input_size=(3, MIN_INPUT_SIZE, MIN_INPUT_SIZE), fixed_input_size=False,
        crop_pct=crop_pct, crop_mode="center", interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv="stem.conv1.conv", classifier="head.fc", license="apache-2.0",
        custom_load=True,  # files and URLs load through PretrainedFileMixin.load_pretrained (safe official reader)
        paper_name="OverLoCK: An Overview-first-Look-Closely-next ConvNet with Context-Mixing Dynamic Kernels",
        paper_ids="arXiv:2502.20087", origin_url="https://github.com/LMMMEng/OverLoCK",
    )
    cfg.update(kwargs)
    return cfg


_CROP = dict(xt=0.925, t=0.95, s=0.95, b=0.975)  # the official _cfg per variant (validate.py reads it)
default_cfgs = generate_default_cfgs({
    **{f"vz_overlock_{v}.in1k": _cfg(f"overlock_{v}_in1k_224.pth", c) for v, c in _CROP.items()},
    **{f"vz_overlock_{v}_reparam.in1k": _cfg(f"overlock_{v}_in1k_224_reparam.pth", c,
                                             notes=("re-parameterised (deploy) form; inference only",))
       for v, c in _CROP.items()},
})

# the official factories: widths, blocks per stage, Focus blocks and heads; kernel sizes (17, 15, 13, 7), MLP ratio 4
# (Base/Overview) and 3 (Focus) everywhere
_ARCHS = dict(
    xt=dict(depths=(2, 2, 3, 2), sub_depths=(6, 2), embed_dims=(56, 112, 256, 336), sub_num_heads=(4, 6)),
    t=dict(depths=(4, 4, 6, 2), sub_depths=(12, 2), embed_dims=(64, 128, 256, 512), sub_num_heads=(4, 8)),
    s=dict(depths=(6, 6, 8, 3), sub_depths=(16, 3), embed_dims=(64, 128, 320, 512), sub_num_heads=(8, 16)),
    b=dict(depths=(8, 8, 10, 4), sub_depths=(20, 4), embed_dims=(80, 160, 384, 576), sub_num_heads=(6, 9)),
)


def _overlock(arch: str, pretrained: bool, deploy: bool = False, **kwargs) -> OverLoCK:
    variant = f"vz_overlock_{arch}" + ("_reparam" if deploy else "")
    return _create_overlock(variant, pretrained, **dict(_ARCHS[arch], deploy=deploy, **kwargs))


@register_model
def vz_overlock_xt(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("xt", pretrained, **kwargs)


@register_model
def vz_overlock_t(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("t", pretrained, **kwargs)


@register_model
def vz_overlock_s(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("s", pretrained, **kwargs)


@register_model
def vz_overlock_b(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("b", pretrained, **kwargs)


@register_model
def vz_overlock_xt_reparam(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("xt", pretrained, deploy=True, **kwargs)


@register_model
def vz_overlock_t_reparam(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("t", pretrained, deploy=True, **kwargs)


@register_model
def vz_overlock_s_reparam(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("s", pretrained, deploy=True, **kwargs)


@register_model
def vz_overlock_b_reparam(pretrained: bool = False, **kwargs) -> OverLoCK:
    return _overlock("b", pretrained, deploy=True, **kwargs)
