"""Neighbourhood aggregation, the Triton kernels (forward and backward).

Semantics are those of :mod:`.reference`; the index rule and the tiling come from ``kernels/_neighborhood.py``
(``nb_*`` helpers), as in the neighbourhood attention kernels, whose second half (P V) this op is, with P given.

* **Tiles.** Per image, head, dilation residue class (rr, rc) and tile of TH x TW class positions
  (BLOCK_M = TH * TW = 64 queries); positions past the end of a shorter class are clamped duplicates, computed
  like their twin and never stored.
* **Forward**, per query tile: the halo (``start(first) .. start(last) + k - 1`` per axis) is streamed in chunks
  of BLOCK_N keys straight from the strided value tensor; for each chunk the (queries x keys) block of weights
  is gathered from ``attn`` at slot ``(key_row - start_row) * k + (key_col - start_col)`` where the key lies in
  the query's window (masked load, 0 elsewhere), and ``acc += P V`` on the tensor cores. Every weight is read
  once (each slot of a query is exactly one halo key); no k*k copy of V exists.
* **Backward, deterministic (no atomics)**, two kernels:
  1. ``_bwd_dattn_kernel`` per query tile: over the halo chunks, dP = dO V^T, stored at each in-window pair's
     slot of dattn (every slot of every real query written exactly once).
  2. ``_bwd_dvalue_kernel`` per key tile: its queries are the tile's inverse neighbourhood (contiguous per axis),
     streamed in chunks; the transposed weight block is gathered from attn the same way and dV += P^T dO.
* **dtypes.** Weights and values go to ``tl.dot`` in value's dtype (fp32 accumulation): weights of another dtype
  (fp32 softmax output under autocast) are rounded to it as they are loaded, which is NATTEN 0.17's
  ``attn.to(value.dtype)`` without the extra pass over the largest tensor; dattn is stored in attn's dtype from the
  fp32 dP. fp32 uses ``input_precision="ieee"`` (no TF32). bf16 ``tl.dot`` is broken in the CPU interpreter, so bf16
  is upcast to fp32 there (after the rounding to bf16).
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from .._neighborhood import (nb_decode_tile, nb_in_window, nb_key_halo, nb_query_halo, nb_sublattice_length,
                             nb_tile_positions, nb_window_start)

__all__ = ["neighborhood_aggregation_triton", "tile_config"]


def tile_config(longest_w: int, head_dim: int) -> Tuple[int, int, int, int, int]:
    """(TW, BLOCK_M, BLOCK_N, BLOCK_D, num_warps).

    Query/key tiles are BLOCK_M = 64 positions of one sub-lattice, TW = min(8, next_pow2(longest class along W))
    wide and 64 / TW tall; halo chunks hold BLOCK_N keys. Every ``tl.dot`` dimension is >= 16 (the GPU minimum;
    the interpreter does not check it). Head dims are padded to a power of two >= 16.
    """
    block_d = max(16, triton.next_power_of_2(head_dim))
    tw = min(8, triton.next_power_of_2(longest_w))
    block_n = 32 if block_d >= 128 else 64
    num_warps = 8 if block_d >= 128 else 4
    return tw, 64, block_n, block_d, num_warps


@triton.jit
def _offsets(b, h, row, col, offs_d, s_b, s_h, s_i, s_j, s_d):
    """Element offsets of a (tokens, BLOCK_D) tile of head h in a (B, heads, H, W, D) tensor."""
    return b * s_b + h * s_h + (row * s_i + col * s_j)[:, None] + offs_d[None, :] * s_d


@triton.jit
def _fwd_kernel(
        A, V, O,
        sab, sah, sai, saj, sat,
        svb, svh, svi, svj, svd,
        sob, soh, soi, soj, sod,
        H, W, D, DIL, n_th, n_tw,
        KS: tl.constexpr, TW: tl.constexpr, UPCAST: tl.constexpr,
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
    qrow = rr + DIL * pr
    qcol = rc + DIL * pc
    a_row = A + b * sab + h * sah + qrow * sai + qcol * saj  # (BLOCK_M,) pointers to slot 0 of each query

    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n_halo = n_hr * n_hc
    for n0 in range(0, n_halo, BLOCK_N):
        u = n0 + tl.arange(0, BLOCK_N)
        k_ok = u < n_halo
        kr = hr0 + u // n_hc
        kc = hc0 + u % n_hc
        v = tl.load(V + _offsets(b, h, rr + DIL * kr, rc + DIL * kc, offs_d, svb, svh, svi, svj, svd),
                    mask=k_ok[:, None] & d_ok[None, :], other=0.0)
        pair = nb_in_window(sr[:, None], kr[None, :], KS) & nb_in_window(sc[:, None], kc[None, :], KS) & k_ok[None, :]
        slot = (kr[None, :] - sr[:, None]) * KS + (kc[None, :] - sc[:, None])
        p = tl.load(a_row[:, None] + slot * sat, mask=pair, other=0.0).to(V.dtype.element_ty)  # attn in v's dtype
        if UPCAST:
            p = p.to(tl.float32)
            v = v.to(tl.float32)
        acc += tl.dot(p, v, input_precision="ieee")
    tl.store(O + _offsets(b, h, qrow, qcol, offs_d, sob, soh, soi, soj, sod), acc.to(O.dtype.element_ty),
             mask=q_ok[:, None] & d_ok[None, :])


@triton.jit
def _bwd_dattn_kernel(
        DO, V, DA,
        sdb, sdh, sdi, sdj, sdd,
        svb, svh, svi, svj, svd,
        sab, sah, sai, saj, sat,  # DA: contiguous (B, heads, H, W, k*k)
        H, W, D, DIL, n_th, n_tw,
        KS: tl.constexpr, TW: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program per query tile: dattn[q, slot] = dO[q] . V[neighbour(q, slot)], over the halo chunks."""
    TH: tl.constexpr = BLOCK_M // TW
    h = tl.program_id(1)
    b, rr, rc, th, tw = nb_decode_tile(tl.program_id(0), n_th, n_tw, DIL)
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
    da_row = DA + b * sab + h * sah + qrow * sai + qcol * saj

    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    do = tl.load(DO + _offsets(b, h, qrow, qcol, offs_d, sdb, sdh, sdi, sdj, sdd), mask=d_ok[None, :], other=0.0)
    if UPCAST:
        do = do.to(tl.float32)
    n_halo = n_hr * n_hc
    for n0 in range(0, n_halo, BLOCK_N):
        u = n0 + tl.arange(0, BLOCK_N)
        k_ok = u < n_halo
        kr = hr0 + u // n_hc
        kc = hc0 + u % n_hc
        v = tl.load(V + _offsets(b, h, rr + DIL * kr, rc + DIL * kc, offs_d, svb, svh, svi, svj, svd),
                    mask=k_ok[:, None] & d_ok[None, :], other=0.0)
        if UPCAST:
            v = v.to(tl.float32)
        dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        # each (real query, slot) pair is in exactly one chunk: written once; duplicates are not written
        pair = (nb_in_window(sr[:, None], kr[None, :], KS) & nb_in_window(sc[:, None], kc[None, :], KS)
                & k_ok[None, :] & q_ok[:, None])
        slot = (kr[None, :] - sr[:, None]) * KS + (kc[None, :] - sc[:, None])
        tl.store(da_row[:, None] + slot * sat, dp.to(DA.dtype.element_ty), mask=pair)


