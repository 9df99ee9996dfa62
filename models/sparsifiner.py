"""Sparsifiner: Learning Sparse Instance-Dependent Attention for Efficient Vision Transformers (Wei et al., CVPR 2023,
arXiv:2303.13755), on DeiT backbones.

Architecture as lim142857/Sparsifiner (``src/models/sparsifiner.py``, default config
``sparsifiner_default_config.yaml``): a DeiT whose every attention layer has a *connectivity predictor*
(``attn.mask_predictor``) choosing, per image, head and patch query, which keys the query attends to. The predictor,
step by step as the official ``MaskPredictor`` (every quirk the weights depend on is kept):

1. q and k of each head (head_dim) are projected to ``reduced_c = head_dim // reduce_c_factor`` by two Linears shared
   across heads (``proj_c_q``, ``proj_c_k``).
2. The keys are compressed along the token axis by a learned (N, n_down) matrix ``proj_n``,
   ``n_down = N // reduce_n_factor`` (N counts the cls token: 197 // 6 = 32 for DeiT at 224).
3. Low-rank scores ``(q_c @ k_down) * num_heads ** -0.5`` (the official scale is heads^-0.5, not head_dim^-0.5),
   the cls query's row dropped, softmax over n_down: the "basis coefficients".
4. Each patch query keeps its ``basis_topk`` (8) largest coefficients (``topk(sorted=False)`` scattered into zeros).
5. The up-projection basis is ``|proj_back_n|ᵀ`` thresholded at ``basis_threshold`` (2e-2; ``nn.Threshold``, so
   values <= the threshold become 0); approximate attention = coefficients @ basis, (B, heads, N - 1, N).
6. Connectivity: ``topk(ceil(attn_keep_rate * N), sorted=False)`` over each row of the approximate attention; the
   selection is detached; the cls query keeps every key.

The attention then runs on ``visionzoo.kernels.sparse_attention`` with the top-k indices and ``dense_queries=1``
(the cls row): cost proportional to the kept keys. The official code computes the full N x N scores, masks them
with -inf and softmaxes; with distinct keys per row (top-k) the two are the same function.

**Ties.** Step 5 zeroes most of the basis, so many keys score exactly 0 (and thresholded values repeat), and the
top-k boundary often falls inside a run of equal scores. Which of the tied keys is kept is decided by
``torch.topk``'s tie-breaking, so the scores are computed in the official order (full low-rank scores, then the cls
row sliced off; the same matmul shapes and layouts) and selected with ``torch.topk(sorted=False)`` on the same
(B, heads, N - 1, N) layout: tied keys then break the same way as in the official code on the same torch build.
Exact ties only: the Linears run on oneDNN on CPU (``visionzoo.layers.Linear``) and round differently from the
official MKL products, so two keys whose scores differ by rounding can swap across the boundary (logits ~5e-4 apart).

**Training phases** (the official default schedule): ``set_attn_recon(True)`` is the official ``USE_ATTN_RECON``
phase: in training mode the attention is dense (the predictor does not change the network's output) and the
approximate attention uses the raw basis ``proj_back_nᵀ`` (no abs, no threshold, no top-k of the coefficients), to be
fitted to the teacher's attention. Otherwise training runs the sparse attention exactly as evaluation does. The
selection is detached, so the logits do not depend on the predictor: in training mode one element of each trainable
predictor parameter enters each block's output with weight exactly 0, so every parameter is in the autograd graph
(DDP without ``find_unused_parameters`` needs this) while the logits' backward never runs through the predictor; the
predictor's real gradients come from the losses on ``forward_train``'s ``"attn"``.

**Other resolutions** (beyond the official code, whose patch embedding asserts the training size and whose
``proj_n`` / ``proj_back_n`` have one row per training token): for any input of at least 32 x 32 (non-square
included; sizes that are not multiples of 16 drop the last partial patch row/column, as a stride-16 conv does), the
position embedding and the rows of ``proj_n`` / ``proj_back_n`` are resampled from the training grid to the input's
patch grid (timm's ``resample_abs_pos_embed``, bicubic, the cls row kept: timm's ``dynamic_img_size`` convention).
``proj_n``'s patch rows are also scaled by (training patches / input patches) so that each compressed key stays a
weighted sum of the same magnitude; ``proj_back_n``'s rows are per-key scores and are not rescaled. n_down and
``basis_topk`` stay as trained; the budget is ``ceil(attn_keep_rate * N)`` of the input's N. At the training size
nothing is resampled and the model is exactly the official one.

Weights: no Sparsifiner weights were published. The official training starts from DeiT (Facebook's
``deit_small_patch16_224-cd65a155.pth``, the same tensors as timm's ``deit_small_patch16_224.fb_in1k``), whose keys
are this model's keys without the predictors; ``checkpoint_filter_fn`` loads such a backbone and keeps the model's
freshly initialised predictors (logged). The DeiT-B variant is built by the same construction (DeiT-B backbone,
default predictor config): the official code has no configuration for it.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, resample_abs_pos_embed, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from visionzoo.kernels import sparse_attention
from visionzoo.layers import Linear, Mlp, check_image_input

from ._checkpoint import PretrainedFileMixin, build_zoo_model, check_keys, unwrap_state_dict
from ._dense import ViTDenseHook
from ._family import Family
from ._official import OfficialCode, import_from_checkout

__all__ = ["FAMILY", "Sparsifiner", "checkpoint_filter_fn"]

logger = logging.getLogger("visionzoo")

MIN_INPUT_SIZE = 32  # a 2 x 2 patch grid


def _official_sparsifiner(checkout: str, name: str, img_size: int) -> nn.Module:
    """The official ``src/models/sparsifiner.py`` Sparsifiner on DeiT-S with the repository's default config
    (``experiments-results-analysis/experiments/sparsifiner_default_config.yaml``; yacs), built for ``img_size``
    (its token down-projection has one size); the attention computed densely under the mask, as it is there."""
    src = os.path.join(checkout, "src")
    config = import_from_checkout(src, "config/default_config.py", "lim142857/Sparsifiner", package="config")
    module = import_from_checkout(src, "models/sparsifiner.py", "lim142857/Sparsifiner", package="models")
    cfg = config.get_cfg_defaults()
    cfg.merge_from_file(os.path.join(checkout, "experiments-results-analysis", "experiments",
                                     "sparsifiner_default_config.yaml"))
    cfg.freeze()
    keep = cfg.SPAR.ATTN_KEEP_RATE
    return module.Sparsifiner(img_size=img_size, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4,
                              qkv_bias=True, distill=True, attn_keep_rate_list=[keep] * 12,
                              token_keep_rate_list=[1.0] * 12, token_pruning_loc_indicator=[False] * 12,
                              reduce_n_factor=cfg.SPAR.REDUCE_N_FACTOR, reduce_c_factor=cfg.SPAR.REDUCE_C_FACTOR,
                              share_inout_proj=False, cfg=cfg)


FAMILY = Family(
    name="sparsifiner",
    contract_model="vz_sparsifiner_deit_small",
    # 4 narrow one-head blocks, trained at 64 x 64 (N = 17, n_down = 17 // 2 = 8, top-4 coefficients: every step of
    # the predictor still selects); 96 x 96 and other test sizes take the resampling path
    reduced=dict(embed_dim=32, depth=4, num_heads=1, img_size=64, reduce_n_factor=2, basis_topk=4),
    kernels=("sparse_attention",),
    features="vit",
    vit_stride=16,
    # LV-ViT-S: inference and parity only; its recipe needs token-labeling targets (per-patch label maps from a
    # NFNet-F6 annotator) that cannot be produced here, so it has no recipe
    deploy_only=("vz_sparsifiner_lvvit_small",),
    det_seg_no_decay=("norm", "pos_embed", "cls_token"),  # mmseg's ViT-UperNet recipe
    smoke_configs=("mmseg/sparsifiner/upernet_sparsifiner-deit-small_160k_ade20k-512x512.py",),
    # a plain ViT: segmentation through mmseg's MultiLevelNeck; no detection (mmdet 3.3 has no ViTDet simple pyramid)
    tasks=("mmseg",),
    official=OfficialCode("lim142857/Sparsifiner", ("vz_sparsifiner_deit_small",), _official_sparsifiner,
                          logits_key="x", zoo_kwargs=lambda img_size: dict(img_size=img_size)),
)


def _grid(img_size: Union[int, Sequence[int]], patch_size: int) -> Tuple[int, int]:
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return h // patch_size, w // patch_size


def resample_token_rows(rows: torch.Tensor, old_grid: Tuple[int, int], new_grid: Tuple[int, int],
                        rescale: bool = False) -> torch.Tensor:
    """(1 + old_h * old_w, C) per-token rows (cls row first) resampled to a new patch grid: the cls row kept, the
    patch rows interpolated as an image (timm's ``resample_abs_pos_embed``, bicubic). ``rescale`` multiplies the
    patch rows by old / new patch count (a token-mixing weight keeps its total mass)."""
    if tuple(old_grid) == tuple(new_grid):
        return rows
    out = resample_abs_pos_embed(rows.unsqueeze(0), list(new_grid), list(old_grid), num_prefix_tokens=1,
                                 verbose=False).squeeze(0)
    if rescale:
        ratio = (old_grid[0] * old_grid[1]) / (new_grid[0] * new_grid[1])
        out = torch.cat([out[:1], out[1:] * ratio], dim=0)
    return out


class MaskPredictor(nn.Module):
    """The official connectivity predictor (``MaskPredictor``): see the module docstring, steps 1-6.

    ``forward(q, k, grid)`` takes (B, heads, N, head_dim) views of q and k and returns (index, approx): the selected
    keys (B, heads, N - 1, K), or None in the attention-reconstruction training phase (dense attention), and the
    approximate attention (B, heads, N - 1, N) the losses read.
    """

    def __init__(self, dim: int, num_heads: int, num_tokens: int, grid_size: Tuple[int, int],
                 attn_keep_rate: float = 0.25, reduce_n_factor: int = 6, reduce_c_factor: int = 2,
                 basis_threshold: float = 2e-2, basis_topk: int = 8):
        super().__init__()
        head_dim = dim // num_heads
        self.num_heads = num_heads
        self.num_tokens = num_tokens
        self.grid_size = tuple(grid_size)
        self.reduced_c = head_dim // reduce_c_factor
        self.reduced_n = int(num_tokens // reduce_n_factor)
        if not 1 <= basis_topk <= self.reduced_n:
            raise ValueError(f"basis_topk={basis_topk} must be in [1, n_down={self.reduced_n}] "
                             f"(n_down = {num_tokens} tokens // reduce_n_factor {reduce_n_factor})")
        if not 0 < attn_keep_rate <= 1:
            raise ValueError(f"attn_keep_rate must be in (0, 1], got {attn_keep_rate}")
        self.scale = num_heads ** -0.5  # official quirk: heads^-0.5, not head_dim^-0.5
        self.attn_keep_rate = attn_keep_rate
        self.basis_threshold = basis_threshold
        self.basis_topk = basis_topk
        self.attn_recon = False
        self.proj_c_q = Linear(head_dim, self.reduced_c)
        self.proj_c_k = Linear(head_dim, self.reduced_c)
        self.proj_n = nn.Parameter(torch.zeros(num_tokens, self.reduced_n))
        self.proj_back_n = nn.Parameter(torch.zeros(num_tokens, self.reduced_n))
        trunc_normal_(self.proj_n, std=.02)
        trunc_normal_(self.proj_back_n, std=.02)

    def budget(self, num_tokens: int) -> int:
        """Keys kept per patch query at ``num_tokens`` tokens (cls included): ceil(attn_keep_rate * N)."""
        return min(num_tokens, math.ceil(self.attn_keep_rate * num_tokens))

    def forward(self, q: torch.Tensor, k: torch.Tensor,
                grid: Tuple[int, int]) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        N = q.shape[2]
        proj_n = resample_token_rows(self.proj_n, self.grid_size, grid, rescale=True)
        proj_back_n = resample_token_rows(self.proj_back_n, self.grid_size, grid)
        q, k = self.proj_c_q(q), self.proj_c_k(k)  # (B, H, N, c)
        k = k.permute(0, 1, 3, 2) @ proj_n  # (B, H, c, n_down)
        recon = self.training and self.attn_recon
        basis = proj_back_n.permute(1, 0)
        if not recon:
            basis = F.threshold(basis.abs(), self.basis_threshold, 0.0)  # nn.Threshold: <= threshold -> 0
        # the official order (full scores, then the cls row sliced off) so that ties break as officially
        coef = ((q @ k) * self.scale)[..., 1:, :].softmax(dim=-1)  # (B, H, N - 1, n_down)
        if recon:
            return None, coef @ basis
        top, top_idx = coef.topk(self.basis_topk, sorted=False)
        coef = torch.zeros_like(coef).scatter(-1, top_idx, top)
        approx = coef @ basis  # (B, H, N - 1, N)
        index = approx.detach().topk(self.budget(N), sorted=False)[1]
        return index, approx


class SparsifinerAttention(nn.Module):
    """DeiT attention (fused qkv, head_dim^-0.5) whose patch queries attend to the predictor's keys only."""

    def __init__(self, dim: int, num_heads: int, grid_size: Tuple[int, int], qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_impl: str = "sparse", **predictor_kwargs):
        super().__init__()
        self.attn_impl = attn_impl
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.mask_predictor = MaskPredictor(dim, num_heads, grid_size[0] * grid_size[1] + 1, grid_size,
                                            **predictor_kwargs)

    def forward(self, x: torch.Tensor, grid: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).unbind(2)  # (B, N, H, D) views
        index, approx = self.mask_predictor(q.transpose(1, 2), k.transpose(1, 2), grid)
        if index is None:  # attention-reconstruction phase: dense attention, as the official code
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 scale=self.scale).transpose(1, 2)
        elif self.attn_impl == "masked_dense":
            # the official formulation: full scores, the selection as a boolean mask (cls row all ones); on a GPU
            # SDPA's tensor-core kernels beat the sparse op above a few percent keep rate (kernels/README.md)
            mask = torch.zeros(B, self.num_heads, N - 1, N, dtype=torch.bool, device=x.device).scatter_(-1, index, True)
            mask = torch.cat([mask.new_ones(B, self.num_heads, 1, N), mask], dim=2)
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 attn_mask=mask, scale=self.scale).transpose(1, 2)
        else:
            out = sparse_attention(q, k, v, index, scale=self.scale, dense_queries=1)
        out = self.proj_drop(self.proj(out.reshape(B, N, C)))
        if self.training and torch.is_grad_enabled():
            # weight exactly 0: keeps every trainable predictor parameter in the autograd graph of the logits (see
            # the module docstring). One element of each parameter, not the approximate attention: the logits'
            # backward then never runs through the predictor (~100 ms of GEMMs on zeros per DeiT-S step at 224)
            link = [p.view(-1)[:1] for p in self.mask_predictor.parameters() if p.requires_grad]
            if link:
                out = out + torch.cat(link).sum() * 0.0
        return out, approx


