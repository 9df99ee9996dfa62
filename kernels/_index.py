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
friendly: one stable sort, one scatter-add, one cumsum).

How a kernel uses it (dK/dV of target tile ``t`` in batch ``b``)::

    start, end = offsets[b, t], offsets[b, t + 1]
    for e in range(start, end):          # or tiles of entries, each entry expanding to several tokens
        s = sources[b, e]                # the source that selected t; recompute its scores against t
        ...                              # slots[b, e] locates per-entry data stored in the (S, K) layout

Users:

* ``routing_attention`` (BiFormer): index (B, regions, topk) of key regions per query region, targets =
  regions. The backward's dK/dV kernel runs one program per key region over the query regions that routed
  to it.
* Sparse attention (Sparsifiner, to be built on this): each query attends to its own selected keys, index
  (B, heads, N, K) with values in [0, N): ``transpose_index(index, N)`` gives, per (b, head) and key token
  ``j``, the queries that selected ``j`` (sources) and where ``j`` sits in their lists (slots, e.g. to read
  a stored per-entry weight). Its dK/dV kernel then loops over ``range(offsets[b, h, j], offsets[b, h, j+1])``
  exactly as above. Variable numbers of kept keys per query fit by padding rows with -1.

Duplicated targets inside one row are listed once per occurrence (the transpose is of the list, not of a set).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["TransposedIndex", "transpose_index"]

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
    # sort of (batch, bucket) keys, int32 when they fit: ~2x faster than a batched sort of int64 keys (CPU,
    # measured on the Sparsifiner shape below), and a plain radix sort on GPUs.
    key_dtype = torch.int32 if nb * (num_targets + 1) < 2 ** 31 else torch.int64
    key = torch.where((flat >= 0) & (flat < num_targets), flat.to(key_dtype),
                      torch.full((), num_targets, dtype=key_dtype, device=index.device))
    base = torch.arange(nb, dtype=key_dtype, device=index.device)[:, None]
    order = torch.argsort((key + base * (num_targets + 1)).reshape(-1), stable=True)  # stable: ascending (s, k)
    order = order.view(nb, n) - base.long() * n  # each row holds its own batch's positions, made local
    counts = torch.zeros(nb, num_targets + 1, dtype=torch.int64, device=index.device)
    counts.scatter_add_(-1, key.long(), torch.ones_like(key, dtype=torch.int64))
    offsets = torch.cat([torch.zeros_like(counts[:, :1]), counts[:, :num_targets].cumsum(-1)], dim=-1)
    order, offsets = order.view(*batch, n), offsets.view(*batch, num_targets + 1)
    return TransposedIndex(
        sources=torch.div(order, K, rounding_mode="floor").to(torch.int32),
        slots=(order % K).to(torch.int32),
        offsets=offsets.to(torch.int32),
    )