@triton.jit
def _bwd_dvalue_kernel(
        A, DO, DV,
        sab, sah, sai, saj, sat,
        sdb, sdh, sdi, sdj, sdd,
        svb, svh, svi, svj, svd,  # DV: contiguous (B, heads, H, W, D)
        H, W, D, DIL, n_th, n_tw,
        KS: tl.constexpr, TW: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program per key tile (BLOCK_M keys): dV[key] = sum over the queries q that see it of
    attn[q, slot(q, key)] dO[q]; the queries (inverse neighbourhood) are streamed in chunks of BLOCK_N."""
    TH: tl.constexpr = BLOCK_M // TW
    h = tl.program_id(1)
    b, rr, rc, th, tw = nb_decode_tile(tl.program_id(0), n_th, n_tw, DIL)
    b = b.to(tl.int64)
    Lr = nb_sublattice_length(H, rr, DIL)
    Lc = nb_sublattice_length(W, rc, DIL)
    kr, kc, k_ok = nb_tile_positions(th, tw, Lr, Lc, TH, TW, BLOCK_M)
    qr0, n_qr = nb_key_halo(th, Lr, TH, KS)
    qc0, n_qc = nb_key_halo(tw, Lc, TW, KS)

    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    dv = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n_q = n_qr * n_qc
    for n0 in range(0, n_q, BLOCK_N):
        u = n0 + tl.arange(0, BLOCK_N)
        q_ok = u < n_q
        qr = qr0 + u // n_qc
        qc = qc0 + u % n_qc
        qrow = rr + DIL * qr
        qcol = rc + DIL * qc
        do = tl.load(DO + _offsets(b, h, qrow, qcol, offs_d, sdb, sdh, sdi, sdj, sdd),
                     mask=q_ok[:, None] & d_ok[None, :], other=0.0)
        sqr = nb_window_start(qr, Lr, KS)
        sqc = nb_window_start(qc, Lc, KS)
        # transposed weights, (keys of the tile) x (queries of the chunk): key in the query's window
        pair = (nb_in_window(sqr[None, :], kr[:, None], KS) & nb_in_window(sqc[None, :], kc[:, None], KS)
                & q_ok[None, :])
        slot = (kr[:, None] - sqr[None, :]) * KS + (kc[:, None] - sqc[None, :])
        a_row = A + b * sab + h * sah + qrow * sai + qcol * saj  # (BLOCK_N,)
        pt = tl.load(a_row[None, :] + slot * sat, mask=pair, other=0.0).to(DV.dtype.element_ty)
        if UPCAST:
            pt = pt.to(tl.float32)
            do = do.to(tl.float32)
        dv += tl.dot(pt, do, input_precision="ieee")
    krow = rr + DIL * kr
    kcol = rc + DIL * kc
    tl.store(DV + _offsets(b, h, krow, kcol, offs_d, svb, svh, svi, svj, svd), dv.to(DV.dtype.element_ty),
             mask=k_ok[:, None] & d_ok[None, :])


def _upcast(x: torch.Tensor) -> bool:
    # fp32 dots for fp32 inputs; bf16 dots only on a real GPU (broken in the CPU interpreter).
    return x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and not x.is_cuda)


def _geometry(value: torch.Tensor, dilation: int):
    """(TW, BLOCK_M, BLOCK_N, BLOCK_D, num_warps, tiles per class along H, along W, tiles in all)."""
    B, _, H, W, D = value.shape
    tw, block_m, block_n, block_d, num_warps = tile_config(-(-W // dilation), D)
    th = block_m // tw
    n_th, n_tw = triton.cdiv(-(-H // dilation), th), triton.cdiv(-(-W // dilation), tw)
    return tw, block_m, block_n, block_d, num_warps, n_th, n_tw, B * dilation * dilation * n_th * n_tw


def _forward(attn, value, kernel_size, dilation):
    B, nh, H, W, D = value.shape
    tw, block_m, block_n, block_d, num_warps, n_th, n_tw, n_tiles = _geometry(value, dilation)
    out = torch.empty((B, nh, H, W, D), dtype=value.dtype, device=value.device)
    _fwd_kernel[(n_tiles, nh)](
        attn, value, out, *attn.stride(), *value.stride(), *out.stride(),
        H, W, D, dilation, n_th, n_tw,
        KS=kernel_size, TW=tw, UPCAST=_upcast(value),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps,
    )
    return out


def _backward(do, attn, value, kernel_size, dilation, need_attn: bool, need_value: bool):
    B, nh, H, W, D = value.shape
    tw, block_m, block_n, block_d, num_warps, n_th, n_tw, n_tiles = _geometry(value, dilation)
    common = dict(KS=kernel_size, TW=tw, UPCAST=_upcast(value),
                  BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps)
    dattn = dvalue = None
    if need_attn:
        dattn = torch.empty(attn.shape, dtype=attn.dtype, device=attn.device)  # every entry written once
        _bwd_dattn_kernel[(n_tiles, nh)](
            do, value, dattn, *do.stride(), *value.stride(), *dattn.stride(),
            H, W, D, dilation, n_th, n_tw, **common,
        )
    if need_value:
        dvalue = torch.empty((B, nh, H, W, D), dtype=value.dtype, device=value.device)
        _bwd_dvalue_kernel[(n_tiles, nh)](
            attn, do, dvalue, *attn.stride(), *do.stride(), *dvalue.stride(),
            H, W, D, dilation, n_th, n_tw, **common,
        )
    return dattn, dvalue


class _NeighborhoodAggregation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attn, value, kernel_size, dilation):
        out = _forward(attn, value, kernel_size, dilation)
        ctx.save_for_backward(attn, value)
        ctx.args = (kernel_size, dilation)
        return out

    @staticmethod
    def backward(ctx, do):
        attn, value = ctx.saved_tensors
        kernel_size, dilation = ctx.args
        dattn, dvalue = _backward(do, attn, value, kernel_size, dilation,
                                  ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return dattn, dvalue, None, None


def neighborhood_aggregation_triton(attn: torch.Tensor, value: torch.Tensor, kernel_size: int,
                                    dilation: int) -> torch.Tensor:
    """Triton neighbourhood aggregation; inputs are validated by :func:`visionzoo.kernels.neighborhood_aggregation`."""
    return _NeighborhoodAggregation.apply(attn, value, int(kernel_size), int(dilation))
