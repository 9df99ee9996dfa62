"""Neighbourhood attention, the Triton kernels (forward and backward).

Semantics are those of :mod:`.reference`; the index rule comes from ``kernels/_neighborhood.py``
(``nb_*`` helpers). Design (details and byte counts in ``kernels/README.md``):

* **Tiles.** Work is split per image, per dilation residue class (rr, rc) and per tile of
  TH x TW sub-lattice positions (BLOCK_M = TH * TW = 64 queries). Every class uses the same number of
  tiles per axis (that of the longest class); positions past the end of a shorter class are clamped
  duplicates: computed like their real twin, never stored, masked out of every sum.
* **Halo, loaded once.** A query tile needs the keys ``start(first) .. start(last) + k - 1`` per axis
  (at most TH + k - 1 rows and TW + k - 1 columns): its halo. The forward streams the halo once, in
  chunks of BLOCK_N keys of the flattened (rows x cols) halo, straight from the strided (B, H, W, heads, D)
  tensors (views of a fused qkv are read in place: no partition, padding or k*k copy). Each (query, key)
  pair is masked to the query's own window, and the bias table is read at (key - query) + k - 1.
* **Forward** (FlashAttention-2 style): online softmax in base 2 (log2 e folded into the scale and the
  bias), fp32 accumulation; stores O and the base-2 log-sum-exp per query.
* **Backward, deterministic (no atomics)**, two kernels:
  1. ``_bwd_dq_kernel`` per query tile: Delta = rowsum(dO * O) (stored for kernel 2), then over the halo
     chunks P (recomputed from the LSE), dP = dO V^T, dS = P (dP - Delta), dQ = scale * dS K. With a bias
     gradient, the program also sums dS into the (2k-1)^2 bias bins (see below) in registers, over a
     chunk of tiles, and stores one partial per (chunk, head); torch sums the partials.
  2. ``_bwd_dkdv_kernel`` per key tile: its queries are the inverse neighbourhood of the tile (contiguous
     per axis: ``_neighborhood.inverse_range_sub``), streamed in chunks: dV += P^T dO, dK += scale dS^T Q.
* **Bias gradient without scatter.** In a (query tile x key chunk) block, bin (a, b) of query m is the key
  at (row_m + a - k + 1, col_m + b - k + 1); its column in the chunk is computed and the dS block is
  gathered (``tl.gather``) into a (queries x bins) block, then summed over the queries. Pairs outside a
  window have dS = 0, so only keys outside the chunk need masking.
* **dtypes.** fp16/bf16 operands go to ``tl.dot`` as they are (fp32 accumulation); fp32 uses
  ``input_precision="ieee"`` (no TF32). bf16 ``tl.dot`` is broken in the CPU interpreter, so bf16 is
  upcast to fp32 there.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._neighborhood import (nb_decode_tile, nb_in_window, nb_key_halo, nb_query_halo, nb_rpb_offset,
                             nb_sublattice_length, nb_tile_positions, nb_window_start)

__all__ = ["neighborhood_attention_triton"]

LOG2E = 1.4426950408889634
BIN_BLOCK = 64  # bias bins handled per gather in the dQ kernel (at most)
RPB_TARGET_PROGRAMS = 1024  # programs of the dQ kernel when it also sums the bias gradient


def tile_config(longest_w: int, head_dim: int) -> Tuple[int, int, int, int, int]:
    """(TW, BLOCK_M, BLOCK_N, BLOCK_D, num_warps).

    Query/key tiles are BLOCK_M = 64 positions of one sub-lattice, TW = min(8, next_pow2(longest class
    along W)) wide and 64 / TW tall; halo chunks hold BLOCK_N keys. Every ``tl.dot`` dimension is >= 16
    (the GPU minimum; the interpreter does not check it). Head dims are padded to a power of two >= 16.
    """
    block_d = max(16, triton.next_power_of_2(head_dim))
    tw = min(8, triton.next_power_of_2(longest_w))
    block_n = 32 if block_d >= 128 else 64
    num_warps = 8 if block_d >= 128 else 4
    return tw, 64, block_n, block_d, num_warps


@triton.jit
def _offsets(b, h, row, col, offs_d, s_b, s_h, s_w, s_n, s_d):
    """Element offsets of a (tokens, head_dim) tile of head h in a (B, H, W, heads, D) tensor."""
    return b * s_b + h * s_n + (row * s_h + col * s_w)[:, None] + offs_d[None, :] * s_d


@triton.jit
def _scores(q, k, pr, pc, kr, kc, sr, sc, k_ok, h, RPB, s_rh, s_ra, s_rb, qk_scale,
            KS: tl.constexpr, HAS_RPB: tl.constexpr):
    """Base-2 scores of (queries at pr, pc with window starts sr, sc) x (keys at kr, kc), -inf outside the
    windows; also returns the pair mask."""
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
    pair = nb_in_window(sr[:, None], kr[None, :], KS) & nb_in_window(sc[:, None], kc[None, :], KS) & k_ok[None, :]
    if HAS_RPB:
        bias = tl.load(RPB + h * s_rh + nb_rpb_offset(pr[:, None], kr[None, :], KS) * s_ra
                       + nb_rpb_offset(pc[:, None], kc[None, :], KS) * s_rb, mask=pair, other=0.0)
        s += bias.to(tl.float32) * 1.4426950408889634  # log2(e)
    return tl.where(pair, s, float("-inf")), pair


@triton.jit
def _fwd_kernel(
        Q, K, V, O, LSE, RPB,
        sqb, sqh, sqw, sqn, sqd,
        skb, skh, skw, skn, skd,
        svb, svh, svw, svn, svd,
        sob, soh, sow, son, sod,
        slb, slh, slw, sln,
        s_rh, s_ra, s_rb,
        H, W, D, DIL, n_th, n_tw, qk_scale,
        KS: tl.constexpr, TW: tl.constexpr, HAS_RPB: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    TH: tl.constexpr = BLOCK_M // TW
    h = tl.program_id(1)
    b, rr, rc, th, tw = nb_decode_tile(tl.program_id(0), n_th, n_tw, DIL)
    b = b.to(tl.int64)  # batch offsets may exceed int32
    Lr = nb_sublattice_length(H, rr, DIL)
    Lc = nb_sublattice_length(W, rc, DIL)
    pr, pc, q_ok = nb_tile_positions(th, tw, Lr, Lc, TH, TW, BLOCK_M)
    sr = nb_window_start(pr, Lr, KS)
    sc = nb_window_start(pc, Lc, KS)
    hr0, n_hr = nb_query_halo(th, Lr, TH, KS)
    hc0, n_hc = nb_query_halo(tw, Lc, TW, KS)

    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    # clamped duplicates are real positions: load every row, store only the real ones
    q = tl.load(Q + _offsets(b, h, rr + DIL * pr, rc + DIL * pc, offs_d, sqb, sqh, sqw, sqn, sqd),
                mask=d_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    # A finite initial max: a chunk may hold no key of some query's window (all -inf), and
    # exp2(-inf - (-inf)) would be NaN. Real scores are far above -1e30.
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n_halo = n_hr * n_hc
    for n0 in range(0, n_halo, BLOCK_N):
        u = n0 + tl.arange(0, BLOCK_N)
        k_ok = u < n_halo
        kr = hr0 + u // n_hc
        kc = hc0 + u % n_hc
        kv_mask = k_ok[:, None] & d_ok[None, :]
        k = tl.load(K + _offsets(b, h, rr + DIL * kr, rc + DIL * kc, offs_d, skb, skh, skw, skn, skd),
                    mask=kv_mask, other=0.0)
        v = tl.load(V + _offsets(b, h, rr + DIL * kr, rc + DIL * kc, offs_d, svb, svh, svw, svn, svd),
                    mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s, pair = _scores(q, k, pr, pc, kr, kc, sr, sc, k_ok, h, RPB, s_rh, s_ra, s_rb, qk_scale, KS, HAS_RPB)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m_i = m_new

    out = acc / l_i[:, None]  # every query has k*k keys in its halo: l_i > 0
    qrow = rr + DIL * pr
    qcol = rc + DIL * pc
    tl.store(O + _offsets(b, h, qrow, qcol, offs_d, sob, soh, sow, son, sod), out.to(O.dtype.element_ty),
             mask=q_ok[:, None] & d_ok[None, :])
    tl.store(LSE + b * slb + h * sln + qrow * slh + qcol * slw, m_i + tl.log2(l_i), mask=q_ok)


@triton.jit
def _bwd_dq_kernel(
        Q, K, V, O, DO, LSE, DELTA, RPB, DQ, DRPB,
        sqb, sqh, sqw, sqn, sqd,
        skb, skh, skw, skn, skd,
        svb, svh, svw, svn, svd,
        sob, soh, sow, son, sod,  # O and DQ: contiguous (B, H, W, heads, D)
        sdb, sdh, sdw, sdn, sdd,
        slb, slh, slw, sln,  # LSE and DELTA: contiguous (B, H, W, heads)
        s_rh, s_ra, s_rb,
        H, W, D, DIL, n_th, n_tw, n_tiles, tiles_per_chunk, scale, qk_scale,
        KS: tl.constexpr, TW: tl.constexpr, HAS_RPB: tl.constexpr, RPB_GRAD: tl.constexpr,
        UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        BIN_BLOCK: tl.constexpr, N_BIN_BLOCKS: tl.constexpr,
):
    TH: tl.constexpr = BLOCK_M // TW
    NB: tl.constexpr = (2 * KS - 1) * (2 * KS - 1)
    chunk = tl.program_id(0)
    h = tl.program_id(1)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    drpb = tl.zeros([N_BIN_BLOCKS, BIN_BLOCK], tl.float32)
    tile_start = chunk * tiles_per_chunk
    tile_end = tl.minimum(tile_start + tiles_per_chunk, n_tiles)
    for tile in range(tile_start, tile_end):
        b, rr, rc, th, tw = nb_decode_tile(tile, n_th, n_tw, DIL)
        b = b.to(tl.int64)
        Lr = nb_sublattice_length(H, rr, DIL)
        Lc = nb_sublattice_length(W, rc, DIL)
        pr, pc, q_ok = nb_tile_positions(th, tw, Lr, Lc, TH, TW, BLOCK_M)
        sr = nb_window_start(pr, Lr, KS)
        sc = nb_window_start(pc, Lc, KS)
        hr0, n_hr = nb_query_halo(th, Lr, TH, KS)
        hc0, n_hc = nb_query_halo(tw, Lc, TW, KS)
        qrow = rr + DIL * pr
        qcol = rc + DIL * pc

        q = tl.load(Q + _offsets(b, h, qrow, qcol, offs_d, sqb, sqh, sqw, sqn, sqd), mask=d_ok[None, :], other=0.0)
        do = tl.load(DO + _offsets(b, h, qrow, qcol, offs_d, sdb, sdh, sdw, sdn, sdd), mask=d_ok[None, :], other=0.0)
        o_off = _offsets(b, h, qrow, qcol, offs_d, sob, soh, sow, son, sod)
        o = tl.load(O + o_off, mask=d_ok[None, :], other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
        l_off = b * slb + h * sln + qrow * slh + qcol * slw
        tl.store(DELTA + l_off, delta, mask=q_ok)
        lse = tl.load(LSE + l_off)

        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        n_halo = n_hr * n_hc
        for n0 in range(0, n_halo, BLOCK_N):
            u = n0 + tl.arange(0, BLOCK_N)
            k_ok = u < n_halo
            kr = hr0 + u // n_hc
            kc = hc0 + u % n_hc
            kv_mask = k_ok[:, None] & d_ok[None, :]
            k = tl.load(K + _offsets(b, h, rr + DIL * kr, rc + DIL * kc, offs_d, skb, skh, skw, skn, skd),
                        mask=kv_mask, other=0.0)
            v = tl.load(V + _offsets(b, h, rr + DIL * kr, rc + DIL * kc, offs_d, svb, svh, svw, svn, svd),
                        mask=kv_mask, other=0.0)
            if UPCAST:
                k = k.to(tl.float32)
                v = v.to(tl.float32)
            s, pair = _scores(q, k, pr, pc, kr, kc, sr, sc, k_ok, h, RPB, s_rh, s_ra, s_rb, qk_scale, KS, HAS_RPB)
            p = tl.where(pair, tl.exp2(s - lse[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision="ieee")
            ds = p * (dp - delta[:, None])  # dL/d(score), score = scale * q.k + bias
            dq += tl.dot(ds.to(k.dtype), k, input_precision="ieee")
            if RPB_GRAD:
                # bin (a, b) of query m is the key (pr + a - KS + 1, pc + b - KS + 1); gather its dS column
                ds_real = tl.where(q_ok[:, None], ds, 0.0)  # clamped duplicates must not count twice
                for j in tl.static_range(N_BIN_BLOCKS):
                    if j * BIN_BLOCK < NB:  # compile-time: skip the blocks that only pad to a power of two
                        bins = j * BIN_BLOCK + tl.arange(0, BIN_BLOCK)
                        ur = pr[:, None] + (bins // (2 * KS - 1))[None, :] - (KS - 1) - hr0
                        uc = pc[:, None] + (bins % (2 * KS - 1))[None, :] - (KS - 1) - hc0
                        col = ur * n_hc + uc - n0
                        ok = ((bins < NB)[None, :] & (ur >= 0) & (ur < n_hr) & (uc >= 0) & (uc < n_hc)
                              & (col >= 0) & (col < BLOCK_N))
                        g = tl.gather(ds_real, tl.where(ok, col, 0), 1)
                        part = tl.sum(tl.where(ok, g, 0.0), 0)
                        drpb += tl.where((tl.arange(0, N_BIN_BLOCKS) == j)[:, None], part[None, :], 0.0)
        tl.store(DQ + o_off, (dq * scale).to(DQ.dtype.element_ty), mask=q_ok[:, None] & d_ok[None, :])
    if RPB_GRAD:
        base = DRPB + (chunk * tl.num_programs(1) + h) * (N_BIN_BLOCKS * BIN_BLOCK)
        tl.store(base + tl.arange(0, N_BIN_BLOCKS)[:, None] * BIN_BLOCK + tl.arange(0, BIN_BLOCK)[None, :], drpb)


@triton.jit
def _bwd_dkdv_kernel(
        Q, K, V, DO, LSE, DELTA, RPB, DK, DV,
        sqb, sqh, sqw, sqn, sqd,
        skb, skh, skw, skn, skd,
        svb, svh, svw, svn, svd,
        sob, soh, sow, son, sod,  # DK and DV: contiguous (B, H, W, heads, D)
        sdb, sdh, sdw, sdn, sdd,
        slb, slh, slw, sln,
        s_rh, s_ra, s_rb,
        H, W, D, DIL, n_th, n_tw, scale, qk_scale,
        KS: tl.constexpr, TW: tl.constexpr, HAS_RPB: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program per key tile (BLOCK_M keys); its queries (inverse neighbourhood) in chunks of BLOCK_N."""
    TH: tl.constexpr = BLOCK_M // TW
    h = tl.program_id(1)
    b, rr, rc, th, tw = nb_decode_tile(tl.program_id(0), n_th, n_tw, DIL)
    b = b.to(tl.int64)
    Lr = nb_sublattice_length(H, rr, DIL)
    Lc = nb_sublattice_length(W, rc, DIL)
    kr, kc, k_ok = nb_tile_positions(th, tw, Lr, Lc, TH, TW, BLOCK_M)
    qr0, n_qr = nb_key_halo(th, Lr, TH, KS)
    qc0, n_qc = nb_key_halo(tw, Lc, TW, KS)
    krow = rr + DIL * kr
    kcol = rc + DIL * kc

    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    k = tl.load(K + _offsets(b, h, krow, kcol, offs_d, skb, skh, skw, skn, skd), mask=d_ok[None, :], other=0.0)
    v = tl.load(V + _offsets(b, h, krow, kcol, offs_d, svb, svh, svw, svn, svd), mask=d_ok[None, :], other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n_q = n_qr * n_qc
    for n0 in range(0, n_q, BLOCK_N):
        u = n0 + tl.arange(0, BLOCK_N)
        q_ok = u < n_q
        qr = qr0 + u // n_qc
        qc = qc0 + u % n_qc
        qrow = rr + DIL * qr
        qcol = rc + DIL * qc
        q_mask = q_ok[:, None] & d_ok[None, :]
        q = tl.load(Q + _offsets(b, h, qrow, qcol, offs_d, sqb, sqh, sqw, sqn, sqd), mask=q_mask, other=0.0)
        do = tl.load(DO + _offsets(b, h, qrow, qcol, offs_d, sdb, sdh, sdw, sdn, sdd), mask=q_mask, other=0.0)
        l_off = b * slb + h * sln + qrow * slh + qcol * slw
        lse = tl.load(LSE + l_off, mask=q_ok, other=0.0)
        delta = tl.load(DELTA + l_off, mask=q_ok, other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        # scores transposed, (keys of the tile) x (queries of the chunk); pair: key in the query's window
        pair = (nb_in_window(nb_window_start(qr, Lr, KS)[None, :], kr[:, None], KS)
                & nb_in_window(nb_window_start(qc, Lc, KS)[None, :], kc[:, None], KS) & q_ok[None, :])
        st = tl.dot(k, tl.trans(q), input_precision="ieee") * qk_scale
        if HAS_RPB:
            bias = tl.load(RPB + h * s_rh + nb_rpb_offset(qr[None, :], kr[:, None], KS) * s_ra
                           + nb_rpb_offset(qc[None, :], kc[:, None], KS) * s_rb, mask=pair, other=0.0)
            st += bias.to(tl.float32) * 1.4426950408889634
        pt = tl.where(pair, tl.exp2(st - lse[None, :]), 0.0)
        dv += tl.dot(pt.to(do.dtype), do, input_precision="ieee")
        dpt = tl.dot(v, tl.trans(do), input_precision="ieee")
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(q.dtype), q, input_precision="ieee")
    kv_off = _offsets(b, h, krow, kcol, offs_d, sob, soh, sow, son, sod)
    kv_mask = k_ok[:, None] & d_ok[None, :]
    tl.store(DK + kv_off, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=kv_mask)


def _upcast(q: torch.Tensor) -> bool:
    # fp32 dots for fp32 inputs; bf16 dots only on a real GPU (broken in the CPU interpreter).
    return q.dtype == torch.float32 or (q.dtype == torch.bfloat16 and not q.is_cuda)


def _rpb_args(rpb: Optional[torch.Tensor], dummy: torch.Tensor):
    """(pointer, strides) for the kernels; ``dummy`` stands in when there is no bias (never read)."""
    return (rpb, rpb.stride()) if rpb is not None else (dummy, (0, 0, 0))


def _geometry(q: torch.Tensor, dilation: int):
    """(TW, BLOCK_M, BLOCK_N, BLOCK_D, num_warps, tiles per class along H, along W, tiles in all)."""
    B, H, W, _, D = q.shape
    tw, block_m, block_n, block_d, num_warps = tile_config(-(-W // dilation), D)
    th = block_m // tw
    n_th, n_tw = triton.cdiv(-(-H // dilation), th), triton.cdiv(-(-W // dilation), tw)
    return tw, block_m, block_n, block_d, num_warps, n_th, n_tw, B * dilation * dilation * n_th * n_tw


def _forward(q, k, v, kernel_size, dilation, rpb, scale):
    B, H, W, nh, D = q.shape
    tw, block_m, block_n, block_d, num_warps, n_th, n_tw, n_tiles = _geometry(q, dilation)
    out = torch.empty((B, H, W, nh, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, W, nh), dtype=torch.float32, device=q.device)
    rpb_ptr, rpb_strides = _rpb_args(rpb, q)
    _fwd_kernel[(n_tiles, nh)](
        q, k, v, out, lse, rpb_ptr,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *lse.stride(), *rpb_strides,
        H, W, D, dilation, n_th, n_tw, scale * LOG2E,
        KS=kernel_size, TW=tw, HAS_RPB=rpb is not None, UPCAST=_upcast(q),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps,
    )
    return out, lse


def rpb_chunks(n_tiles: int, heads: int) -> int:
    """Number of tile chunks (= bias-gradient partials) of the dQ kernel: about RPB_TARGET_PROGRAMS programs."""
    return max(1, min(n_tiles, -(-RPB_TARGET_PROGRAMS // heads)))


def _backward(do, q, k, v, out, lse, kernel_size, dilation, rpb, scale, rpb_grad: bool):
    B, H, W, nh, D = q.shape
    tw, block_m, block_n, block_d, num_warps, n_th, n_tw, n_tiles = _geometry(q, dilation)
    dq = torch.empty_like(out)
    dk = torch.empty_like(out)
    dv = torch.empty_like(out)
    delta = torch.empty_like(lse)
    n_bins = (2 * kernel_size - 1) ** 2
    bin_block = min(BIN_BLOCK, triton.next_power_of_2(n_bins))
    n_bin_blocks = triton.next_power_of_2(triton.cdiv(n_bins, bin_block))  # a register tile: power of two
    if rpb_grad:
        n_chunks = rpb_chunks(n_tiles, nh)
        tiles_per_chunk = triton.cdiv(n_tiles, n_chunks)
        n_chunks = triton.cdiv(n_tiles, tiles_per_chunk)
        drpb_part = torch.empty((n_chunks, nh, n_bin_blocks * bin_block), dtype=torch.float32, device=q.device)
    else:  # one tile per program: the most parallelism
        n_chunks, tiles_per_chunk, drpb_part = n_tiles, 1, lse
    assert out.is_contiguous() and dq.is_contiguous() and lse.is_contiguous()
    rpb_ptr, rpb_strides = _rpb_args(rpb, q)
    common = dict(KS=kernel_size, TW=tw, HAS_RPB=rpb is not None, UPCAST=_upcast(q),
                  BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps)
    _bwd_dq_kernel[(n_chunks, nh)](
        q, k, v, out, do, lse, delta, rpb_ptr, dq, drpb_part,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *do.stride(), *lse.stride(), *rpb_strides,
        H, W, D, dilation, n_th, n_tw, n_tiles, tiles_per_chunk, scale, scale * LOG2E,
        RPB_GRAD=rpb_grad, BIN_BLOCK=bin_block, N_BIN_BLOCKS=n_bin_blocks, **common,
    )
    _bwd_dkdv_kernel[(n_tiles, nh)](
        q, k, v, do, lse, delta, rpb_ptr, dk, dv,
        *q.stride(), *k.stride(), *v.stride(), *dk.stride(), *do.stride(), *lse.stride(), *rpb_strides,
        H, W, D, dilation, n_th, n_tw, scale, scale * LOG2E, **common,
    )
    drpb = None
    if rpb_grad:
        drpb = drpb_part.sum(0)[:, :n_bins].reshape(rpb.shape).to(rpb.dtype)
    return dq, dk, dv, drpb


class _NeighborhoodAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel_size, dilation, scale):
        out, lse = _forward(q, k, v, kernel_size, dilation, rpb, scale)
        ctx.save_for_backward(q, k, v, rpb, out, lse)
        ctx.args = (kernel_size, dilation, scale)
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, rpb, out, lse = ctx.saved_tensors
        kernel_size, dilation, scale = ctx.args
        rpb_grad = rpb is not None and ctx.needs_input_grad[3]
        dq, dk, dv, drpb = _backward(do, q, k, v, out, lse, kernel_size, dilation, rpb, scale, rpb_grad)
        return dq, dk, dv, drpb, None, None, None


def neighborhood_attention_triton(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kernel_size: int,
        dilation: int,
        rpb: Optional[torch.Tensor],
        scale: float,
) -> torch.Tensor:
    """Triton neighbourhood attention; inputs are validated by :func:`visionzoo.kernels.neighborhood_attention`."""
    return _NeighborhoodAttention.apply(q, k, v, rpb, int(kernel_size), int(dilation), float(scale))
