"""Isotropic NAT / DiNAT and ViT-rpb (Hassani and Shi, arXiv:2209.15001, the isotropic ablations), the official
``classification/isotropic.py`` models.

A plain ViT layout without class token or position embedding: a 16x16 patch embedding (input zero-padded at the
right / bottom to a multiple of 16) with LayerNorm, 12 pre-norm layers at stride 16, a final LayerNorm on every
token, average pool, Linear. The attention of the layers:

* NAT-iso: 7x7 neighbourhood attention, dilation 1 everywhere;
* DiNAT-iso: 7x7, dilation 1 in even layers and 2 in odd ones (k * d = 14, the map side at 224);
* ViT-rpb: global self-attention with a relative-position bias table ``rpb`` (heads, 2L-1, 2L-1), L = 14 (the map
  side at 224), indexed by key minus query offset. (The official module stores that index as a buffer
  ``relative_position_index``, built as query minus key and flipped along both axes, which is key minus query;
  the filter drops it and it is rebuilt here for the map at hand.)

Beyond the official code, which only runs 224x224 (its forward reshapes to a fixed 14x14 map): any input of at least
32 px, non-square included. NA layers handle maps smaller than k * d as the DiNAT module does (``dilation_mode``,
default ``"pad"``: the legacy NATTEN zero padding the weights saw; see ``visionzoo.layers.neighborhood``).
ViT-rpb takes the sub-table of the offsets a smaller map has, and a larger map's table is resized bicubically
(as timm / Swin resize a relative-position table for a new window) before the same indexing.

Keys: the official ``layers.{i}`` are ``blocks.{i}`` here (timm's ViT naming) and ``head`` stays ``head``.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from visionzoo.kernels import window_attention
from visionzoo.layers import Linear, Mlp, NeighborhoodAttention2D, check_image_input, relative_position_index
from visionzoo.layers.neighborhood import check_dilation_mode, check_kernel_and_dilation

from ._checkpoint import PretrainedFileMixin, build_zoo_model, check_keys, unwrap_state_dict
from ._dense import ViTDenseHook
from ._family import Family

__all__ = ["FAMILY", "NATIsotropic", "checkpoint_filter_fn", "rel_pos_table_for"]

MIN_INPUT_SIZE = 32  # 2x2 tokens

# vz_dinat_isotropic_small and vz_nat_isotropic_small tie as the smallest (21,999,736); the dilated one is the
# contract model (it runs both the dilated and the plain NA path).
FAMILY = Family(
    name="dinat_isotropic",
    contract_model="vz_dinat_isotropic_small",
    reduced=dict(embed_dim=32, depth=4, num_heads=2, kernel_size=3),
    kernels=("neighborhood_attention", "window_attention"),
    features="vit",
    vit_stride=16,
    det_seg_no_decay=("rpb", "norm"),
    # no official det/seg recipe: segmentation through mmseg's plain-ViT UperNet (MultiLevelNeck); detection would
    # need a ViTDet simple pyramid, which mmdet 3.3 does not ship (as Sparsifiner)
    tasks=("mmseg",),
    smoke_configs=("mmseg/dinat_isotropic/upernet_dinat-isotropic-small_160k_ade20k-512x512.py",),
)

LayerNorm = nn.LayerNorm


class PatchEmbed(nn.Module):
    """Zero-pad right / bottom to a multiple of the patch, conv p x p stride p, LayerNorm; (B, H/p, W/p, C) out."""

    def __init__(self, in_chans: int, dim: int, patch_size: int = 16):
        super().__init__()
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans, MIN_INPUT_SIZE, self.proj.weight.dtype, "isotropic NAT/DiNAT/ViT-rpb")
        p = self.patch_size
        pad_b, pad_r = -x.shape[2] % p, -x.shape[3] % p
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


def rel_pos_table_for(table: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The (heads, 2h-1, 2w-1) table of the offsets an ``height x width`` map has, from a (heads, 2L-1, 2L'-1)
    table: its centre when the map fits (exact at the training size), bicubically enlarged first along an axis the
    map exceeds."""
    L_h, L_w = (table.shape[1] + 1) // 2, (table.shape[2] + 1) // 2
    th, tw = max(height, L_h), max(width, L_w)
    if (th, tw) != (L_h, L_w):
        table = F.interpolate(table[None].float(), size=(2 * th - 1, 2 * tw - 1), mode="bicubic",
                              align_corners=False)[0].to(table.dtype)
    return table[:, th - height: th + height - 1, tw - width: tw + width - 1]


