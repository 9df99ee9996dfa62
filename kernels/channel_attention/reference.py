"""Channel (group) attention, the specification.

One group at a time, written exactly as the formulas of the op's docstring: the group's channels are
sliced out of the (B, N, C) tensors, the C_g x C_g score matrix is an explicit ``transpose @``, the
softmax runs over its last axis, and the result is transposed back. Computed in float32 or wider
(fp16/bf16 inputs are upcast), returned in q's dtype.
"""
from __future__ import annotations

import torch


def operand_roles(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, version: int):
    """(X, Y, Z) with scores = X^T Y and out = (softmax(scores) @ Z^T)^T.

    v1 (DaViT): X = k, Y = v, Z = q.  v2 (Florence-2): X = q, Y = k, Z = v.
    """
    return (k, v, q) if version == 1 else (q, k, v)


def channel_attention_reference(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        groups: int,
        scale: float,
        version: int,
) -> torch.Tensor:
    """q, k, v: (B, N, C); returns (B, N, C)."""
    B, N, C = q.shape
    d = C // groups
    compute_dtype = torch.promote_types(q.dtype, torch.float32)
    x, y, z = (t.to(compute_dtype) for t in operand_roles(q, k, v, version))
    outs = []
    for g in range(groups):
        ch = slice(g * d, (g + 1) * d)
        xg, yg, zg = x[:, :, ch], y[:, :, ch], z[:, :, ch]  # (B, N, d)
        attn = (xg.transpose(1, 2) @ yg * scale).softmax(dim=-1)  # (B, d, d), softmax over the last axis
        outs.append((attn @ zg.transpose(1, 2)).transpose(1, 2))  # (B, N, d)
    return torch.cat(outs, dim=-1).to(q.dtype)
