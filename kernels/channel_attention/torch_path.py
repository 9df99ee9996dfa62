"""Channel (group) attention, the fast PyTorch path.

Two batched matmuls per call: scores = X^T Y over the N tokens, a (B, groups, C_g, C_g) tensor (small:
4 KB per group at C_g = 32), softmax in float32 (or wider), then out = Z A^T per token. Memory is
O(B·N·C) plus the scores; no N x N tensor ever exists, so nothing needs chunking. Autograd runs through
the plain torch ops and saves (B, groups, N, C_g) copies of X, Y, Z and the small attention matrix.

Layout: the groups of a (B, N, C) tensor are not a batch dimension ``bmm`` can stride over (the batch
strides of (B, G) do not collapse into one), so ``matmul`` would copy anyway. We copy each operand once,
explicitly, into (B, G, N, C_g) order: rows of C_g contiguous channels, a cheap copy, where letting
``matmul`` copy the transposed (B, G, C_g, N) operand of X^T Y costs a transposing copy (measured on CPU,
DaViT-T stage 1 at batch 8, one thread, best of 30 on a shared machine: 1.2 ms instead of 2.9 ms per operand).

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
    x, y, z = (t.unflatten(-1, (groups, d)).transpose(1, 2).contiguous()  # (B, G, N, d)
               for t in operand_roles(q, k, v, version))
    low_precision = q.dtype in (torch.float16, torch.bfloat16)
    if low_precision:
        x = x * scale
    scores = x.transpose(-1, -2) @ y  # (B, G, d, N) @ (B, G, N, d) -> (B, G, d, d)
    if not low_precision:
        scores = scores * scale
    attn = scores.softmax(dim=-1, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
    out = z @ attn.transpose(-1, -2)  # (B, G, N, d)
    # documented as contiguous: the reshape of the transpose copies, except in degenerate shapes (G = 1, ...)
    # where it may return a strided view
    return out.transpose(1, 2).reshape(B, N, C).contiguous()
