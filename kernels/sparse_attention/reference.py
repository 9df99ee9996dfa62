"""Sparse attention, the specification: dense attention with a mask built from the index.

Query ``i`` (of the N tokens) attends to the keys listed for it: every key for the ``dense_queries`` leading
queries, ``index[b, h, i - dense_queries, :]`` for the others. Written here as the official Sparsifiner code
does it, densely: the full N x N score matrix, with a mask built by scattering the index, then softmax and the
weighted sum of v. The mask holds *counts* and enters as ``log(count)`` added to the scores: ``-inf`` where a
key is not listed, ``0`` where it is listed once (exactly the official ``masked_fill(-inf)``), ``log c`` where
it is listed ``c`` times, which multiplies that key's weight by ``c`` (the op's definition over the list: each
entry is one term of the softmax). Rows list distinct keys in practice (top-k), so the counts are 0 and 1.

Memory is O(N^2) per image and head: use it on small N (tests, the oracle).
"""
from __future__ import annotations

import torch


def key_counts(index: torch.Tensor, num_keys: int, dense_queries: int, dtype) -> torch.Tensor:
    """(B, heads, N, N) how often query i lists key j: 1 for every key on the dense rows, else from the index."""
    B, heads, M, _ = index.shape
    counts = torch.zeros(B, heads, dense_queries + M, num_keys, dtype=dtype, device=index.device)
    counts[:, :, :dense_queries] = 1
    counts[:, :, dense_queries:].scatter_add_(-1, index.long(), torch.ones(index.shape, dtype=dtype,
                                                                               device=index.device))
    return counts


def sparse_attention_reference(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        index: torch.Tensor,
        scale: float,
        dense_queries: int,
) -> torch.Tensor:
    """q, k: (B, N, heads, Dqk); v: (B, N, heads, Dv); index: (B, heads, N - dense_queries, K) key ids in [0, N).

    Returns (B, N, heads, Dv) in q's dtype (computed in fp32, or fp64 for fp64 input)."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    qf, kf, vf = (t.to(dtype).transpose(1, 2) for t in (q, k, v))  # (B, heads, N, D)
    counts = key_counts(index, k.shape[1], dense_queries, dtype)
    scores = (qf @ kf.transpose(-1, -2)) * scale + counts.log()  # log 0 = -inf: unlisted keys get no weight
    out = scores.softmax(dim=-1) @ vf
    return out.transpose(1, 2).to(q.dtype)
