"""Sparse attention: each query attends only to its own selected keys (Sparsifiner's attention).

``sparse_attention(q, k, v, index, scale=None, dense_queries=0)``

* ``q, k``: (B, N, heads, Dqk); ``v``: (B, N, heads, Dv). Any strides: the views a DeiT-style layer gets for
  free from its fused projection, ``q, k, v = qkv(x).view(B, N, 3, heads, D).unbind(2)``, are read as they are.
  (The token-major layout is chosen because the output comes back as (B, N, heads, Dv), contiguous, so the
  model's ``out.reshape(B, N, heads * Dv)`` before the output projection is free; (B, heads, N, D) views of the
  same tensors, ``q.transpose(1, 2)``, are what the connectivity predictor's per-head projections take.)
* ``index``: (B, heads, N - dense_queries, K) integer key ids in [0, N): row ``r`` lists the keys of query
  ``dense_queries + r`` in that head. Any integer dtype and strides (``torch.topk``'s int64 indices are used as
  they are). The index is not differentiated (the selection is a discrete choice, detached, as in the paper).
* ``dense_queries``: the number of leading queries that attend to *every* key (default 0). Sparsifiner keeps
  the cls query's row dense (its mask prepends an all-ones row to the top-k rows of the patch queries):
  call the op with ``dense_queries=1`` and the predictor's top-k over the patch queries' approximate
  attention, (B, heads, N - 1, K), as ``index``. The cls row then costs N keys in the same kernels and the
  same call: no second attention call, no concatenation of outputs, no extra dK/dV sums.
* ``scale``: multiplies q.k; default ``Dqk ** -0.5`` (DeiT's and Sparsifiner's).
* Result: for query i with key list ``L_i`` (all N keys, or its index row),
  ``out_i = sum_{e in L_i} softmax_e(scale * q_i . k_e) v_e``, per head: the official dense masked attention
  (``masked_fill(~mask, -inf)``, softmax) restricted to the listed keys, at cost and memory proportional to
  N*K (plus dense_queries*N), never N^2.
* Repeated keys: the softmax runs over the *list*, so a key listed twice in one row counts twice (its weight
  is multiplied by its multiplicity; the reference writes this as adding log(count) to the scores). Rows from
  ``torch.topk`` hold distinct keys, which is what the op is meant for; duplicates are **not** checked (that
  takes a sort of the whole index on every call), and every backend gives the same result for them.
* Bad input raises: ``K`` > N or K < 1 (``ValueError``), non-integer index (``TypeError``), index values
  outside [0, N) (``ValueError``). The value check reads the index: the torch path does it inside its custom
  op, so also in compiled graphs; for the other backends it is skipped while ``torch.compile`` traces, and the
  Triton kernels never read out of bounds regardless (they mask such entries and ignore them).
* Backends (``kernels/README.md``): Triton on CUDA (per-query gathers on the CUDA cores, deterministic dK/dV
  over the transposed index), else the torch path (torch's CSR SDDMM/SpMM kernels, memory O(N*K) scalars).

Returns (B, N, heads, Dv), contiguous, in q's dtype.
"""
from __future__ import annotations

import numbers
from typing import Optional, Tuple

import torch

from .._backend import choose_backend
from .._checks import check_tensors
from .._index import _is_compiling
from .reference import sparse_attention_reference
from .torch_path import index_range_error, sparse_attention_torch

__all__ = ["sparse_attention", "sparse_attention_flops"]

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
TRITON_MAX_HEAD_DIM = 256
_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _shape(x, name: str, dims: int, layout: str) -> Tuple[int, ...]:
    """Shape of a tensor, or a shape tuple (for the FLOP count), checked for rank and emptiness."""
    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(x)
    if len(shape) != dims:
        raise ValueError(f"{name} must be {layout}, got a {len(shape)}-D shape {shape}")
    return shape


