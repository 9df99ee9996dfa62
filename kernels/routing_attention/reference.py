"""Routing attention, the specification.

Everything here is computed densely on the padded map with explicit masks; nothing is partitioned,
gathered or permuted, so it shares no index arithmetic with the fast paths it checks.

* Region ``r = i * nw + j`` (row-major, as BiFormer numbers them) holds the rows ``i*rh .. i*rh + rh - 1``
  and columns ``j*rw .. j*rw + rw - 1`` of the map zero-padded to ``(nh*rh, nw*rw)``, with
  ``rh = ceil(H / nh)``, ``rw = ceil(W / nw)``. A position is *real* when it lies inside the H x W map.
* Routing: region means of q and k over all heads' channels (``heads * Dqk``): over the real tokens of the
  region (``padding="mask"``; regions with no real token are never routed to) or over all ``rh*rw``
  positions with padding counted as zeros (``padding="zeros"``). Affinity ``(mean_q * scale) @ mean_kᵀ``,
  then ``topk`` (clamped) largest per query region.
* Attention: query token ``i`` attends to every key token ``j`` whose region is among the regions routed
  from ``i``'s region (and, with ``padding="mask"``, that is real), softmax(scale * q.k) v per head.

Memory is O((H*W)^2) per image and head: use it on small maps (tests, the oracle).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def _padded_regions(H: int, W: int, num_regions: Tuple[int, int]):
    """(region id, real flag) of every position of the padded map, row-major, and the padded size."""
    nh, nw = num_regions
    rh, rw = -(-H // nh), -(-W // nw)
    Hp, Wp = nh * rh, nw * rw
    rows, cols = torch.arange(Hp), torch.arange(Wp)
    region = ((rows // rh)[:, None] * nw + (cols // rw)[None, :]).reshape(-1)
    real = ((rows < H)[:, None] & (cols < W)[None, :]).reshape(-1)
    return region, real, Hp, Wp


def _pad_flat(x: torch.Tensor, Hp: int, Wp: int, dtype) -> torch.Tensor:
    """(B, H, W, heads, D) -> zero-padded (B, Hp*Wp, heads, D) in ``dtype``."""
    B, H, W = x.shape[:3]
    x = F.pad(x.to(dtype), (0, 0, 0, 0, 0, Wp - W, 0, Hp - H))
    return x.reshape(B, Hp * Wp, *x.shape[3:])


def region_routing_reference(
        q: torch.Tensor,
        k: torch.Tensor,
        num_regions: Tuple[int, int],
        topk: int,
        scale: float,
        padding: str,
) -> torch.Tensor:
    """(B, nh*nw, topk_eff) int64 indices of the routed key regions of every query region."""
    B, H, W, heads, D = q.shape
    region, real, Hp, Wp = _padded_regions(H, W, num_regions)
    n_regions = num_regions[0] * num_regions[1]
    dtype = torch.promote_types(q.dtype, torch.float32)
    member = F.one_hot(region, n_regions).to(dtype)  # (Np, R)
    if padding == "mask":
        member = member * real[:, None].to(dtype)  # padded positions belong to no region
    member = member.to(q.device)
    counts = member.sum(0)  # (R,)
    means = []
    for x in (q, k):
        x = _pad_flat(x.detach(), Hp, Wp, dtype).flatten(2)  # (B, Np, heads*D)
        means.append(torch.einsum("bnc,nr->brc", x, member) / counts.clamp(min=1)[:, None])
    logits = (means[0] * scale) @ means[1].transpose(-1, -2)  # (B, R, R)
    routable = counts > 0 if padding == "mask" else torch.ones_like(counts, dtype=torch.bool)
    logits = logits.masked_fill(~routable, float("-inf"))
    kk = min(topk, int(routable.sum()))
    return logits.topk(kk, dim=-1).indices


def routing_attention_reference(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_regions: Tuple[int, int],
        index: torch.Tensor,
        scale: float,
        padding: str,
) -> torch.Tensor:
    """q, k: (B, H, W, heads, Dqk); v: (B, H, W, heads, Dv); index: (B, nh*nw, kk). Returns (B, H, W, heads, Dv)."""
    B, H, W, heads, _ = q.shape
    region, real, Hp, Wp = _padded_regions(H, W, num_regions)
    region, real = region.to(q.device), real.to(q.device)
    n_regions = num_regions[0] * num_regions[1]
    dtype = torch.promote_types(q.dtype, torch.float32)  # fp16/bf16 in, fp32 math
    qf, kf, vf = (_pad_flat(t, Hp, Wp, dtype).transpose(1, 2) for t in (q, k, v))  # (B, heads, Np, D)

    routed = torch.zeros(B, n_regions, n_regions, dtype=torch.bool, device=q.device)
    routed.scatter_(2, index.long(), True)  # routed[b, query region, key region]
    allowed = routed[:, region][:, :, region]  # (B, Np, Np): key j's region is routed from query i's region
    if padding == "mask":
        allowed = allowed & real[None, None, :]

    scores = (qf @ kf.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    out = scores.softmax(dim=-1) @ vf  # (B, heads, Np, Dv)
    out = out.transpose(1, 2)[:, real].reshape(B, H, W, heads, -1)
    return out.to(q.dtype)
