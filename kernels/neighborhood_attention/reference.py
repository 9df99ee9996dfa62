"""Neighbourhood attention, the specification.

Dense masked attention over every token of the map: query (i, j) attends to the k x k keys of its
neighbourhood only, each score shifted by the relative-position bias of the pair. The neighbourhood is
written out below from its definition with plain Python integers, independently of
``kernels/_neighborhood.py`` (which the fast paths use and the tests check against this).

Memory is O((H*W)^2) per image and head: use it on small maps (tests, the oracle).
"""
from __future__ import annotations

from typing import List, Optional

import torch


def axis_windows(length: int, kernel_size: int, dilation: int) -> List[List[int]]:
    """Per map index along one axis, the map indices of its ``kernel_size`` neighbours (slot order).

    Index i lies on the sub-lattice of the indices congruent to it modulo the dilation, at position
    p = i // dilation; that sub-lattice holds L tokens. The window is the kernel_size consecutive
    sub-lattice positions centred on p, shifted inward so that it stays inside 0 .. L-1.
    """
    windows = []
    for i in range(length):
        members = list(range(i % dilation, length, dilation))  # the sub-lattice of i, in order
        p, L = members.index(i), len(members)
        start = min(max(p - kernel_size // 2, 0), L - kernel_size)
        windows.append(members[start:start + kernel_size])
    return windows


def neighborhood_attention_reference(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kernel_size: int,
        dilation: int,
        rpb: Optional[torch.Tensor],
        scale: float,
) -> torch.Tensor:
    """q, k, v: (B, H, W, heads, D); rpb: (heads, 2k-1, 2k-1) or None. Returns (B, H, W, heads, D)."""
    B, H, W, nh, D = q.shape
    K, d = kernel_size, dilation
    rows, cols = axis_windows(H, K, d), axis_windows(W, K, d)
    row_in = torch.zeros(H, H, dtype=torch.bool)  # row_in[i, i2]: key row i2 is in query row i's window
    col_in = torch.zeros(W, W, dtype=torch.bool)
    for i, window in enumerate(rows):
        row_in[i, window] = True
    for j, window in enumerate(cols):
        col_in[j, window] = True
    allowed = (row_in[:, None, :, None] & col_in[None, :, None, :]).reshape(H * W, H * W).to(q.device)

    compute_dtype = torch.promote_types(q.dtype, torch.float32)  # fp16/bf16 in, fp32 math
    qf, kf, vf = (t.reshape(B, H * W, nh, D).transpose(1, 2).to(compute_dtype) for t in (q, k, v))
    scores = (qf @ kf.transpose(-1, -2)) * scale  # (B, heads, N, N)
    if rpb is not None:
        # Pair (query row i, key row i2) uses table row (i2 - i) / dilation + K - 1; the division is exact
        # inside the window (same sub-lattice); elsewhere the clamped value is masked out below.
        ar = torch.arange(H)
        ac = torch.arange(W)
        drow = ((ar[None, :] - ar[:, None]) // d + K - 1).clamp(0, 2 * K - 2)  # (H query, H key)
        dcol = ((ac[None, :] - ac[:, None]) // d + K - 1).clamp(0, 2 * K - 2)
        bias = rpb.to(compute_dtype)[:, drow[:, None, :, None].to(q.device), dcol[None, :, None, :].to(q.device)]
        scores = scores + bias.reshape(nh, H * W, H * W)
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = scores.softmax(dim=-1) @ vf
    return out.transpose(1, 2).reshape(B, H, W, nh, D).to(q.dtype)
