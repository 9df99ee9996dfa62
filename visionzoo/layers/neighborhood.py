"""``NeighborhoodAttention2D``: a drop-in for the legacy NATTEN module (natten <= 0.17, the one NAT / DiNAT and
their checkpoints were built with), running on ``visionzoo.kernels.neighborhood_attention``.

Same signature and parameter names as NATTEN's module, so code (and state dicts) written against
``from natten import NeighborhoodAttention2D`` keep working: ``qkv`` (Linear dim -> 3*dim, [q | k | v], heads x
head_dim inside each), ``rpb`` (heads, 2k-1, 2k-1) when ``bias=True`` (natten 0.14.5-0.15) or ``rel_pos_bias=True``
(natten 0.17), ``proj`` (Linear dim -> dim); ``qk_scale`` (default head_dim ** -0.5), ``attn_drop``, ``proj_drop``.
Input and output are channels-last maps (B, H, W, C), as there.

Maps smaller than ``kernel_size * dilation`` (``dilation_mode``):

* ``"pad"`` (default): what NATTEN <= 0.14.6 did and what the published weights were trained and evaluated with.
  The layer's input is zero-padded at the right / bottom up to ``kernel_size * dilation`` before the qkv projection
  and the output cropped after it. The padded tokens are real keys: their key and value are the qkv bias, so they
  take part in the softmax of the queries near the bottom / right border, exactly as in the legacy module.
  NATTEN >= 0.15 raises instead ("product of kernel size and dilation cannot be larger than input size"), which is
  why the official detection configs need inputs of at least 784 px there (NAT issue #106).
* ``"adapt"``: lower the layer's dilation to what the map allows, ``d = max(1, min(dilation, min(H, W) // k))``
  (the rule of thumb of NAT issue #103: k * d should not exceed the feature map's side; NATTEN 0.14.4's
  ``dilation="adaptive"`` chose ``max(min(H, W) // k, 1)``), and pad only a map smaller than k itself (as above).
* ``"strict"``: no padding, no adaptation: a map smaller than ``kernel_size * dilation`` raises a ValueError naming
  the numbers (NATTEN >= 0.15's behaviour).

At or above ``kernel_size * dilation`` the three modes are the same layer.
"""
from __future__ import annotations

import numbers
from typing import Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

from visionzoo.kernels import neighborhood_attention
from .linear import Linear

__all__ = ["DILATION_MODES", "NeighborhoodAttention2D", "check_dilation_mode", "neighborhood_plan"]

DILATION_MODES = ("pad", "adapt", "strict")


def check_dilation_mode(mode: str) -> str:
    if mode not in DILATION_MODES:
        raise ValueError(f"dilation_mode must be one of {DILATION_MODES} ('pad': zero-pad small maps up to "
                         f"kernel_size * dilation as NATTEN <= 0.14 did; 'adapt': lower the dilation to "
                         f"max(1, min(dilation, min(H, W) // kernel_size)); 'strict': raise), got {mode!r}")
    return mode


def check_kernel_and_dilation(kernel_size, dilation, where: str = "NeighborhoodAttention2D") -> Tuple[int, int]:
    """``kernel_size`` an odd int >= 1 and ``dilation`` an int >= 1 (None means 1, as in NATTEN), as ints."""
    if dilation is None:
        dilation = 1
    if not isinstance(kernel_size, numbers.Integral) or isinstance(kernel_size, bool) or kernel_size < 1 \
            or kernel_size % 2 == 0:
        raise ValueError(f"{where}: kernel_size must be an odd integer >= 1 (a query's neighbourhood is centred "
                         f"on it), got {kernel_size!r}")
    if not isinstance(dilation, numbers.Integral) or isinstance(dilation, bool) or dilation < 1:
        raise ValueError(f"{where}: dilation must be an integer >= 1, got {dilation!r}")
    return int(kernel_size), int(dilation)


