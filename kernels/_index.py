"""Index transposition for the index-driven attention ops (routing attention, sparse attention).

The ops that attend over *index-selected* keys share one shape of problem. The forward pass is driven by a
"forward" index: row ``s`` of ``index`` (a query, or a query region) lists the ``K`` targets (keys, or key
regions) it attends to. Their backward needs the opposite direction: dK and dV of target ``t`` are sums over
the sources that selected ``t``. Summing by scattering from the sources needs atomics (nondeterministic,
and slow or broken for fp16/bf16 on some GPUs); the deterministic alternative, used by our Triton kernels,
gives every target its own program that loops over the sources that selected it. This module builds that
list: :func:`transpose_index`, a compressed-sparse-row (CSR) transpose of the index.

Layout (``*batch`` are any leading dims, e.g. (B,) for routing attention or (B, heads) for sparse attention)::

    index   (*batch, S, K) integer, values in [0, num_targets); negative entries are "no target" (padding)
    result  sources (*batch, S*K) int32   source row s of each entry, grouped by target
            slots   (*batch, S*K) int32   position k of the entry inside its source row (index[s, k] == t)
            offsets (*batch, num_targets + 1) int32, offsets[..., 0] == 0, non-decreasing

For a target ``t`` the entries ``e`` in ``offsets[..., t] <= e < offsets[..., t + 1]`` are exactly the pairs
(s, k) = (sources[..., e], slots[..., e]) with ``index[..., s, k] == t``, in ascending (s, k) order, so the
result is deterministic. Entries at and after ``offsets[..., num_targets]`` (the negative, ignored ones) hold
unspecified sources/slots. Shapes depend only on the input's shape, never on its values (``torch.compile``
friendly: one stable sort, one index-add, one cumsum). :func:`transpose_positions` is the same transpose with
each entry given as its flat position ``s * K + k`` (int64) instead of the (source, slot) pair, for callers
that permute per-entry data stored in the (S, K) layout.

How a kernel uses it (dK/dV of target tile ``t`` in batch ``b``)::

    start, end = offsets[b, t], offsets[b, t + 1]
    for e in range(start, end):          # or tiles of entries, each entry expanding to several tokens
        s = sources[b, e]                # the source that selected t; recompute its scores against t
        ...                              # slots[b, e] locates per-entry data stored in the (S, K) layout

Users:

* ``routing_attention`` (BiFormer): index (B, regions, topk) of key regions per query region, targets =
  regions. The backward's dK/dV kernel runs one program per key region over the query regions that routed
  to it.
* ``sparse_attention`` (Sparsifiner): each query attends to its own selected keys, index
  (B, heads, M, K) with values in [0, N) (M = N minus the dense leading queries): ``transpose_index(index, N)``
  gives, per (b, head) and key token ``j``, the queries that selected ``j``. The Triton dK/dV kernel runs one
  program per key over ``range(offsets[b, h, j], offsets[b, h, j+1])`` (after the dense queries, which list
  every key); the CPU torch path builds the transposed CSR matrices of P and dS from
  :func:`transpose_positions` (column ids = positions // K, values permuted by the positions).

Duplicated targets inside one row are listed once per occurrence (the transpose is of the list, not of a set).
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import torch

__all__ = ["TransposedIndex", "transpose_index", "transpose_positions"]

_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


class TransposedIndex(NamedTuple):
    """CSR transpose of a (..., S, K) index; see the module docstring."""

    sources: torch.Tensor  # (..., S*K) int32
    slots: torch.Tensor  # (..., S*K) int32
    offsets: torch.Tensor  # (..., num_targets + 1) int32


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def transpose_index(index: torch.Tensor, num_targets: int, *, check: bool = True) -> TransposedIndex:
    """Transpose ``index`` (..., S, K) with values in [0, num_targets) into CSR form (see the module docstring).

    Negative entries are ignored. ``check`` (skipped while ``torch.compile`` traces, since it reads values)
    raises ``ValueError`` for entries >= ``num_targets``; without the check such entries are ignored like
    negative ones.
    """
    positions, offsets = transpose_positions(index, num_targets, check=check)
    K = index.shape[-1]
    return TransposedIndex(
        sources=torch.div(positions, K, rounding_mode="floor").to(torch.int32),
        slots=(positions % K).to(torch.int32),
        offsets=offsets.to(torch.int32),
    )


def transpose_positions(index: torch.Tensor, num_targets: int, *,
                        check: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """The same transpose as :func:`transpose_index`, with each entry given by its flat position in its row
    of the index, ``s * K + k``, instead of the (source, slot) pair: ``(positions, offsets)``, positions
    (..., S*K) int64 and offsets (..., num_targets + 1) int64. For callers that permute per-entry data
    stored in the (S, K) layout (``data.reshape(-1)[positions]``), which saves the split and the re-join.
    """
    if not isinstance(index, torch.Tensor) or index.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"index must be an integer tensor, got "
                        f"{index.dtype if isinstance(index, torch.Tensor) else type(index).__name__}")
    if index.dim() < 2:
        raise ValueError(f"index must be (..., S, K) with at least 2 dims, got shape {tuple(index.shape)}")
    if isinstance(num_targets, bool) or not isinstance(num_targets, int) or num_targets < 1:
        raise ValueError(f"num_targets must be a positive int, got {num_targets!r}")
    *batch, S, K = index.shape
    n = S * K
    if n >= 2 ** 31 or num_targets >= 2 ** 31:
        raise ValueError(f"index too large for int32 offsets: S*K = {n}, num_targets = {num_targets}")
    flat = index.reshape(-1, n)  # (nb, n): the batch dims folded
    nb = flat.shape[0]
    if check and not _is_compiling() and flat.numel() > 0 and bool((flat >= num_targets).any()):
        bad = flat[flat >= num_targets][0].item()
        raise ValueError(f"index holds {bad}, outside [0, num_targets={num_targets}) (negative entries mean 'none')")
    # Ignored entries (negative or out of range) go to an extra bucket after every real target. One stable 1-D
    # sort of (batch, bucket) keys in the narrowest integer type that holds them: on CPU 2-3x faster than a
    # batched sort of int64 keys (measured on Sparsifiner's 576 x 145 rows); on GPUs a plain radix sort.
    buckets = nb * (num_targets + 1)
    key_dtype = torch.int16 if buckets < 2 ** 15 else torch.int32 if buckets < 2 ** 31 else torch.int64
    key = torch.where((flat >= 0) & (flat < num_targets), flat.to(key_dtype),
                      torch.full((), num_targets, dtype=key_dtype, device=index.device))
    key = (key + torch.arange(nb, dtype=key_dtype, device=index.device)[:, None] * (num_targets + 1)).reshape(-1)
    order = torch.argsort(key, stable=True)  # stable: ascending flat position (s, k) inside a bucket
    positions = order.view(nb, n) - torch.arange(nb, device=index.device)[:, None] * n  # local to each row
    counts = torch.zeros(buckets, dtype=torch.int64, device=index.device)
    counts.index_add_(0, key.to(torch.int32) if key_dtype == torch.int16 else key,
                      torch.ones_like(key, dtype=torch.int64))
    counts = counts.view(nb, num_targets + 1)
    offsets = torch.cat([torch.zeros_like(counts[:, :1]), counts[:, :num_targets].cumsum(-1)], dim=-1)
    return positions.view(*batch, n), offsets.view(*batch, num_targets + 1)
