"""Linear attention, the specification.

The quadratic form, written straight from the definition: for every query n,

    out[n] = scale * sum_m (q[n] . k[m]) v[m]  /  max(den_scale * sum_m (q_den[n] . k_den[m]) + eps, denom_min)

with the N x N score matrices materialised. Nothing here reorders the products into the d x d state
(that is what the fast paths do), so this shares no algebra with them beyond the definition.

Memory is O(N^2) per image and head: use it on small maps (tests, the oracle).
"""
from __future__ import annotations

from typing import Optional, Union

import torch


def linear_attention_reference(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_den: torch.Tensor,
        k_den: torch.Tensor,
        scale: Union[float, torch.Tensor],
        den_scale: float,
        eps: float,
        denom_min: Optional[float],
) -> torch.Tensor:
    """q, k, q_den, k_den: (B, heads, N, d); v: (B, heads, N, e); ``scale`` a number or a (heads,) tensor.

    Returns (B, heads, N, e) in q's dtype; fp16/bf16 inputs are computed in fp32.
    """
    compute_dtype = torch.promote_types(q.dtype, torch.float32)
    qf, kf, vf, qd, kd = (t.to(compute_dtype) for t in (q, k, v, q_den, k_den))
    scores = qf @ kf.transpose(-1, -2)  # (B, heads, N, N): q[n] . k[m]
    den_scores = qd @ kd.transpose(-1, -2)  # (B, heads, N, N): q_den[n] . k_den[m]
    num = scores @ vf
    den = den_scores.sum(dim=-1, keepdim=True) * den_scale + eps
    if denom_min is not None:
        den = torch.clamp(den, min=denom_min)
    if isinstance(scale, torch.Tensor):
        scale = scale.to(compute_dtype).reshape(1, -1, 1, 1)
    return (scale * num / den).to(q.dtype)
