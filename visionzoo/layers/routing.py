"""BiFormer's bi-level routing attention (BRA) as a layer for any network and any input size.

BRA (Zhu et al., CVPR 2023, arXiv:2303.08810) splits the map into ``n_win`` x ``n_win`` regions, routes every
query region to the ``topk`` key regions whose mean key is most similar to its mean query, and lets each query
token attend to all tokens of those routed regions. A depthwise conv on V (LePE) is added to the attention output
before the output projection. The core runs on ``visionzoo.kernels.routing_attention``, which reads K/V by region
index instead of building BiFormer's topk-times gathered copy.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionzoo.kernels import routing_attention
from .linear import Linear

__all__ = ["BiLevelRoutingAttention", "region_pair"]

DATA_FORMATS = ("nchw", "nhwc")


def region_pair(n_win: Union[int, Sequence[int]], name: str = "n_win") -> Tuple[int, int]:
    """``n_win`` as (regions along H, regions along W); a clear ValueError for anything but positive ints."""
    if isinstance(n_win, numbers.Integral) and not isinstance(n_win, bool):
        pair = (n_win, n_win)
    else:
        try:
            pair = tuple(n_win)
        except TypeError:
            pair = ()
    if len(pair) != 2 or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0
                                 for n in pair):
        raise ValueError(f"{name} (regions per side) must be a positive int or a pair of positive ints, got {n_win!r}")
    return int(pair[0]), int(pair[1])


class BiLevelRoutingAttention(nn.Module):
    """Bi-level routing attention, NCHW in and NCHW out (or NHWC with ``data_format="nhwc"``), any H x W.

    Computes ``proj(routed_attention(q, k, v) + lepe(v))`` with ``q, k, v = qkv(x)`` per position, where
    ``routed_attention`` is :func:`visionzoo.kernels.routing_attention` (the official legacy BRA semantics: region
    means of q and k over all heads' channels, detached; affinity ``(mean_q * scale) @ mean_kᵀ``; top-k key
    regions per query region; softmax(scale * q.k) @ v per head over the routed regions' tokens).

    Args:
        dim: input and output channels C.
        num_heads: attention heads (``dim`` and ``qk_dim`` must be divisible by it).
        n_win: regions per side (int, or (along H, along W)). The region *count* is fixed and the region size
            follows the input: ``ceil(H / n_win)`` x ``ceil(W / n_win)`` positions (BiFormer's rule; its
            classification models use 7 at 224, its detection configs 16 at ~800x1333, its segmentation configs
            8 at 512x512 crops).
        topk: key regions each query region attends to. Larger than the number of routable regions is allowed
            and clamped to it: all regions with ``auto_pad=True``; the regions holding at least one real
            position by default (``topk >= n_win**2`` is therefore full attention).
        qk_dim: channels of q and k (default ``dim``); v keeps ``dim`` channels.
        qk_scale: the scale of q.k in both the routing and the attention. Default ``qk_dim ** -0.5``: the
            official BRA scale uses the whole qk_dim, not the head dim (the released weights were trained with it).
        side_dwconv: kernel size of LePE, a depthwise conv over the map of v added to the attention output
            (official default 5 in the models, 3 in the bare layer); 0 disables it.
        qkv_bias: bias of the fused qkv projection (official: True).
        auto_pad: False (default): when H or W is not a multiple of ``n_win``, the padded positions are not
            tokens: padded keys are masked, region means cover real positions only, regions without a real
            position are never routed to; nothing depends on the padding. True: the official ``auto_pad``
            behaviour, needed to reproduce the official detection / segmentation numbers exactly: x is
            zero-padded at the bottom / right to a multiple of ``n_win`` *before* the qkv projection (so padded
            positions carry q = k = v = the projection's bias and take part in routing, attention and LePE), and
            the output is cropped.
        data_format: ``"nchw"`` (B, C, H, W) in and out (default), or ``"nhwc"`` (B, H, W, C) in and out.

    Regions larger in number than the map's rows or columns (``n_win > H``) are allowed: regions are then one
    position high and those past the map hold no real position (they are never routed to, unless
    ``auto_pad=True``, where they are padding like any other).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            n_win: Union[int, Sequence[int]] = 7,
            topk: int = 4,
            qk_dim: Optional[int] = None,
            qk_scale: Optional[float] = None,
            side_dwconv: int = 3,
            qkv_bias: bool = True,
            auto_pad: bool = False,
            data_format: str = "nchw",
    ):
        super().__init__()
        qk_dim = qk_dim or dim
        for name, value in (("dim", dim), ("num_heads", num_heads), ("qk_dim", qk_dim)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if dim % num_heads or qk_dim % num_heads:
            raise ValueError(f"dim ({dim}) and qk_dim ({qk_dim}) must be divisible by num_heads ({num_heads})")
        if isinstance(topk, bool) or not isinstance(topk, numbers.Integral) or topk < 1:
            raise ValueError(f"topk must be a positive int (clamped to the routable regions at run time), got {topk!r}")
        if isinstance(side_dwconv, bool) or not isinstance(side_dwconv, numbers.Integral) or side_dwconv < 0 or (
                side_dwconv and side_dwconv % 2 == 0):
            raise ValueError(f"side_dwconv must be 0 (no LePE) or an odd kernel size, got {side_dwconv!r}")
        if data_format not in DATA_FORMATS:
            raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
        self.dim, self.qk_dim, self.num_heads = int(dim), int(qk_dim), int(num_heads)
        self.n_win = region_pair(n_win)
        self.topk = int(topk)
        self.scale = float(qk_scale) if qk_scale else self.qk_dim ** -0.5
        self.auto_pad = bool(auto_pad)
        self.data_format = data_format
        # [q | k | v]: qk_dim, qk_dim, dim channels, heads x head_dim inside each (the official QKVLinear layout)
        self.qkv = Linear(dim, 2 * self.qk_dim + dim, bias=qkv_bias)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) if side_dwconv else None
        self.proj = Linear(dim, dim)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, qk_dim={self.qk_dim}, num_heads={self.num_heads}, n_win={self.n_win}, "
                f"topk={self.topk}, scale={self.scale:.4g}, auto_pad={self.auto_pad}")

    def set_n_win(self, n_win: Union[int, Sequence[int]]) -> None:
        """Change the region count (no parameter depends on it)."""
        self.n_win = region_pair(n_win)

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"BiLevelRoutingAttention expects a 4-D {self.data_format.upper()} tensor, got {shape}")
        channels = x.shape[1] if self.data_format == "nchw" else x.shape[3]
        if channels != self.dim:
            raise ValueError(f"BiLevelRoutingAttention(dim={self.dim}) got {channels} channels "
                             f"({self.data_format.upper()} input of shape {tuple(x.shape)})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if self.data_format == "nchw":
            return self.forward_nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.forward_nhwc(x)

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C) (a channels-last NCHW input permuted is a free view)."""
        H_in, W_in = x.shape[1], x.shape[2]
        nh, nw = self.n_win
        if self.auto_pad:  # official: zero-pad x, not q/k/v, so padded positions carry the projection's bias
            pad_b, pad_r = (nh - H_in % nh) % nh, (nw - W_in % nw) % nw
            if pad_b or pad_r:
                x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        B, H, W, _ = x.shape
        heads = self.num_heads
        # split, not three slices: one gradient copy in backward (a slice's backward zero-fills the whole qkv)
        q, k, v = self.qkv(x).split([self.qk_dim, self.qk_dim, self.dim], dim=-1)
        q, k = q.unflatten(-1, (heads, -1)), k.unflatten(-1, (heads, -1))
        # with auto_pad the map is whole regions here, where the op's "mask" and "zeros" coincide
        out = routing_attention(q, k, v.unflatten(-1, (heads, -1)), (nh, nw), self.topk, scale=self.scale)
        out = out.reshape(B, H, W, self.dim)
        if self.lepe is not None:
            out = out + self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        out = self.proj(out)
        if (H, W) != (H_in, W_in):
            out = out[:, :H_in, :W_in]
        return out