def _validate_shapes(q, k, v, index, dense_queries) -> Tuple[int, int]:
    """Checks shapes and dense_queries; returns (N, K)."""
    qs = _shape(q, "q", 4, "(B, N, heads, head_dim)")
    ks = _shape(k, "k", 4, "(B, N, heads, head_dim)")
    vs = _shape(v, "v", 4, "(B, N, heads, head_dim)")
    if min(qs) <= 0 or min(vs) <= 0:
        raise ValueError(f"q, k, v must not be empty, got shapes {qs}, {ks}, {vs}")
    if qs != ks:
        raise ValueError(f"q and k must have the same shape (B, N, heads, Dqk), got {qs} and {ks}")
    if vs[:3] != qs[:3]:
        raise ValueError(f"v must be (B, N, heads, Dv) with q's (B, N, heads) = {qs[:3]}, got {vs}")
    B, N, heads, _ = qs
    if isinstance(dense_queries, bool) or not isinstance(dense_queries, numbers.Integral) \
            or not 0 <= dense_queries <= N:
        raise ValueError(f"dense_queries must be an int in [0, N={N}] (the leading queries that attend to every "
                         f"key; Sparsifiner's cls row: 1), got {dense_queries!r}")
    idx = _shape(index, "index", 4, "(B, heads, N - dense_queries, K)")
    M = N - int(dense_queries)
    if idx[:3] != (B, heads, M):
        raise ValueError(f"index must be (B, heads, N - dense_queries, K) = ({B}, {heads}, {M}, K), got {idx}")
    K = idx[3]
    if not 1 <= K <= N:
        raise ValueError(f"index selects K = {K} keys per query; K must be in [1, N={N}] (a query cannot "
                         "attend to more keys than there are)")
    return N, K


def _validate(q, k, v, index, dense_queries) -> None:
    check_tensors("(B, N, heads, head_dim)", q=q, k=k, v=v)
    if not isinstance(index, torch.Tensor) or index.dtype not in _INTEGER_DTYPES:
        got = index.dtype if isinstance(index, torch.Tensor) else type(index).__name__
        hint = " (a boolean mask? pass the selected key ids, e.g. mask_scores.topk(K).indices)" \
            if got == torch.bool else ""
        raise TypeError(f"index must be an integer tensor (B, heads, N - dense_queries, K) of key ids, got {got}{hint}")
    _validate_shapes(q, k, v, index, dense_queries)
    if index.device != q.device:
        raise ValueError(f"index must be on {q.device} (q's device), got {index.device}")


def _default_scale(head_dim: int, scale) -> float:
    if scale is None:
        return float(head_dim) ** -0.5
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {scale!r}")
    return float(scale)


def _triton_unsupported(q: torch.Tensor, v: torch.Tensor) -> Optional[str]:
    if q.dtype not in TRITON_DTYPES:
        return f"dtype {q.dtype} (supported: float16, bfloat16, float32)"
    if max(q.shape[-1], v.shape[-1]) > TRITON_MAX_HEAD_DIM:
        return f"head_dim {max(q.shape[-1], v.shape[-1])} > {TRITON_MAX_HEAD_DIM}"
    return None


def sparse_attention(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        index: torch.Tensor,
        scale: Optional[float] = None,
        dense_queries: int = 0,
) -> torch.Tensor:
    _validate(q, k, v, index, dense_queries)
    scale = _default_scale(q.shape[-1], scale)
    dense_queries = int(dense_queries)
    backend = choose_backend("sparse_attention", q, k, v, triton_supported=_triton_unsupported(q, v))
    if backend != "torch" and not _is_compiling():  # the torch path checks where it reads the index, also compiled
        err = index_range_error(index, q.shape[1])
        if err is not None:
            raise ValueError(err)
    if backend == "triton":
        from .triton_kernel import sparse_attention_triton  # imported lazily: TRITON_INTERPRET is read at import
        return sparse_attention_triton(q, k, v, index, scale, dense_queries)
    if backend == "reference":
        return sparse_attention_reference(q, k, v, index, scale, dense_queries)
    return sparse_attention_torch(q, k, v, index, scale, dense_queries)


sparse_attention.__doc__ = __doc__


def sparse_attention_flops(q, k, v, index, scale: Optional[float] = None, dense_queries: int = 0) -> int:
    """Forward FLOPs of :func:`sparse_attention` (2 per multiply-add; softmax and scaling not counted).

    q, k, v, index: the op's tensors or their shapes. Every query does one dot product with each key of its
    list and adds that key's value row once: ``2 * B * heads * ((N - dense_queries) * K + dense_queries * N)
    * (Dqk + Dv)``. ``scale`` is accepted for symmetry with the op and does not matter.
    """
    _validate_shapes(q, k, v, index, dense_queries)
    B, N, heads, dqk = _shape(q, "q", 4, "")
    dv = _shape(v, "v", 4, "")[3]
    K = _shape(index, "index", 4, "")[3]
    entries = (N - int(dense_queries)) * K + int(dense_queries) * N
    return 2 * B * heads * entries * (dqk + dv)