class GlobalAttentionRPB(nn.Module):
    """ViT-rpb's ``MHSARPB``: global multi-head self-attention plus a relative-position bias, on a (B, H, W, C) map
    (one window the size of the map, on the shared window-attention kernel)."""

    def __init__(self, dim: int, num_heads: int, table_size: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be a multiple of num_heads {num_heads}")
        if attn_drop > 0:
            raise ValueError("GlobalAttentionRPB: attention dropout is not supported (the official models use 0)")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.table_size = table_size
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * table_size - 1, 2 * table_size - 1))
        trunc_normal_(self.rpb, std=0.02)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).view(B, H, W, 3, self.num_heads, self.head_dim).unbind(3)
        index = relative_position_index((H, W)).to(x.device)
        bias = rel_pos_table_for(self.rpb, H, W).flatten(1)[:, index]  # (heads, N, N): [query, key]
        x = window_attention(q, k, v, (H, W), "block", bias=bias, scale=self.scale)
        return self.proj_drop(self.proj(x.reshape(B, H, W, C)))


class IsotropicBlock(nn.Module):
    """Pre-norm layer (the official ``NATransformerLayer`` / ``VisionTransformerLayer``): attention, then an MLP."""

    def __init__(self, attn: nn.Module, dim: int, mlp_ratio: float, drop_path: float, proj_drop: float):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = attn
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class QuarterBlocksHook(ViTDenseHook):
    """The outputs of the blocks ending each quarter of the depth (2, 5, 8, 11 of 12, as mmseg's ViT-B UperNet takes
    them) for a neck that builds the pyramid. The official repository has no det/seg models for the isotropic
    variants; this is what ``VisionZooBackbone`` returns for them."""

    def __init__(self):
        super().__init__(block_indices=(), norm_eps=1e-5)
        self.num_outputs = 4

    def levels(self, model_name, feature_info):
        depth = len(feature_info)
        if depth < 4:
            raise ValueError(f"{model_name} has {depth} blocks; its det/seg backbone takes 4 (one per quarter)")
        return [depth * (i + 1) // 4 - 1 for i in range(4)]


class NATIsotropic(PretrainedFileMixin, nn.Module):
    """Isotropic NAT / DiNAT / ViT-rpb (module docstring).

    Args:
        embed_dim, depth, num_heads, mlp_ratio: the transformer.
        attention: ``"na"`` (neighbourhood attention) or ``"global"`` (ViT-rpb).
        kernel_size: NA neighbourhood side; dilation: the odd layers' dilation (even layers use 1).
        img_size, patch_size: the training size and patch; ViT-rpb's table covers (img_size / patch_size) tokens.
        dilation_mode: what an NA layer does on a map smaller than k * d (``"pad"``, ``"adapt"``, ``"strict"``).
        drop_rate: dropout before the classifier; proj_drop_rate: in the attention projection and the MLP (the
            official ``drop_rate``); attn_drop_rate: on NA's attention weights; drop_path_rate: stochastic depth.
    """

    dense_hook = QuarterBlocksHook()

    def __init__(
            self,
            embed_dim: int = 384,
            depth: int = 12,
            num_heads: int = 12,
            mlp_ratio: float = 4.0,
            attention: str = "na",
            kernel_size: int = 7,
            dilation: int = 1,
            img_size: int = 224,
            patch_size: int = 16,
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
        if attention not in ("na", "global"):
            raise ValueError(f"attention must be 'na' (NAT/DiNAT) or 'global' (ViT-rpb), got {attention!r}")
        self.kernel_size, self.dilation = check_kernel_and_dilation(kernel_size, dilation, "NATIsotropic")
        self.dilation_mode = check_dilation_mode(dilation_mode)
        self.attention = attention
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = _check_pool(global_pool)
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = embed_dim
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # the official linspace(0, rate)
        blocks = []
        for i in range(depth):
            if attention == "na":
                attn = NeighborhoodAttention2D(embed_dim, num_heads, self.kernel_size, 1 if i % 2 == 0 else self.dilation,
                                               qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop_rate,
                                               proj_drop=proj_drop_rate, dilation_mode=dilation_mode)
            else:
                attn = GlobalAttentionRPB(embed_dim, num_heads, img_size // patch_size, qkv_bias=qkv_bias,
                                          qk_scale=qk_scale, attn_drop=attn_drop_rate, proj_drop=proj_drop_rate)
            blocks.append(IsotropicBlock(attn, embed_dim, mlp_ratio, rates[i], proj_drop_rate))
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]
        self.norm = LayerNorm(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
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
        return dict(stem=r"^patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = _check_pool(global_pool)
        device = self.norm.weight.device if isinstance(self.norm, nn.LayerNorm) else None
        self.head = Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()

    def _blocks(self, x: torch.Tensor, blocks) -> torch.Tensor:
        for block in blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The output map of each block (NCHW at stride 16; ``norm=True`` applies the final LayerNorm to every
        one), plus the final tokens (B, N, C) after the final norm."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        intermediates = []
        x = self.patch_embed(x)
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        for i, block in enumerate(blocks):
            x = self._blocks(x, [block])
            if i in take_indices:
                y = self.norm(x) if norm else x
                intermediates.append(y if output_fmt == "NHWC" else y.permute(0, 3, 1, 2))
        if intermediates_only:
            return intermediates
        return self.norm(x).flatten(1, 2), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks after the last index in ``indices``; the classifier goes (pooling is kept)."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, C) after the final LayerNorm (row-major over the stride-16 map)."""
        return self.norm(self._blocks(self.patch_embed(x), self.blocks)).flatten(1, 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_pool(pool: str) -> str:
    if pool not in ("avg", ""):
        raise ValueError(f"global_pool must be 'avg' or '' (no pooling), got {pool!r}")
    return pool


_RULES = (
    (re.compile(r"^layers\.(\d+)\.(.+)$"), lambda m: f"blocks.{m[1]}.{m[2]}"),
)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: NATIsotropic) -> Dict[str, torch.Tensor]:
    """Map the official isotropic checkpoints (``layers.{i}``, ViT-rpb's ``relative_position_index`` buffers, which
    are rebuilt here) or ours / Lightning / DDP / EMA ones onto ``model``. A ViT-rpb table trained for another map
    size is resized (bicubic); NA tables of another kernel size too."""
    state = unwrap_state_dict(state_dict)
    out = {}
    for key, value in state.items():
        if key.endswith("attn.relative_position_index"):
            continue
        for pattern, rename in _RULES:
            match = pattern.match(key)
            if match:
                key = rename(match)
                break
        out[key] = value
    expected = model.state_dict()
    for key, value in list(out.items()):
        target = expected.get(key)
        if target is not None and key.endswith("attn.rpb") and value.shape != target.shape \
                and value.shape[0] == target.shape[0]:
            out[key] = F.interpolate(value[None].float(), size=tuple(target.shape[1:]), mode="bicubic",
                                     align_corners=False)[0].to(value.dtype)
    check_keys(out, model, f"NATIsotropic ({model.attention})", classifier="head", first_conv="patch_embed.proj")
    return out


def _create(variant: str, pretrained: bool, **kwargs) -> NATIsotropic:
    out_indices = kwargs.pop("out_indices", 3)
    return build_zoo_model(NATIsotropic, variant, pretrained,
                           feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


_URL = "https://shi-labs.com/projects/dinat/checkpoints/isotropic"


def _cfg(url: str, **kwargs) -> Dict[str, Any]:
    """Official weights; eval transform as the hierarchical models (timm's defaults in the official validate.py)."""
    cfg = dict(
        url=url, num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7),
        min_input_size=(3, MIN_INPUT_SIZE, MIN_INPUT_SIZE), fixed_input_size=False, interpolation="bicubic",
        crop_pct=0.875, crop_mode="center", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv="patch_embed.proj", classifier="head", license="mit", custom_load=True,
        paper_name="Dilated Neighborhood Attention Transformer", paper_ids="arXiv:2209.15001",
        origin_url="https://github.com/SHI-Labs/Neighborhood-Attention-Transformer",
        notes=("official weights (raw state dict), mapped by checkpoint_filter_fn",),
    )
    cfg.update(kwargs)
    return cfg


default_cfgs = generate_default_cfgs({
    "vz_nat_isotropic_small.in1k": _cfg(f"{_URL}/nat_isotropic_small_in1k_224.pth"),
    "vz_dinat_isotropic_small.in1k": _cfg(f"{_URL}/dinat_isotropic_small_in1k_224.pth"),
    "vz_vitrpb_small.in1k": _cfg(f"{_URL}/vitrpb_small_in1k_224.pth"),
    "vz_nat_isotropic_base.in1k": _cfg(f"{_URL}/nat_isotropic_base_in1k_224.pth"),
    "vz_dinat_isotropic_base.in1k": _cfg(f"{_URL}/dinat_isotropic_base_in1k_224.pth"),
    "vz_vitrpb_base.in1k": _cfg(f"{_URL}/vitrpb_base_in1k_224.pth"),
})

# official factories (classification/isotropic.py): small 384 / 12 heads, base 768 / 24 heads, 12 layers, MLP 4
_SMALL = dict(embed_dim=384, depth=12, num_heads=12, mlp_ratio=4.0)
_BASE = dict(embed_dim=768, depth=12, num_heads=24, mlp_ratio=4.0)


@register_model
def vz_nat_isotropic_small(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create("vz_nat_isotropic_small", pretrained, **dict(dict(_SMALL, kernel_size=7, dilation=1), **kwargs))


@register_model
def vz_dinat_isotropic_small(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create("vz_dinat_isotropic_small", pretrained, **dict(dict(_SMALL, kernel_size=7, dilation=2), **kwargs))


@register_model
def vz_vitrpb_small(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create("vz_vitrpb_small", pretrained, **dict(dict(_SMALL, attention="global"), **kwargs))


@register_model
def vz_nat_isotropic_base(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create("vz_nat_isotropic_base", pretrained, **dict(dict(_BASE, kernel_size=7, dilation=1), **kwargs))


@register_model
def vz_dinat_isotropic_base(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create("vz_dinat_isotropic_base", pretrained, **dict(dict(_BASE, kernel_size=7, dilation=2), **kwargs))


@register_model
def vz_vitrpb_base(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _create("vz_vitrpb_base", pretrained, **dict(dict(_BASE, attention="global"), **kwargs))
