"""Sparse attention, the Triton kernels (forward and backward).

Semantics are those of :mod:`.reference`. Design (numbers and the argument for it in ``kernels/README.md``):

* Every query has its own key list (unstructured top-k), so no two queries share a key tile and a query's
  scores are not a matrix product: there is no ``tl.dot`` here. A program owns one query (forward, dQ) or one
  key (dK/dV) of one head, gathers the rows of its list in tiles of BLOCK_N (a (BLOCK_N, D) tile, one row per
  lane group, each row ``D`` contiguous elements) and does the dot products and weighted sums as fp32 FMAs on
  the CUDA cores, reducing over the head dim (scores) or over the list (outputs, gradients).
* Tensors are read straight from their (B, N, heads, D) strides (views of a fused qkv projection are fine)
  and the index from its own strides and dtype (``torch.topk``'s int64 output is read as it is: no int32 copy).
* Query i < dense_queries ("dense") attends to keys 0..N-1; query i >= dense_queries to the keys
  ``index[b, h, i - dense_queries, :]``. One kernel serves both: only the key id of list position n differs
  (n itself, or the loaded index entry).
* Forward: online softmax over the list in base 2 (log2 e folded into the scale), fp32 accumulation; stores O
  and the log-sum-exp (base 2, fp32, (B, N, heads)).
* Backward, deterministic (no atomics), two kernels:
  1. dQ: per (image, query, head), over the query's list like the forward; computes Delta = rowsum(dO * O),
     stores it (fp32, (B, N, heads)) for kernel 2, and dQ = scale * sum over the list of dS k.
  2. dK, dV: per (image, key, head), over the queries that list the key: first the dense queries (all of
     them list every key), then the CSR list of sparse queries from
     :func:`visionzoo.kernels._index.transpose_positions` (ascending query order; entry positions r * K + k,
     divided by K in the kernel). P is recomputed from q, k and
     the LSE; dV = sum P dO, dS = P (dO.v - Delta), dK = scale sum dS q. Each program owns its key row, so dK
     and dV are written once, in a fixed order: bitwise reproducible.
* Index safety: entries outside [0, N) are masked in every load (key or query rows are never read out of
  bounds, even when the op's value check is skipped under ``torch.compile``); they are then ignored (no
  weight), and a query without any valid entry gets output 0 and LSE +inf (no gradient).
* dtypes: fp16/bf16/fp32 are loaded as they are and converted to fp32 for all arithmetic (also in the CPU
  interpreter, where bf16 loads and conversions work); outputs and gradients are stored in the input dtype.
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from .._index import transpose_positions

__all__ = ["sparse_attention_triton"]

LOG2E = 1.4426950408889634


def tile_sizes(kk: int, dqk: int, dv: int) -> Tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_DQK, BLOCK_DV, num_warps).

    BLOCK_N tiles a list (forward, dQ: the K keys of a query; dK/dV: the queries of a key, K on average);
    head dims are padded to a power of two with masks. A (BLOCK_N, BLOCK_D) fp32 tile is kept at <= 4096
    elements (32 per thread with 4 warps) so that the q/k/v/dO tiles of the dK/dV kernel fit in registers.
    """
    block_dqk = triton.next_power_of_2(dqk)
    block_dv = triton.next_power_of_2(dv)
    cap = max(16, 4096 // max(block_dqk, block_dv))
    block_n = min(cap, max(16, triton.next_power_of_2(kk)))
    return block_n, block_dqk, block_dv, 4


@triton.jit
def _list_keys(row_ptr, n, L, sparse, N, sik):
    """Key ids of list positions ``n`` of a query (``row_ptr``: its index row) and whether they are valid.

    Dense queries (``sparse`` false) list every key: id n. Sparse ones read ``index[.., n]``; ids outside
    [0, N) are invalid (never loaded)."""
    in_list = n < L
    idx = tl.load(row_ptr + n * sik, mask=in_list & sparse, other=0)
    valid = in_list & (idx >= 0) & (idx < N)
    kid = tl.where(sparse, idx.to(tl.int32), n)
    return kid, valid


@triton.jit
def _fwd_kernel(
        Q, K, V, O, LSE, IDX,
        sqb, sqn, sqh, sqd,
        skb, skn, skh, skd,
        svb, svn, svh, svd,
        sob, son, soh, sod,
        slb, sln, slh,
        sib, sih, sir, sik,
        N, DQK, DV, DENSE, KK, qk_scale,
        BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    b = (pid // N).to(tl.int64)  # batch offsets may exceed int32
    i = pid % N

    offs_dq = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    dq_ok = offs_dq < DQK
    dv_ok = offs_dv < DV
    q = tl.load(Q + b * sqb + i * sqn + h * sqh + offs_dq * sqd, mask=dq_ok, other=0.0).to(tl.float32)

    sparse = i >= DENSE
    L = KK + (N - KK) * (1 - sparse.to(tl.int32))  # list length: K, or N for a dense query
    row_ptr = IDX + b * sib + h * sih + (i - DENSE) * sir  # only dereferenced for sparse queries
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh

    m_i = tl.full([], float("-inf"), tl.float32)
    l_i = tl.zeros([], tl.float32)
    acc = tl.zeros([BLOCK_DV], tl.float32)
    for n0 in range(0, L, BLOCK_N):
        kid, valid = _list_keys(row_ptr, n0 + tl.arange(0, BLOCK_N), L, sparse, N, sik)
        k = tl.load(k_base + kid[:, None] * skn + offs_dq[None, :] * skd,
                    mask=valid[:, None] & dq_ok[None, :], other=0.0).to(tl.float32)
        v = tl.load(v_base + kid[:, None] * svn + offs_dv[None, :] * svd,
                    mask=valid[:, None] & dv_ok[None, :], other=0.0).to(tl.float32)
        s = tl.sum(k * q[None, :], 1) * qk_scale
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 0))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # no valid key yet: keep exp2 finite
        alpha = tl.exp2(m_i - m_use)
        p = tl.exp2(s - m_use)
        l_i = l_i * alpha + tl.sum(p, 0)
        acc = acc * alpha + tl.sum(p[:, None] * v, 0)
        m_i = m_new

    has_keys = l_i > 0
    l_safe = tl.where(has_keys, l_i, 1.0)
    out = acc / l_safe
    tl.store(O + b * sob + i * son + h * soh + offs_dv * sod, out.to(O.dtype.element_ty), mask=dv_ok)
    tl.store(LSE + b * slb + i * sln + h * slh, tl.where(has_keys, m_i + tl.log2(l_safe), float("inf")))


@triton.jit
def _bwd_dq_kernel(
        Q, K, V, O, DO, LSE, DELTA, DQ, IDX,
        sqb, sqn, sqh, sqd,
        skb, skn, skh, skd,
        svb, svn, svh, svd,
        sob, son, soh, sod,  # O
        sdb, sdn, sdh, sdd,  # dO
        sgb, sgn, sgh, sgd,  # dQ
        slb, sln, slh,  # LSE and DELTA
        sib, sih, sir, sik,
        N, DQK, DV, DENSE, KK, scale, qk_scale,
        BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    b = (pid // N).to(tl.int64)
    i = pid % N

    offs_dq = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    dq_ok = offs_dq < DQK
    dv_ok = offs_dv < DV
    q = tl.load(Q + b * sqb + i * sqn + h * sqh + offs_dq * sqd, mask=dq_ok, other=0.0).to(tl.float32)
    do = tl.load(DO + b * sdb + i * sdn + h * sdh + offs_dv * sdd, mask=dv_ok, other=0.0).to(tl.float32)
    o = tl.load(O + b * sob + i * son + h * soh + offs_dv * sod, mask=dv_ok, other=0.0).to(tl.float32)
    l_off = b * slb + i * sln + h * slh
    lse = tl.load(LSE + l_off)
    delta = tl.sum(do * o, 0)
    tl.store(DELTA + l_off, delta)

    sparse = i >= DENSE
    L = KK + (N - KK) * (1 - sparse.to(tl.int32))
    row_ptr = IDX + b * sib + h * sih + (i - DENSE) * sir
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh

    dq = tl.zeros([BLOCK_DQK], tl.float32)
    for n0 in range(0, L, BLOCK_N):
        kid, valid = _list_keys(row_ptr, n0 + tl.arange(0, BLOCK_N), L, sparse, N, sik)
        k = tl.load(k_base + kid[:, None] * skn + offs_dq[None, :] * skd,
                    mask=valid[:, None] & dq_ok[None, :], other=0.0).to(tl.float32)
        v = tl.load(v_base + kid[:, None] * svn + offs_dv[None, :] * svd,
                    mask=valid[:, None] & dv_ok[None, :], other=0.0).to(tl.float32)
        s = tl.sum(k * q[None, :], 1) * qk_scale
        p = tl.where(valid, tl.exp2(s - lse), 0.0)
        dp = tl.sum(v * do[None, :], 1)
        ds = p * (dp - delta)  # dL/d(score), score = scale * q.k
        dq += tl.sum(ds[:, None] * k, 0)
    tl.store(DQ + b * sgb + i * sgn + h * sgh + offs_dq * sgd, (dq * scale).to(DQ.dtype.element_ty), mask=dq_ok)


@triton.jit
def _bwd_dkv_kernel(
        Q, K, V, DO, LSE, DELTA, DK, DV_OUT, POS, OFF,
        sqb, sqn, sqh, sqd,
        skb, skn, skh, skd,
        svb, svn, svh, svd,
        sdb, sdn, sdh, sdd,  # dO
        skgb, skgn, skgh, skgd,  # dK
        svgb, svgn, svgh, svgd,  # dV
        slb, sln, slh,
        spb, sph, sfb, sfh,  # (batch, head) strides of the transposed index's positions and offsets
        N, DQK, DV, DENSE, KK, scale, qk_scale,
        BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """One program per (image, key) and head, over the queries that list the key."""
    pid = tl.program_id(0)
    h = tl.program_id(1)
    b = (pid // N).to(tl.int64)
    j = pid % N

    offs_dq = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    dq_ok = offs_dq < DQK
    dv_ok = offs_dv < DV
    k = tl.load(K + b * skb + j * skn + h * skh + offs_dq * skd, mask=dq_ok, other=0.0).to(tl.float32)
    v = tl.load(V + b * svb + j * svn + h * svh + offs_dv * svd, mask=dv_ok, other=0.0).to(tl.float32)

    off_ptr = OFF + b * sfb + h * sfh + j
    start = tl.load(off_ptr)
    end = tl.load(off_ptr + 1)
    L = DENSE + (end - start)  # the dense queries, then the sparse queries that listed j
    pos_ptr = POS + b * spb + h * sph + start - DENSE  # list position m >= DENSE reads positions[start + m - DENSE]
    q_base = Q + b * sqb + h * sqh
    do_base = DO + b * sdb + h * sdh
    l_base = b * slb + h * slh

    dk = tl.zeros([BLOCK_DQK], tl.float32)
    dv = tl.zeros([BLOCK_DV], tl.float32)
    for m0 in range(0, L, BLOCK_N):
        m = m0 + tl.arange(0, BLOCK_N)
        in_list = m < L
        from_csr = m >= DENSE
        pos = tl.load(pos_ptr + m, mask=in_list & from_csr, other=0)  # r * K + k: entry k of index row r
        qi = tl.where(from_csr, (pos // KK).to(tl.int32) + DENSE, m)
        q = tl.load(q_base + qi[:, None] * sqn + offs_dq[None, :] * sqd,
                    mask=in_list[:, None] & dq_ok[None, :], other=0.0).to(tl.float32)
        do = tl.load(do_base + qi[:, None] * sdn + offs_dv[None, :] * sdd,
                     mask=in_list[:, None] & dv_ok[None, :], other=0.0).to(tl.float32)
        lse = tl.load(LSE + l_base + qi * sln, mask=in_list, other=float("inf"))
        delta = tl.load(DELTA + l_base + qi * sln, mask=in_list, other=0.0)
        s = tl.sum(q * k[None, :], 1) * qk_scale
        p = tl.where(in_list, tl.exp2(s - lse), 0.0)
        dv += tl.sum(p[:, None] * do, 0)
        dp = tl.sum(do * v[None, :], 1)
        ds = p * (dp - delta)
        dk += tl.sum(ds[:, None] * q, 0)
    tl.store(DK + b * skgb + j * skgn + h * skgh + offs_dq * skgd, (dk * scale).to(DK.dtype.element_ty), mask=dq_ok)
    tl.store(DV_OUT + b * svgb + j * svgn + h * svgh + offs_dv * svgd, dv.to(DV_OUT.dtype.element_ty), mask=dv_ok)


def _forward(q, k, v, index, scale: float, dense: int):
    B, N, nh, dqk = q.shape
    dv = v.shape[-1]
    kk = index.shape[-1]
    block_n, block_dqk, block_dv, num_warps = tile_sizes(kk, dqk, dv)
    out = torch.empty((B, N, nh, dv), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, N, nh), dtype=torch.float32, device=q.device)
    _fwd_kernel[(B * N, nh)](
        q, k, v, out, lse, index,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *lse.stride(), *index.stride(),
        N, dqk, dv, dense, kk, scale * LOG2E,
        BLOCK_N=block_n, BLOCK_DQK=block_dqk, BLOCK_DV=block_dv, num_warps=num_warps,
    )
    return out, lse


def _backward(do, q, k, v, out, lse, index, scale: float, dense: int):
    B, N, nh, dqk = q.shape
    dv = v.shape[-1]
    kk = index.shape[-1]
    block_n, block_dqk, block_dv, num_warps = tile_sizes(kk, dqk, dv)

    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    delta = torch.empty_like(lse)
    _bwd_dq_kernel[(B * N, nh)](
        q, k, v, out, do, lse, delta, dq, index,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *do.stride(), *dq.stride(), *lse.stride(),
        *index.stride(),
        N, dqk, dv, dense, kk, scale, scale * LOG2E,
        BLOCK_N=block_n, BLOCK_DQK=block_dqk, BLOCK_DV=block_dv, num_warps=num_warps,
    )

    # Per (image, head) and key: the entries of the sparse queries (rows of index) that list it, as flat
    # positions r * K + k (the kernel divides by K: no separate sources array). Entries outside [0, N) are
    # dropped from the lists (check=False), matching the forward, which ignores them.
    positions, offsets = transpose_positions(index, N, check=False)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dvt = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    _bwd_dkv_kernel[(B * N, nh)](
        q, k, v, do, lse, delta, dk, dvt, positions, offsets,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dvt.stride(), *lse.stride(),
        positions.stride(0), positions.stride(1), offsets.stride(0), offsets.stride(1),
        N, dqk, dv, dense, kk, scale, scale * LOG2E,
        BLOCK_N=block_n, BLOCK_DQK=block_dqk, BLOCK_DV=block_dv, num_warps=num_warps,
    )
    return dq, dk, dvt


class _SparseAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, index, scale, dense):
        out, lse = _forward(q, k, v, index, scale, dense)
        ctx.save_for_backward(q, k, v, out, lse, index)
        ctx.scale, ctx.dense = scale, dense
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, out, lse, index = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, out, lse, index, ctx.scale, ctx.dense)
        return dq, dk, dv, None, None, None


def sparse_attention_triton(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        index: torch.Tensor,
        scale: float,
        dense_queries: int,
) -> torch.Tensor:
    """Triton sparse attention; inputs validated by :func:`visionzoo.kernels.sparse_attention`."""
    return _SparseAttention.apply(q, k, v, index, float(scale), int(dense_queries))
