"""Routing attention, the Triton kernels (forward and backward).

Semantics are those of :mod:`.reference`; the routing itself (region means, a regions x regions matmul,
topk) is tiny and runs in torch (:func:`.torch_path.region_routing_torch`). Design (numbers in
``kernels/README.md``):

* Tokens are read straight from the (B, H, W, heads, D) tensors through their strides (views of a fused
  projection are fine): no partition, padding, gather or ``.contiguous()`` copy. Token ``t`` of region ``r``
  sits at ``row = (r // nw) * rh + t // rw``, ``col = (r % nw) * rw + t % rw``; rows >= H or cols >= W are
  padding.
* Key lists. A query region attends to the ``kk * T`` positions of its routed regions (T = rh*rw). The
  kernels walk that list in tiles of BLOCK_N positions: position ``n`` is token ``n % T`` of routed region
  ``index[b, r, n // T]``, whose id is loaded per lane. So one key tile may span several small regions
  (BiFormer stage 3: 2x2-token regions, topk 16: 64 keys in one tile instead of 16 tiles of 4).
* Forward (FlashAttention-2): one program per (image, query region, query tile) on axis 0, head on axis 1;
  online softmax in base 2 (log2 e folded into the scale), fp32 accumulation. Stores O and the log-sum-exp
  (base 2, fp32, (B, H, W, heads)).
* Backward, deterministic (no atomics), two kernels:
  1. dQ: per (image, query region, query tile, head) like the forward; computes Delta = rowsum(dO * O),
     stores it (fp32, (B, H, W, heads)) for kernel 2, and dQ = scale * sum over the key list of dS K.
  2. dK, dV: per (image, key region, key tile, head) over the *transposed* index: the query regions that
     routed to this key region (CSR lists from :func:`visionzoo.kernels._index.transpose_index`), walked in
     tiles of BLOCK_M query positions (position ``m``: token ``m % T`` of source ``m // T``). P is recomputed
     from Q, K and the LSE; dV += Pᵀ dO, dS = P (dO Vᵀ - Delta), dK += scale dSᵀ Q. Each program owns its
     key tile, so dK and dV are written once, without atomics, and bitwise reproducible.
* Padding: ``mask`` masks padded keys (score -inf); ``zeros`` loads them as zeros and keeps them (score 0,
  value 0). Padded queries are never stored; their P is forced to 0 in the backward. The first tile of a
  query's list always holds a real key (routing never picks an empty region with ``mask``; with ``zeros``
  every key counts), so the running max is finite after it.
* dtypes: fp16/bf16 operands go to ``tl.dot`` as they are (fp32 accumulation); fp32 inputs use
  ``input_precision="ieee"`` (no TF32). bf16 ``tl.dot`` is broken in the CPU interpreter, so bf16 operands
  are upcast to fp32 there.
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from .._index import transpose_index
from .torch_path import RegionGrid

__all__ = ["routing_attention_triton"]

LOG2E = 1.4426950408889634


def tile_sizes(tokens: int, keys: int, dqk: int, dv: int) -> Tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_DQK, BLOCK_DV, num_warps).

    BLOCK_M tiles a region's own tokens (forward, dQ: queries; dK/dV: keys), BLOCK_N a list of positions
    (forward, dQ: the kk*T routed keys; dK/dV: the routing queries, whose count is only known at run time).
    Every ``tl.dot`` dimension is >= 16 (the GPU minimum; the interpreter does not check it); head dims are
    padded to a power of two with masks; tiles shrink for large head dims to bound registers.
    """
    block_dqk = max(16, triton.next_power_of_2(dqk))
    block_dv = max(16, triton.next_power_of_2(dv))
    cap = 32 if max(block_dqk, block_dv) >= 128 else 64
    block_m = min(cap, max(16, triton.next_power_of_2(tokens)))
    block_n = min(cap, max(16, triton.next_power_of_2(keys)))
    num_warps = 8 if max(block_dqk, block_dv) >= 128 else 4
    return block_m, block_n, block_dqk, block_dv, num_warps


