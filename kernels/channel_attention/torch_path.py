"""Channel (group) attention, the fast PyTorch path.

Two batched matmuls per call on views of the (B, N, C) inputs (no copies of q, k, v beyond what
``matmul`` makes of a strided batch): scores = X^T Y over the N tokens, a (B, groups, C_g, C_g) tensor
(small: 4 KB per group at C_g = 32), softmax in float32 (or wider), then out = Z A^T per token. Memory is O(B·N·C)
plus the scores; no N x N tensor ever exists, so nothing needs chunking. Autograd runs through the
plain torch ops and saves only the inputs (views) and the small attention matrix.

Scale placement: in float32/float64 the scale multiplies the (small) score matrix; in fp16/bf16 it
multiplies X first, as timm does, so that X^T Y, a sum over N tokens stored in the input dtype, cannot
overflow fp16 (v2's N ** -0.5 exists for exactly that). A dtype test, not a value test: compile-friendly.
"""
from __future__ import annotations

import torch

from .reference import operand_roles


def channel_attention_torch(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        groups: int,
        scale: float,
        version: int,
) -> torch.Tensor:
    B, N, C = q.shape
    d = C // groups
    x, y, z = (t.unflatten(-1, (groups, d)) for t in operand_roles(q, k, v, version))  # (B, N, G, d) views
    low_precision = q.dtype in (torch.float16, torch.bfloat16)
    if low_precision:
        x = x * scale
    scores = x.permute(0, 2, 3, 1) @ y.transpose(1, 2)  # (B, G, d, N) @ (B, G, N, d) -> (B, G, d, d)
    if not low_precision:
        scores = scores * scale
    attn = scores.softmax(dim=-1, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
    out = z.transpose(1, 2) @ attn.transpose(-1, -2)  # (B, G, N, d)
    # documented as contiguous: the reshape of the transpose copies, except in degenerate shapes (d = 1, ...)
    # where it may return a strided view
    return out.transpose(1, 2).reshape(B, N, C).contiguous()