class Block(nn.Module):
    """Pre-norm block; ``skip_lam`` divides both residual branches (LV-ViT's ``skip_lam``, 1 for DeiT)."""

    def __init__(self, dim: int, num_heads: int, grid_size: Tuple[int, int], mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-6,
                 skip_lam: float = 1.0, **predictor_kwargs):
        super().__init__()
        self.skip_lam = skip_lam
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SparsifinerAttention(dim, num_heads, grid_size, qkv_bias=qkv_bias, proj_drop=drop,
                                         **predictor_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: torch.Tensor, grid: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        y, approx = self.attn(self.norm1(x), grid)
        if self.skip_lam != 1.0:
            x = x + self.drop_path(y) / self.skip_lam
            return x + self.drop_path(self.mlp(self.norm2(x))) / self.skip_lam, approx
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, approx


class PatchEmbed(nn.Module):
    """Stride-``patch`` conv, flattened to tokens; inputs that are not whole patches drop the partial patches."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class ConvStem(nn.Module):
    """LV-ViT's ``p_emb='4_2'`` patch embedding: conv 7x7/2 (64, no bias)-BN-ReLU, two conv 3x3 (64)-BN-ReLU, then a
    (patch/2) x (patch/2) conv with stride patch/2 to ``embed_dim``: stride ``patch`` overall."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.proj = nn.Conv2d(width, embed_dim, kernel_size=patch_size // 2, stride=patch_size // 2)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class SparsifinerDenseHook(ViTDenseHook):
    """mmseg's ViT-UperNet outputs (blocks 2, 5, 8, 11 of 12, ``upernet_vit-b16_ln_mln.py``); a model of another
    depth takes the blocks at the same relative depths (e.g. 0, 1, 2, 3 of 4 in the reduced test configuration)."""

    def levels(self, model_name: str, feature_info: Sequence[Mapping]) -> List[int]:
        depth = len(feature_info)
        if depth == 12:
            return super().levels(model_name, feature_info)
        return [max(0, round((i + 1) * depth / 12) - 1) for i in self.block_indices]


class Sparsifiner(PretrainedFileMixin, nn.Module):
    """Sparsifiner on a DeiT backbone (cls token, learned absolute position embedding, 12 pre-norm blocks).

    Args beyond timm's VisionTransformer: ``attn_keep_rate`` (0.25), ``reduce_n_factor`` (6), ``reduce_c_factor``
    (2), ``basis_threshold`` (2e-2), ``basis_topk`` (8): the official default config's ``SPAR`` values.
    ``attn_impl``: ``"sparse"`` (``visionzoo.kernels.sparse_attention``, cost N x K) or ``"masked_dense"`` (full
    N x N scores through SDPA with the selection as a boolean mask: the official formulation, the faster one on a
    GPU above a few percent keep rate). ``attn_recon``: start in the attention-reconstruction phase
    (``set_attn_recon``). LV-ViT: ``stem="conv4_2"``, ``norm_eps``, ``skip_lam``, ``aux_head``.
    ``img_size`` is the training size: it fixes the rows of ``pos_embed``, ``proj_n`` and ``proj_back_n``
    (other input sizes resample them on the fly).
    """

    dense_hook = SparsifinerDenseHook(block_indices=(2, 5, 8, 11))

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "token",
            embed_dim: int = 384,
            depth: int = 12,
            num_heads: int = 6,
            mlp_ratio: float = 4.0,
            qkv_bias: bool = True,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            attn_keep_rate: float = 0.25,
            reduce_n_factor: int = 6,
            reduce_c_factor: int = 2,
            basis_threshold: float = 2e-2,
            basis_topk: int = 8,
            stem: str = "patch",
            norm_eps: float = 1e-6,
            skip_lam: float = 1.0,
            aux_head: bool = False,
            attn_recon: bool = False,
            attn_impl: str = "sparse",
    ):
        super().__init__()
        if attn_impl not in ("sparse", "masked_dense"):
            raise ValueError(f"attn_impl must be 'sparse' (the sparse_attention op) or 'masked_dense' (full scores "
                             f"with the selection as a mask, the official formulation), got {attn_impl!r}")
        if stem not in ("patch", "conv4_2"):
            raise ValueError(f"stem must be 'patch' (DeiT) or 'conv4_2' (LV-ViT), got {stem!r}")
        self.num_classes = num_classes
        self.global_pool = self._check_pool(global_pool)
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.patch_size = patch_size
        self.grid_size = _grid(img_size, patch_size)
        self.grad_checkpointing = False

        self.patch_embed = (PatchEmbed if stem == "patch" else ConvStem)(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1] + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth decay rule
        predictor = dict(attn_impl=attn_impl, attn_keep_rate=attn_keep_rate, reduce_n_factor=reduce_n_factor,
                         reduce_c_factor=reduce_c_factor, basis_threshold=basis_threshold, basis_topk=basis_topk)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, self.grid_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                  drop_path=dpr[i], norm_eps=norm_eps, skip_lam=skip_lam, **predictor)
            for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.has_aux_head = aux_head
        if aux_head:  # LV-ViT's token-labeling head (``return_dense``)
            self.aux_head = Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}")
                             for i in range(depth)]

        trunc_normal_(self.pos_embed, std=.02)
        trunc_normal_(self.cls_token, std=.02)
        self.apply(self._init_weights)
        self.set_attn_recon(attn_recon)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @staticmethod
    def _check_pool(global_pool: str) -> str:
        if global_pool not in ("token", "avg", ""):
            raise ValueError(f"global_pool must be 'token', 'avg' or '', got {global_pool!r}")
        return global_pool

    # ---- timm API -------------------------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {"pos_embed", "cls_token"}  # the official model's

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r"^cls_token|pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = self._check_pool(global_pool)
        self.head = Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if self.has_aux_head:
            self.aux_head = Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    @torch.no_grad()
    def set_input_size(self, img_size: Union[int, Tuple[int, int]]) -> None:
        """timm's ``set_input_size``: make ``img_size`` the model's own size by resampling ``pos_embed`` and every
        predictor's ``proj_n`` / ``proj_back_n`` in place, exactly as the forward resamples them on the fly (so the
        outputs at that size do not change; n_down stays as trained). Unlike building the model at another
        ``img_size``, which is another architecture (the official construction ties n_down to N)."""
        grid = _grid(img_size, self.patch_size)
        if min(grid) < 1:
            raise ValueError(f"img_size {img_size} is smaller than one {self.patch_size}-pixel patch")
        old = self.grid_size
        self.pos_embed = nn.Parameter(resample_token_rows(self.pos_embed[0], old, grid).unsqueeze(0))
        for block in self.blocks:
            pred = block.attn.mask_predictor
            pred.proj_n = nn.Parameter(resample_token_rows(pred.proj_n, old, grid, rescale=True))
            pred.proj_back_n = nn.Parameter(resample_token_rows(pred.proj_back_n, old, grid))
            pred.grid_size, pred.num_tokens = grid, grid[0] * grid[1] + 1
        self.grid_size = grid

    def set_attn_recon(self, enable: bool = True) -> None:
        """The official attention-reconstruction phase (``USE_ATTN_RECON``): dense attention in training mode and the
        raw-basis approximate attention; evaluation is unchanged (sparse)."""
        for block in self.blocks:
            block.attn.mask_predictor.attn_recon = enable

    # ---- forward --------------------------------------------------------------------------------------------

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        check_image_input(x, self.in_chans, MIN_INPUT_SIZE, self.patch_embed.proj.weight.dtype, type(self).__name__)
        x, grid = self.patch_embed(x)
        pos = resample_token_rows(self.pos_embed[0], self.grid_size, grid).unsqueeze(0)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + pos
        return self.pos_drop(x), grid

    def _run_block(self, block: Block, x: torch.Tensor, grid: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(block, x, grid, use_reentrant=False)
        return block(x, grid)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            return_prefix_tokens: bool = False,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm's ViT convention: block outputs without the cls token, as NCHW (or NHWC / NLC) maps."""
        if output_fmt not in ("NCHW", "NHWC", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW', 'NHWC' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        B = x.shape[0]
        x, grid = self._embed(x)
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            x, _ = self._run_block(block, x, grid)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        prefix = [y[:, :1] for y in intermediates]
        intermediates = [y[:, 1:] for y in intermediates]
        if output_fmt != "NLC":
            intermediates = [y.reshape(B, grid[0], grid[1], -1) for y in intermediates]
            if output_fmt == "NCHW":
                intermediates = [y.permute(0, 3, 1, 2).contiguous() for y in intermediates]
        if return_prefix_tokens:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)  # pooling kept: the pruned model returns pooled features
        return take_indices

    def _forward_blocks(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        x, grid = self._embed(x)
        approx = []
        for block in self.blocks:
            x, a = self._run_block(block, x, grid)
            approx.append(a)
        return self.norm(x), approx

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_blocks(x)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.forward_features(x)
        logits = self.forward_head(feats)
        if self.has_aux_head and self.num_classes > 0 and self.global_pool == "token" and not self.training:
            # LV-ViT's evaluation output: cls logits + 0.5 * the max over the patch tokens' token-labeling logits
            logits = logits + 0.5 * self.aux_head(feats[:, self.num_prefix_tokens:]).max(1)[0]
        return logits

    def forward_train(self, x: torch.Tensor) -> Dict[str, Any]:
        """``logits`` (the cls head's); ``tokens``: the last layer's normalised patch tokens (B, N - 1, C) (the
        official token distillation target); ``attn``: each layer's approximate attention (B, heads, N - 1, N) (the
        official attention-reconstruction loss input); LV-ViT also ``aux_logits`` (B, N - 1, classes)."""
        feats, approx = self._forward_blocks(x)
        tokens = feats[:, self.num_prefix_tokens:]
        out = {"logits": self.forward_head(feats), "tokens": tokens, "attn": approx}
        if self.has_aux_head:
            out["aux_logits"] = self.aux_head(tokens)
        return out


def deit_teacher_outputs(teacher: nn.Module, x: torch.Tensor) -> Dict[str, Any]:
    """The official DeiT teacher's outputs (``models/vit.py`` with ``AS_TEACHER`` / ``RETURN_ATTN``) from a timm
    ``VisionTransformer`` (``deit_*_patch16_224``): ``logits`` (cls head), ``tokens`` (final-norm patch tokens) and
    ``attn``: every layer's softmax attention without the cls query's row, (B, heads, N - 1, N), the target of the
    attention-reconstruction loss. timm's blocks use fused attention, which never forms the maps, so the blocks are
    run here with q.kᵀ computed explicitly (the same maths as timm's non-fused path). Use it as the recipes'
    ``teacher.adapter: visionzoo.models.sparsifiner.deit_teacher_outputs``."""
    x = teacher.patch_embed(x)
    x = teacher._pos_embed(x)
    x = teacher.norm_pre(x)
    maps = []
    for block in teacher.blocks:
        attn = block.attn
        y = block.norm1(x)
        B, N, C = y.shape
        q, k, v = attn.qkv(y).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        maps.append(weights[:, :, 1:, :])
        y = (weights @ v).transpose(1, 2).reshape(B, N, C)
        y = attn.proj(attn.norm(y))
        x = x + block.drop_path1(block.ls1(y))
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    x = teacher.norm(x)
    return {"logits": teacher.forward_head(x), "tokens": x[:, teacher.num_prefix_tokens:], "attn": maps}


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: Sparsifiner) -> Dict[str, torch.Tensor]:
    """Map a checkpoint onto ``model``: the official Sparsifiner layout (``{'model': sd}``, the same key names as
    ours), a DeiT backbone (Facebook's release or timm's ``deit_*_patch16_224``: our keys without the predictors,
    which then keep the model's initial values, as the official fine-tuning starts), or our own files.
    ``pos_embed`` / ``proj_n`` / ``proj_back_n`` trained at another size are resampled to the model's grid (the
    official filter resizes ``pos_embed`` bilinearly; ours also handles the predictor's token projections and
    non-square grids). Keys that do not fit raise a ValueError naming them."""
    state = unwrap_state_dict(state_dict)
    expected = model.state_dict()
    predictor = [k for k in expected if ".mask_predictor." in k]
    if predictor and not any(".mask_predictor." in k for k in state):
        logger.info("checkpoint has no connectivity predictors (a DeiT backbone): %d predictor tensors keep their "
                    "initial values", len(predictor))
        state = {**state, **{k: expected[k] for k in predictor}}
    if any(k.startswith("aux_head.") for k in expected) and (
            state.get("aux_head.weight") is None or state["aux_head.weight"].shape != expected["aux_head.weight"].shape):
        # LV-ViT's token-labeling head follows the classifier: new (initial) weights for another class count
        state = {**{k: v for k, v in state.items() if not k.startswith("aux_head.")},
                 **{k: v for k, v in expected.items() if k.startswith("aux_head.")}}
    out = {}
    for key, value in state.items():
        target = expected.get(key)
        if target is not None and value.shape != target.shape:
            if key == "patch_embed.proj.weight" and value.dim() == 2 and value.numel() == target.numel():
                value = value.reshape(target.shape)  # official: weights from a manual patchify + linear
            elif key == "pos_embed" or key.endswith(("mask_predictor.proj_n", "mask_predictor.proj_back_n")):
                rows = value[0] if key == "pos_embed" else value
                old = math.isqrt(rows.shape[0] - 1)
                if old * old == rows.shape[0] - 1 and value.shape[-1] == target.shape[-1]:
                    rows = resample_token_rows(rows, (old, old), model.grid_size,
                                               rescale=key.endswith("proj_n"))
                    value = rows.unsqueeze(0) if key == "pos_embed" else rows
        out[key] = value
    check_keys(out, model, f"Sparsifiner (grid {model.grid_size})", classifier="head", first_conv="patch_embed.proj")
    return out


def _create_sparsifiner(variant: str, pretrained: bool = False, **kwargs) -> Sparsifiner:
    out_indices = kwargs.pop("out_indices", 3)
    return build_zoo_model(Sparsifiner, variant, pretrained,
                           feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


def _cfg(hf_hub_id: Optional[str], notes: Tuple[str, ...], **kwargs) -> Dict[str, Any]:
    cfg = dict(
        hf_hub_id=hf_hub_id, num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7),
        min_input_size=(3, MIN_INPUT_SIZE, MIN_INPUT_SIZE), fixed_input_size=False, crop_pct=0.875,
        interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv="patch_embed.proj", classifier="head", license="mit",
        custom_load=True,  # files and URLs load through PretrainedFileMixin.load_pretrained (safe official reader)
        paper_name="Sparsifiner: Learning Sparse Instance-Dependent Attention for Efficient Vision Transformers",
        paper_ids="arXiv:2303.13755", origin_url="https://github.com/lim142857/Sparsifiner", notes=notes,
    )
    cfg.update(kwargs)
    return cfg


_BACKBONE_ONLY = ("no Sparsifiner weights were released: these are the backbone weights the official training starts "
                  "from; the connectivity predictors are untrained (train them with the recipes)",)

default_cfgs = generate_default_cfgs({
    "vz_sparsifiner_deit_small.deit_in1k": _cfg("timm/deit_small_patch16_224.fb_in1k", _BACKBONE_ONLY,
                                                license="apache-2.0"),
    "vz_sparsifiner_deit_base.deit_in1k": _cfg(
        "timm/deit_base_patch16_224.fb_in1k",
        _BACKBONE_ONLY + ("DeiT-B by the same construction: the official code has no configuration for it",),
        license="apache-2.0"),
    "vz_sparsifiner_lvvit_small.lvvit_in1k": _cfg(
        None, _BACKBONE_ONLY + ("LV-ViT-S backbone: the official release lvvit_s-26M-224-83.3.pth.tar "
                              "(github.com/zihangJiang/TokenLabeling, Apache-2.0); pass it as a file",),
        url="https://github.com/zihangJiang/TokenLabeling/releases/download/1.0/lvvit_s-26M-224-83.3.pth.tar",
        first_conv="patch_embed.conv1", crop_pct=0.9, license="apache-2.0"),
})


@register_model
def vz_sparsifiner_deit_small(pretrained: bool = False, **kwargs) -> Sparsifiner:
    """The official default: DeiT-S backbone, keep rate 0.25, n_down = 197 // 6, reduced_c = 64 // 2."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4, qkv_bias=True)
    return _create_sparsifiner("vz_sparsifiner_deit_small", pretrained, **dict(model_args, **kwargs))


@register_model
def vz_sparsifiner_deit_base(pretrained: bool = False, **kwargs) -> Sparsifiner:
    """DeiT-B backbone with the default predictor config (no official configuration: built by analogy)."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4, qkv_bias=True)
    return _create_sparsifiner("vz_sparsifiner_deit_base", pretrained, **dict(model_args, **kwargs))


@register_model
def vz_sparsifiner_lvvit_small(pretrained: bool = False, **kwargs) -> Sparsifiner:
    """LV-ViT-S backbone (official ``sparsifiner_lvvit``): 16 blocks, mlp 3, no qkv bias, 4-layer conv stem,
    residuals divided by 2, LayerNorm eps 1e-5, token-labeling head. Inference and parity only here: its recipe needs
    token-labeling targets (dense per-patch label maps) that this repository cannot produce."""
    model_args = dict(patch_size=16, embed_dim=384, depth=16, num_heads=6, mlp_ratio=3, qkv_bias=False,
                      stem="conv4_2", norm_eps=1e-5, skip_lam=2.0, aux_head=True)
    return _create_sparsifiner("vz_sparsifiner_lvvit_small", pretrained, **dict(model_args, **kwargs))
