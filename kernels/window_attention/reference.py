"""Window attention, the specification.

Dense masked attention over every token of the map: a query attends to the keys of its own
window/grid group only, with the additive bias indexed by the query's and the key's position
inside that group. Nothing is partitioned or permuted, so this does not share any index
arithmetic with the fast paths it checks, beyond :func:`token_groups`.

Memory is O((H*W)^2) per image and head: use it on small maps (tests, the oracle).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def axis_groups(length: int, size: int, partition: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Group id and position inside the group of each index ``0..length-1`` along one axis.

    The axis is padded up to ``n * size`` with ``n = ceil(length / size)``.
    ``block``: group ``p // size``, position ``p % size`` (contiguous windows of ``size``).
    ``grid``:  group ``p % n``, position ``p // n`` (``size`` tokens strided ``n`` apart).
    """
    n = -(-length // size)
    p = torch.arange(length)
    if partition == "block":
        return p // size, p % size
    return p % n, p // n


def token_groups(height: int, width: int, window: Tuple[int, int], partition: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per token of a row-major (height, width) map: its group id and its index inside the group's window."""
    gh, ih = axis_groups(height, window[0], partition)
    gw, iw = axis_groups(width, window[1], partition)
    n_w = -(-width // window[1])
    group = (gh[:, None] * n_w + gw[None, :]).reshape(-1)
    index = (ih[:, None] * window[1] + iw[None, :]).reshape(-1)
    return group, index


def window_attention_reference(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        window: Tuple[int, int],
        partition: str,
        bias: Optional[torch.Tensor],
        scale: float,
) -> torch.Tensor:
    """q, k, v: (B, H, W, heads, D); bias: (heads, wh*ww, wh*ww) or None. Returns (B, H, W, heads, D)."""
    B, H, W, nh, D = q.shape
    group, index = token_groups(H, W, window, partition)
    group, index = group.to(q.device), index.to(q.device)
    compute_dtype = torch.promote_types(q.dtype, torch.float32)  # fp16/bf16 in, fp32 math
    qf, kf, vf = (t.reshape(B, H * W, nh, D).transpose(1, 2).to(compute_dtype) for t in (q, k, v))
    scores = (qf @ kf.transpose(-1, -2)) * scale  # (B, heads, N, N)
    if bias is not None:
        scores = scores + bias.to(compute_dtype)[:, index[:, None], index[None, :]]
    same_group = group[:, None] == group[None, :]
    scores = scores.masked_fill(~same_group, float("-inf"))
    out = scores.softmax(dim=-1) @ vf
    return out.transpose(1, 2).reshape(B, H, W, nh, D).to(q.dtype)