@triton.jit
def _region_token(reg, t, rh, rw, nw, H, W):
    """Map row/column of token(s) ``t`` of region(s) ``reg`` and whether they are inside the map."""
    row = (reg // nw) * rh + t // rw
    col = (reg % nw) * rw + t % rw
    return row, col, (row < H) & (col < W)


@triton.jit
def _offsets(b, h, row, col, offs_d, s_b, s_h, s_w, s_n, s_d):
    """Element offsets of a (tokens, head_dim) tile of head ``h`` in a (B, H, W, heads, D) tensor."""
    return b * s_b + h * s_n + (row * s_h + col * s_w)[:, None] + offs_d[None, :] * s_d


@triton.jit
def _routed_keys(IDX, b, r, n0, sib, sir, sik, T, L, rh, rw, nw, H, W,
                 MASK_PAD: tl.constexpr, BLOCK_N: tl.constexpr):
    """Positions n0 .. n0+BLOCK_N of query region r's key list: map row/col, in-map flag, softmax validity."""
    n = n0 + tl.arange(0, BLOCK_N)
    in_list = n < L
    slot = n // T
    kreg = tl.load(IDX + b * sib + r * sir + slot * sik, mask=in_list, other=0)
    krow, kcol, k_in = _region_token(kreg, n - slot * T, rh, rw, nw, H, W)
    k_in = k_in & in_list
    if MASK_PAD:
        valid = k_in
    else:  # zeros: padded keys take part (loaded as zeros)
        valid = in_list
    return krow, kcol, k_in, valid


@triton.jit
def _fwd_kernel(
        Q, K, V, O, LSE, IDX,
        sqb, sqh, sqw, sqn, sqd,
        skb, skh, skw, skn, skd,
        svb, svh, svw, svn, svd,
        sob, soh, sow, son, sod,
        slb, slh, slw, sln,
        sib, sir, sik,
        H, W, DQK, DV, rh, rw, nw, R, T, KK, qk_scale,
        NUM_QT: tl.constexpr, MASK_PAD: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    qt = pid % NUM_QT
    reg = pid // NUM_QT
    b = (reg // R).to(tl.int64)  # batch offsets may exceed int32
    r = reg % R

    offs_dq = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    dq_ok = offs_dq < DQK
    dv_ok = offs_dv < DV
    tq = qt * BLOCK_M + tl.arange(0, BLOCK_M)
    qrow, qcol, q_in = _region_token(r, tq, rh, rw, nw, H, W)
    q_ok = q_in & (tq < T)
    q = tl.load(Q + _offsets(b, h, qrow, qcol, offs_dq, sqb, sqh, sqw, sqn, sqd),
                mask=q_ok[:, None] & dq_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    L = KK * T
    for n0 in range(0, L, BLOCK_N):
        krow, kcol, k_in, valid = _routed_keys(IDX, b, r, n0, sib, sir, sik, T, L, rh, rw, nw, H, W,
                                               MASK_PAD, BLOCK_N)
        k = tl.load(K + _offsets(b, h, krow, kcol, offs_dq, skb, skh, skw, skn, skd),
                    mask=k_in[:, None] & dq_ok[None, :], other=0.0)
        v = tl.load(V + _offsets(b, h, krow, kcol, offs_dv, svb, svh, svw, svn, svd),
                    mask=k_in[:, None] & dv_ok[None, :], other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m_i = m_new

    out = acc / l_i[:, None]
    tl.store(O + _offsets(b, h, qrow, qcol, offs_dv, sob, soh, sow, son, sod), out.to(O.dtype.element_ty),
             mask=q_ok[:, None] & dv_ok[None, :])
    tl.store(LSE + b * slb + h * sln + qrow * slh + qcol * slw, m_i + tl.log2(l_i), mask=q_ok)


@triton.jit
def _bwd_dq_kernel(
        Q, K, V, O, DO, LSE, DELTA, DQ, IDX,
        sqb, sqh, sqw, sqn, sqd,
        skb, skh, skw, skn, skd,
        svb, svh, svw, svn, svd,
        sob, soh, sow, son, sod,  # O
        sdb, sdh, sdw, sdn, sdd,  # dO
        sgb, sgh, sgw, sgn, sgd,  # dQ
        slb, slh, slw, sln,  # LSE and DELTA
        sib, sir, sik,
        H, W, DQK, DV, rh, rw, nw, R, T, KK, scale, qk_scale,
        NUM_QT: tl.constexpr, MASK_PAD: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    qt = pid % NUM_QT
    reg = pid // NUM_QT
    b = (reg // R).to(tl.int64)
    r = reg % R

    offs_dq = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    dq_ok = offs_dq < DQK
    dv_ok = offs_dv < DV
    tq = qt * BLOCK_M + tl.arange(0, BLOCK_M)
    qrow, qcol, q_in = _region_token(r, tq, rh, rw, nw, H, W)
    q_ok = q_in & (tq < T)
    q_mask = q_ok[:, None] & dq_ok[None, :]
    o_mask = q_ok[:, None] & dv_ok[None, :]
    q = tl.load(Q + _offsets(b, h, qrow, qcol, offs_dq, sqb, sqh, sqw, sqn, sqd), mask=q_mask, other=0.0)
    do = tl.load(DO + _offsets(b, h, qrow, qcol, offs_dv, sdb, sdh, sdw, sdn, sdd), mask=o_mask, other=0.0)
    o = tl.load(O + _offsets(b, h, qrow, qcol, offs_dv, sob, soh, sow, son, sod), mask=o_mask, other=0.0)
    l_off = b * slb + h * sln + qrow * slh + qcol * slw
    lse = tl.load(LSE + l_off, mask=q_ok, other=0.0)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
    tl.store(DELTA + l_off, delta, mask=q_ok)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)

    dq = tl.zeros([BLOCK_M, BLOCK_DQK], tl.float32)
    L = KK * T
    for n0 in range(0, L, BLOCK_N):
        krow, kcol, k_in, valid = _routed_keys(IDX, b, r, n0, sib, sir, sik, T, L, rh, rw, nw, H, W,
                                               MASK_PAD, BLOCK_N)
        k = tl.load(K + _offsets(b, h, krow, kcol, offs_dq, skb, skh, skw, skn, skd),
                    mask=k_in[:, None] & dq_ok[None, :], other=0.0)
        v = tl.load(V + _offsets(b, h, krow, kcol, offs_dv, svb, svh, svw, svn, svd),
                    mask=k_in[:, None] & dv_ok[None, :], other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
        # Padded queries (lse unset) and invalid keys get P = 0, so they add nothing.
        p = tl.where(q_ok[:, None] & valid[None, :], tl.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        ds = p * (dp - delta[:, None])  # dL/d(score), score = scale * q.k
        dq += tl.dot(ds.to(k.dtype), k, input_precision="ieee")
    tl.store(DQ + _offsets(b, h, qrow, qcol, offs_dq, sgb, sgh, sgw, sgn, sgd), (dq * scale).to(DQ.dtype.element_ty),
             mask=q_mask)


@triton.jit
def _bwd_dkv_kernel(
        Q, K, V, DO, LSE, DELTA, DK, DV_OUT, SRC, OFF,
        sqb, sqh, sqw, sqn, sqd,
        skb, skh, skw, skn, skd,
        svb, svh, svw, svn, svd,
        sdb, sdh, sdw, sdn, sdd,  # dO
        skgb, skgh, skgw, skgn, skgd,  # dK
        svgb, svgh, svgw, svgn, svgd,  # dV
        slb, slh, slw, sln,
        ssb, sfb,  # batch strides of the transposed index's sources and offsets
        H, W, DQK, DV, rh, rw, nw, R, T, scale, qk_scale,
        NUM_KT: tl.constexpr, MASK_PAD: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """One program per (image, key region, key tile) and head. Here BLOCK_M tiles the key region's own tokens
    and BLOCK_N the list of routing query positions (see :func:`tile_sizes`)."""
    pid = tl.program_id(0)
    h = tl.program_id(1)
    kt = pid % NUM_KT
    reg = pid // NUM_KT
    b = (reg // R).to(tl.int64)
    r = reg % R

    offs_dq = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    dq_ok = offs_dq < DQK
    dv_ok = offs_dv < DV
    tk = kt * BLOCK_M + tl.arange(0, BLOCK_M)
    krow, kcol, k_in = _region_token(r, tk, rh, rw, nw, H, W)
    k_in = k_in & (tk < T)
    if MASK_PAD:
        k_valid = k_in
    else:
        k_valid = tk < T
    k_mask = k_in[:, None] & dq_ok[None, :]
    v_mask = k_in[:, None] & dv_ok[None, :]
    k = tl.load(K + _offsets(b, h, krow, kcol, offs_dq, skb, skh, skw, skn, skd), mask=k_mask, other=0.0)
    v = tl.load(V + _offsets(b, h, krow, kcol, offs_dv, svb, svh, svw, svn, svd), mask=v_mask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)

    start = tl.load(OFF + b * sfb + r)
    end = tl.load(OFF + b * sfb + r + 1)
    n_pos = (end - start) * T  # query positions of the regions that routed to r
    dk = tl.zeros([BLOCK_M, BLOCK_DQK], tl.float32)
    dv = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for m0 in range(0, n_pos, BLOCK_N):
        m = m0 + tl.arange(0, BLOCK_N)
        in_list = m < n_pos
        j = m // T
        qreg = tl.load(SRC + b * ssb + start + j, mask=in_list, other=0)
        qrow, qcol, q_in = _region_token(qreg, m - j * T, rh, rw, nw, H, W)
        q_ok = q_in & in_list
        q = tl.load(Q + _offsets(b, h, qrow, qcol, offs_dq, sqb, sqh, sqw, sqn, sqd),
                    mask=q_ok[:, None] & dq_ok[None, :], other=0.0)
        do = tl.load(DO + _offsets(b, h, qrow, qcol, offs_dv, sdb, sdh, sdw, sdn, sdd),
                     mask=q_ok[:, None] & dv_ok[None, :], other=0.0)
        l_off = b * slb + h * sln + qrow * slh + qcol * slw
        lse = tl.load(LSE + l_off, mask=q_ok, other=0.0)
        delta = tl.load(DELTA + l_off, mask=q_ok, other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        # Transposed scores (keys x queries), so the dK/dV products need no transposes of big tiles.
        st = tl.dot(k, tl.trans(q), input_precision="ieee") * qk_scale
        pt = tl.where(k_valid[:, None] & q_ok[None, :], tl.exp2(st - lse[None, :]), 0.0)
        dv += tl.dot(pt.to(do.dtype), do, input_precision="ieee")
        dpt = tl.dot(v, tl.trans(do), input_precision="ieee")
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(q.dtype), q, input_precision="ieee")
    tl.store(DK + _offsets(b, h, krow, kcol, offs_dq, skgb, skgh, skgw, skgn, skgd),
             (dk * scale).to(DK.dtype.element_ty), mask=k_mask)
    tl.store(DV_OUT + _offsets(b, h, krow, kcol, offs_dv, svgb, svgh, svgw, svgn, svgd),
             dv.to(DV_OUT.dtype.element_ty), mask=v_mask)


def _upcast(q: torch.Tensor) -> bool:
    # fp32 dots for fp32 inputs; bf16 dots only on a real GPU (broken in the CPU interpreter).
    return q.dtype == torch.float32 or (q.dtype == torch.bfloat16 and not q.is_cuda)


def _geometry_args(grid: RegionGrid, kk: int):
    return grid.H, grid.W, grid.rh, grid.rw, grid.nw, grid.num_regions, grid.tokens, kk


def _forward(q, k, v, index, grid: RegionGrid, scale: float, mask_pad: bool):
    B, H, W, nh, dqk = q.shape
    dv = v.shape[-1]
    kk = index.shape[-1]
    block_m, block_n, block_dqk, block_dv, num_warps = tile_sizes(grid.tokens, kk * grid.tokens, dqk, dv)
    num_qt = triton.cdiv(grid.tokens, block_m)
    out = torch.empty((B, H, W, nh, dv), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, W, nh), dtype=torch.float32, device=q.device)
    H_, W_, rh, rw, nw, R, T, KK = _geometry_args(grid, kk)
    _fwd_kernel[(B * R * num_qt, nh)](
        q, k, v, out, lse, index,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *lse.stride(), *index.stride(),
        H_, W_, dqk, dv, rh, rw, nw, R, T, KK, scale * LOG2E,
        NUM_QT=num_qt, MASK_PAD=mask_pad, UPCAST=_upcast(q),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_DQK=block_dqk, BLOCK_DV=block_dv, num_warps=num_warps,
    )
    return out, lse


def transposed_routing(index: torch.Tensor, grid: RegionGrid):
    """CSR lists of the query regions that routed to each key region (regions without a real token dropped:
    they have no query)."""
    live = grid.live_regions(index.device)
    if not bool(live.all()):
        index = index.masked_fill(~live[None, :, None], -1)
    return transpose_index(index, grid.num_regions, check=False)


def _backward(do, q, k, v, out, lse, index, grid: RegionGrid, scale: float, mask_pad: bool):
    B, H, W, nh, dqk = q.shape
    dv = v.shape[-1]
    kk = index.shape[-1]
    H_, W_, rh, rw, nw, R, T, KK = _geometry_args(grid, kk)
    upcast = _upcast(q)

    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    delta = torch.empty_like(lse)
    block_m, block_n, block_dqk, block_dv, num_warps = tile_sizes(T, kk * T, dqk, dv)
    num_qt = triton.cdiv(T, block_m)
    _bwd_dq_kernel[(B * R * num_qt, nh)](
        q, k, v, out, do, lse, delta, dq, index,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *do.stride(), *dq.stride(), *lse.stride(),
        *index.stride(),
        H_, W_, dqk, dv, rh, rw, nw, R, T, KK, scale, scale * LOG2E,
        NUM_QT=num_qt, MASK_PAD=mask_pad, UPCAST=upcast,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_DQK=block_dqk, BLOCK_DV=block_dv, num_warps=num_warps,
    )

    tr = transposed_routing(index, grid)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dvt = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    # Query positions per key region: up to R * T (every region routing to it); typically ~kk * T.
    block_m, block_n, block_dqk, block_dv, num_warps = tile_sizes(T, kk * T, dqk, dv)
    num_kt = triton.cdiv(T, block_m)
    _bwd_dkv_kernel[(B * R * num_kt, nh)](
        q, k, v, do, lse, delta, dk, dvt, tr.sources, tr.offsets,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dvt.stride(), *lse.stride(),
        tr.sources.stride(0), tr.offsets.stride(0),
        H_, W_, dqk, dv, rh, rw, nw, R, T, scale, scale * LOG2E,
        NUM_KT=num_kt, MASK_PAD=mask_pad, UPCAST=upcast,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_DQK=block_dqk, BLOCK_DV=block_dv, num_warps=num_warps,
    )
    return dq, dk, dvt


class _RoutingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, index, grid, scale, mask_pad):
        out, lse = _forward(q, k, v, index, grid, scale, mask_pad)
        ctx.save_for_backward(q, k, v, out, lse, index)
        ctx.grid, ctx.scale, ctx.mask_pad = grid, scale, mask_pad
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, out, lse, index = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, out, lse, index, ctx.grid, ctx.scale, ctx.mask_pad)
        return dq, dk, dv, None, None, None, None


def routing_attention_triton(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        grid: RegionGrid,
        index: torch.Tensor,
        scale: float,
        padding: str,
) -> torch.Tensor:
    """Triton routing attention; inputs validated by :func:`visionzoo.kernels.routing_attention`."""
    index = index.to(torch.int32).contiguous()
    return _RoutingAttention.apply(q, k, v, index, grid, float(scale), padding == "mask")