def neighborhood_plan(height: int, width: int, kernel_size: int, dilation: int, mode: str,
                      where: str = "NeighborhoodAttention2D") -> Tuple[int, int, int]:
    """``(dilation, pad_bottom, pad_right)`` a layer uses on a ``height x width`` map (see the module docstring)."""
    if mode == "adapt":
        dilation = max(1, min(dilation, min(height, width) // kernel_size))
    window = kernel_size * dilation
    pad_b, pad_r = max(0, window - height), max(0, window - width)
    if (pad_b or pad_r) and mode == "strict":
        raise ValueError(
            f"{where}: the {height}x{width} map is smaller than kernel_size * dilation = {kernel_size} * {dilation} = "
            f"{window} and dilation_mode='strict' pads nothing; use a larger input, dilation_mode='pad' (zero-pad to "
            f"{window}, as NATTEN <= 0.14 and the published weights did) or dilation_mode='adapt' (dilation "
            f"{max(1, min(dilation, min(height, width) // kernel_size))} here)")
    return dilation, pad_b, pad_r


class NeighborhoodAttention2D(nn.Module):
    """2D (dilated) neighbourhood attention with NATTEN's legacy module interface (module docstring).

    Args:
        dim: channels of the (B, H, W, dim) input.
        num_heads: attention heads (``dim`` must be a multiple).
        kernel_size: odd neighbourhood side k (each query sees k x k keys).
        dilation: spacing of the neighbours (DiNA); None means 1, as in NATTEN.
        bias: a relative-position bias table ``rpb`` (NATTEN 0.14.5-0.15's name; True there).
        qkv_bias: bias of the qkv projection.
        qk_scale: multiplies q.k (default head_dim ** -0.5).
        attn_drop: dropout on the attention weights (training only; takes a slower gather path).
        proj_drop: dropout after the output projection.
        rel_pos_bias: NATTEN 0.17's name for ``bias``; when given, it wins.
        dilation_mode: ``"pad"``, ``"adapt"`` or ``"strict"``: what a map smaller than k * dilation gets.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            kernel_size: int,
            dilation: Optional[int] = 1,
            bias: bool = True,
            qkv_bias: bool = True,
            qk_scale: Optional[float] = None,
            attn_drop: float = 0.0,
            proj_drop: float = 0.0,
            rel_pos_bias: Optional[bool] = None,
            dilation_mode: str = "pad",
    ):
        super().__init__()
        if not isinstance(num_heads, numbers.Integral) or num_heads < 1 or dim % num_heads:
            raise ValueError(f"NeighborhoodAttention2D: dim {dim} must be a multiple of num_heads {num_heads}")
        self.kernel_size, self.dilation = check_kernel_and_dilation(kernel_size, dilation)
        self.dilation_mode = check_dilation_mode(dilation_mode)
        self.num_heads = int(num_heads)
        self.head_dim = dim // self.num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.window_size = self.kernel_size * self.dilation  # NATTEN's attribute: the side a map must have
        if rel_pos_bias is not None:
            bias = rel_pos_bias
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        if bias:
            self.rpb = nn.Parameter(torch.zeros(self.num_heads, 2 * self.kernel_size - 1, 2 * self.kernel_size - 1))
            trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"NeighborhoodAttention2D expects a (B, H, W, C) map, got shape {tuple(x.shape)}")
        B, H, W, C = x.shape
        dilation, pad_b, pad_r = neighborhood_plan(H, W, self.kernel_size, self.dilation, self.dilation_mode)
        Hp, Wp = H + pad_b, W + pad_r
        qkv = self.qkv(x)
        if pad_b or pad_r:
            qkv = self._pad_qkv(qkv, pad_b, pad_r)
        q, k, v = qkv.view(B, Hp, Wp, 3, self.num_heads, self.head_dim).unbind(3)
        if self.training and self.attn_drop.p > 0:
            x = self._gather_attention(q, k, v, dilation)
        else:
            x = neighborhood_attention(q, k, v, self.kernel_size, dilation, rpb=self.rpb, scale=self.scale)
        x = x.reshape(B, Hp, Wp, C)
        if pad_b or pad_r:
            x = x[:, :H, :W]
        return self.proj_drop(self.proj(x))

    def _pad_qkv(self, qkv: torch.Tensor, pad_b: int, pad_r: int) -> torch.Tensor:
        """NATTEN <= 0.14 zero-padded the input before qkv, so a padded token's q, k, v are the qkv bias (zero
        without one). The same tensor, without projecting the zeros: the bias (or zeros) concatenated at the right
        and the bottom; its gradient reaches the bias through the padded tokens, as there."""
        B, H, W, C3 = qkv.shape
        fill = self.qkv.bias.to(qkv.dtype) if self.qkv.bias is not None else qkv.new_zeros(C3)
        if pad_r:
            qkv = torch.cat([qkv, fill.expand(B, H, pad_r, C3)], dim=2)
        if pad_b:
            qkv = torch.cat([qkv, fill.expand(B, pad_b, W + pad_r, C3)], dim=1)
        return qkv

    def _gather_attention(self, q, k, v, dilation: int) -> torch.Tensor:
        """Explicit attention weights (k*k copies of K and V), for dropout on them: training with attn_drop > 0."""
        from visionzoo.kernels._neighborhood import neighbor_index, rpb_index

        B, H, W, nh, D = q.shape
        idx = neighbor_index(H, W, self.kernel_size, dilation, device=q.device)  # (N, k*k)
        keys = k.reshape(B, H * W, nh, D)[:, idx]  # (B, N, k*k, heads, D)
        values = v.reshape(B, H * W, nh, D)[:, idx]
        scores = torch.einsum("bnhd,bnkhd->bhnk", q.reshape(B, H * W, nh, D) * self.scale, keys)
        if self.rpb is not None:
            scores = scores + self.rpb.flatten(1)[:, rpb_index(H, W, self.kernel_size, dilation, device=q.device)]
        attn = self.attn_drop(scores.softmax(dim=-1))
        return torch.einsum("bhnk,bnkhd->bnhd", attn, values).reshape(B, H, W, nh, D)

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, rel_pos_bias={self.rpb is not None}, dilation_mode={self.dilation_mode!r}")
