"""Window attention, the Triton kernels (forward and backward).

Semantics are those of :mod:`.reference`. Design (details and the byte counts in ``kernels/README.md``):

* Tokens are read straight from the (B, H, W, heads, D) tensors through their strides (views of a
  fused qkv projection are fine): no partition copy, no padding copy, no ``.contiguous()``.
  Token ``t`` of group (gh, gw) sits at ``row = gh * GS_H + (t // ww) * IS_H`` and
  ``col = gw * GS_W + (t % ww) * IS_W``; ``block`` uses (GS, IS) = (window, 1), ``grid`` uses
  (1, number of groups). Tokens outside the map are padding: masked keys, dropped queries.
* Forward (FlashAttention-2): one program per (window, query tile) on grid axis 0 (the large count:
  axes 1 and 2 are limited to 65535) and head on axis 1; online softmax over key tiles in base 2
  (log2(e) folded into the scale), fp32 accumulation. Stores O (contiguous, input dtype) and the
  log-sum-exp per token, in base-2 units, as a contiguous (B, H, W, heads) fp32 tensor.
* Backward: see :func:`_bwd_kernel`. Deterministic: no atomics anywhere.
* dtypes: fp16/bf16 operands go to ``tl.dot`` as they are (fp32 accumulation). fp32 inputs use
  ``input_precision="ieee"``: no TF32 on GPU, so results match the fp32 reference to ~1e-5 instead
  of TF32's ~1e-3; these shapes are memory-bound, so the slower fp32 MMA path costs little.
  bf16 ``tl.dot`` is broken in the Triton CPU interpreter, so bf16 operands are upcast to fp32 there.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

__all__ = ["window_attention_triton"]

LOG2E = 1.4426950408889634

# dbias partials: the backward accumulates one (heads, N, N) fp32 partial per chunk of windows.
# Aim for this many programs (a few per SM on a 132-SM H100) but never more partial memory than this.
DBIAS_TARGET_PROGRAMS = 1024
DBIAS_PARTIAL_MAX_BYTES = 64 * 2 ** 20


def tile_sizes(n: int, head_dim: int) -> Tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D, num_warps) for windows of ``n`` tokens.

    Every ``tl.dot`` dimension is >= 16 (the GPU minimum; the interpreter does not check it).
    Head dims are padded up to a power of two; tiles shrink for large head dims to bound registers.
    """
    block_d = max(16, triton.next_power_of_2(head_dim))
    block = min(64, max(16, triton.next_power_of_2(n)))
    if block_d >= 128:
        block = min(block, 32)
    num_warps = 8 if block_d >= 128 else 4
    return block, block, block_d, num_warps


@triton.jit
def _token_pos(t, N, ww, gh, gw, GS_H, IS_H, GS_W, IS_W, H, W):
    """Map row/column and validity of tokens ``t`` (a block of indices inside the group)."""
    row = gh * GS_H + (t // ww) * IS_H
    col = gw * GS_W + (t % ww) * IS_W
    valid = (t < N) & (row < H) & (col < W)
    return row, col, valid


@triton.jit
def _tile_offsets(b, h, row, col, offs_d, s_b, s_h, s_w, s_n, s_d):
    """Element offsets of a (tokens, head_dim) tile of head ``h`` in a (B, H, W, heads, D) tensor."""
    return b * s_b + h * s_n + (row * s_h + col * s_w)[:, None] + offs_d[None, :] * s_d


@triton.jit
def _bias_log2(BIAS, h, tq, tk, N, sbn, sbq, sbk):
    """The (query tile, key tile) block of the bias, in fp32 and base-2 units (scores are kept in base 2)."""
    bias = tl.load(BIAS + h * sbn + tq[:, None] * sbq + tk[None, :] * sbk,
                   mask=(tq[:, None] < N) & (tk[None, :] < N), other=0.0)
    return bias.to(tl.float32) * 1.4426950408889634  # log2(e)


@triton.jit
def _fwd_kernel(
        Q, K, V, O, LSE, BIAS,
        sqb, sqh, sqw, sqn, sqd,
        skb, skh, skw, skn, skd,
        svb, svh, svw, svn, svd,
        sob, soh, sow, son, sod,
        slb, slh, slw, sln,
        sbn, sbq, sbk,
        H, W, D, N, ww, nGw, nG, GS_H, IS_H, GS_W, IS_W,
        qk_scale,
        NUM_QT: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    qt = pid % NUM_QT
    win = pid // NUM_QT
    b = (win // nG).to(tl.int64)  # batch offsets may exceed int32 for large batches
    g = win % nG
    gh = g // nGw
    gw = g % nGw

    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    tq = qt * BLOCK_M + tl.arange(0, BLOCK_M)
    qrow, qcol, q_ok = _token_pos(tq, N, ww, gh, gw, GS_H, IS_H, GS_W, IS_W, H, W)
    q = tl.load(Q + _tile_offsets(b, h, qrow, qcol, offs_d, sqb, sqh, sqw, sqn, sqd),
                mask=q_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for n0 in range(0, N, BLOCK_N):
        tk = n0 + tl.arange(0, BLOCK_N)
        krow, kcol, k_ok = _token_pos(tk, N, ww, gh, gw, GS_H, IS_H, GS_W, IS_W, H, W)
        kv_mask = k_ok[:, None] & d_ok[None, :]
        k = tl.load(K + _tile_offsets(b, h, krow, kcol, offs_d, skb, skh, skw, skn, skd), mask=kv_mask, other=0.0)
        v = tl.load(V + _tile_offsets(b, h, krow, kcol, offs_d, svb, svh, svw, svn, svd), mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
        if HAS_BIAS:
            s += _bias_log2(BIAS, h, tq, tk, N, sbn, sbq, sbk)
        # Key 0 of every group is inside the map, so the first tile makes every row max finite.
        s = tl.where(k_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m_i = m_new

    out = acc / l_i[:, None]
    tl.store(O + _tile_offsets(b, h, qrow, qcol, offs_d, sob, soh, sow, son, sod), out.to(O.dtype.element_ty),
             mask=q_ok[:, None] & d_ok[None, :])
    tl.store(LSE + b * slb + h * sln + qrow * slh + qcol * slw, m_i + tl.log2(l_i), mask=q_ok)


@triton.jit
def _bwd_kernel(
        Q, K, V, O, DO, LSE, BIAS, DQ, DQ_ACC, DK, DV, DBIAS,
        sqb, sqh, sqw, sqn, sqd,
        skb, skh, skw, skn, skd,
        svb, svh, svw, svn, svd,
        sob, soh, sow, son, sod,  # shared by O, DQ, DQ_ACC, DK, DV: all contiguous (B, H, W, heads, D)
        sdb, sdh, sdw, sdn, sdd,
        slb, slh, slw, sln,
        sbn, sbq, sbk,
        H, W, D, N, ww, nGw, nG, GS_H, IS_H, GS_W, IS_W,
        n_win, windows_per_chunk, scale, qk_scale,
        NUM_QT: tl.constexpr, NUM_KT: tl.constexpr,
        HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """FlashAttention-2 backward with one program per (chunk of whole windows, head).

    Owning whole windows lets one pass do all five matmuls per tile pair (P recomputed once, not
    twice as with separate dK/dV and dQ passes), which matters because these shapes are
    memory-bound: Q, K, V, O, dO are each read once when a window fits one tile (N <= 64, e.g.
    7x7 = 49). Loop order per window: key tiles outside (dK, dV live in registers), query tiles
    inside. dQ needs a sum over key tiles: with one key tile it is stored directly; otherwise the
    partial sums go through the fp32 DQ_ACC scratch, read-modify-written by this program only, with
    the same pointer tensor for load and store (same register layout, so each thread reads back
    what it wrote: the scheme of the original Triton fused-attention tutorial); the last key tile
    writes DQ in the input dtype.

    dbias[h] is the sum of dS over all windows. Each program adds the dS of its chunk into its own
    (N, N) slice DBIAS[chunk, h] (zero-initialised, read-modify-written by this program only, small
    enough to stay in L2); the caller sums the chunks. No atomics, so the result is deterministic.
    """
    chunk = tl.program_id(0)
    h = tl.program_id(1)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    win_start = chunk * windows_per_chunk
    win_end = tl.minimum(win_start + windows_per_chunk, n_win)
    for win in range(win_start, win_end):
        b = (win // nG).to(tl.int64)
        g = win % nG
        gh = g // nGw
        gw = g % nGw
        for kt in range(NUM_KT):
            tk = kt * BLOCK_N + tl.arange(0, BLOCK_N)
            krow, kcol, k_ok = _token_pos(tk, N, ww, gh, gw, GS_H, IS_H, GS_W, IS_W, H, W)
            kv_mask = k_ok[:, None] & d_ok[None, :]
            k = tl.load(K + _tile_offsets(b, h, krow, kcol, offs_d, skb, skh, skw, skn, skd), mask=kv_mask, other=0.0)
            v = tl.load(V + _tile_offsets(b, h, krow, kcol, offs_d, svb, svh, svw, svn, svd), mask=kv_mask, other=0.0)
            if UPCAST:
                k = k.to(tl.float32)
                v = v.to(tl.float32)
            dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
            dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
            for qt in range(NUM_QT):
                tq = qt * BLOCK_M + tl.arange(0, BLOCK_M)
                qrow, qcol, q_ok = _token_pos(tq, N, ww, gh, gw, GS_H, IS_H, GS_W, IS_W, H, W)
                q_mask = q_ok[:, None] & d_ok[None, :]
                q = tl.load(Q + _tile_offsets(b, h, qrow, qcol, offs_d, sqb, sqh, sqw, sqn, sqd), mask=q_mask, other=0.0)
                do = tl.load(DO + _tile_offsets(b, h, qrow, qcol, offs_d, sdb, sdh, sdw, sdn, sdd), mask=q_mask,
                             other=0.0)
                o_off = _tile_offsets(b, h, qrow, qcol, offs_d, sob, soh, sow, son, sod)
                o = tl.load(O + o_off, mask=q_mask, other=0.0)
                lse = tl.load(LSE + b * slb + h * sln + qrow * slh + qcol * slw, mask=q_ok, other=0.0)
                if UPCAST:
                    q = q.to(tl.float32)
                    do = do.to(tl.float32)
                # Delta = rowsum(dO * O), computed here rather than in a separate pass over dO and O.
                delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)

                s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
                if HAS_BIAS:
                    s += _bias_log2(BIAS, h, tq, tk, N, sbn, sbq, sbk)
                # Padded queries and keys get P = 0, so they add nothing to any gradient.
                p = tl.where(q_ok[:, None] & k_ok[None, :], tl.exp2(s - lse[:, None]), 0.0)
                dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision="ieee")
                dp = tl.dot(do, tl.trans(v), input_precision="ieee")
                ds = p * (dp - delta[:, None])  # dL/d(score), score = scale * q.k + bias
                dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision="ieee")
                dq = tl.dot(ds.to(k.dtype), k, input_precision="ieee") * scale
                if NUM_KT == 1:
                    tl.store(DQ + o_off, dq.to(DQ.dtype.element_ty), mask=q_mask)
                else:
                    if kt > 0:
                        dq += tl.load(DQ_ACC + o_off, mask=q_mask, other=0.0)
                    if kt == NUM_KT - 1:
                        tl.store(DQ + o_off, dq.to(DQ.dtype.element_ty), mask=q_mask)
                    else:
                        tl.store(DQ_ACC + o_off, dq, mask=q_mask)
                if BIAS_GRAD:
                    db_ptrs = DBIAS + (chunk * tl.num_programs(1) + h) * N * N + tq[:, None] * N + tk[None, :]
                    db_mask = (tq[:, None] < N) & (tk[None, :] < N)
                    tl.store(db_ptrs, tl.load(db_ptrs, mask=db_mask, other=0.0) + ds, mask=db_mask)
            kv_off = _tile_offsets(b, h, krow, kcol, offs_d, sob, soh, sow, son, sod)
            tl.store(DK + kv_off, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
            tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=kv_mask)


def _geometry(q: torch.Tensor, window: Tuple[int, int], partition: str):
    """(nGh, nGw, GS_H, IS_H, GS_W, IS_W): group counts and the row/col = group*GS + index*IS strides."""
    _, H, W, _, _ = q.shape
    wh, ww = window
    nGh, nGw = -(-H // wh), -(-W // ww)
    if partition == "block":
        return nGh, nGw, wh, 1, ww, 1
    return nGh, nGw, 1, nGh, 1, nGw


def _upcast(q: torch.Tensor) -> bool:
    # fp32 dots for fp32 inputs; bf16 dots only on a real GPU (broken in the CPU interpreter).
    return q.dtype == torch.float32 or (q.dtype == torch.bfloat16 and not q.is_cuda)


def _bias_args(bias: Optional[torch.Tensor], dummy: torch.Tensor):
    """(pointer, strides) for the kernels; ``dummy`` stands in when there is no bias (never read)."""
    return (bias, bias.stride()) if bias is not None else (dummy, (0, 0, 0))


def _forward(q, k, v, window, partition, bias, scale):
    B, H, W, nh, D = q.shape
    N = window[0] * window[1]
    nGh, nGw, gs_h, is_h, gs_w, is_w = _geometry(q, window, partition)
    block_m, block_n, block_d, num_warps = tile_sizes(N, D)
    num_qt = triton.cdiv(N, block_m)
    out = torch.empty((B, H, W, nh, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, W, nh), dtype=torch.float32, device=q.device)
    bias_ptr, bias_strides = _bias_args(bias, q)
    grid = (B * nGh * nGw * num_qt, nh)
    _fwd_kernel[grid](
        q, k, v, out, lse, bias_ptr,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *lse.stride(), *bias_strides,
        H, W, D, N, window[1], nGw, nGh * nGw, gs_h, is_h, gs_w, is_w,
        scale * LOG2E,
        NUM_QT=num_qt, HAS_BIAS=bias is not None, UPCAST=_upcast(q),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps,
    )
    return out, lse


def dbias_chunks(n_windows: int, heads: int, n: int) -> int:
    """Number of window chunks (= dbias partial buffers) for the backward with a bias gradient."""
    per_chunk = heads * n * n * 4
    chunks = min(n_windows, max(1, -(-DBIAS_TARGET_PROGRAMS // heads)))
    return max(1, min(chunks, DBIAS_PARTIAL_MAX_BYTES // per_chunk))


def _backward(do, q, k, v, out, lse, window, partition, bias, scale, bias_grad: bool):
    B, H, W, nh, D = q.shape
    N = window[0] * window[1]
    nGh, nGw, gs_h, is_h, gs_w, is_w = _geometry(q, window, partition)
    block_m, block_n, block_d, num_warps = tile_sizes(N, D)
    num_qt, num_kt = triton.cdiv(N, block_m), triton.cdiv(N, block_n)
    n_win = B * nGh * nGw

    dq = torch.empty_like(out)
    dk = torch.empty_like(out)
    dv = torch.empty_like(out)
    # Only key tiles that are not the last need the fp32 dQ scratch.
    dq_acc = torch.empty(out.shape, dtype=torch.float32, device=q.device) if num_kt > 1 else dq
    if bias_grad:
        n_chunks = dbias_chunks(n_win, nh, N)
        windows_per_chunk = -(-n_win // n_chunks)
        n_chunks = -(-n_win // windows_per_chunk)
        dbias_part = torch.zeros((n_chunks, nh, N, N), dtype=torch.float32, device=q.device)
    else:  # no dbias: one window per program, the most parallelism
        n_chunks, windows_per_chunk, dbias_part = n_win, 1, dq
    assert out.is_contiguous() and dq.is_contiguous() and dq_acc.is_contiguous()

    bias_ptr, bias_strides = _bias_args(bias, q)
    _bwd_kernel[(n_chunks, nh)](
        q, k, v, out, do, lse, bias_ptr, dq, dq_acc, dk, dv, dbias_part,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *do.stride(), *lse.stride(), *bias_strides,
        H, W, D, N, window[1], nGw, nGh * nGw, gs_h, is_h, gs_w, is_w,
        n_win, windows_per_chunk, scale, scale * LOG2E,
        NUM_QT=num_qt, NUM_KT=num_kt, HAS_BIAS=bias is not None, BIAS_GRAD=bias_grad, UPCAST=_upcast(q),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps,
    )
    dbias = dbias_part.sum(0).to(bias.dtype) if bias_grad else None
    return dq, dk, dv, dbias


class _WindowAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, window, partition, scale):
        out, lse = _forward(q, k, v, window, partition, bias, scale)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.window, ctx.partition, ctx.scale = window, partition, scale
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, bias, out, lse = ctx.saved_tensors
        bias_grad = bias is not None and ctx.needs_input_grad[3]
        dq, dk, dv, dbias = _backward(do, q, k, v, out, lse, ctx.window, ctx.partition, bias, ctx.scale,
                                      bias_grad)
        return dq, dk, dv, dbias, None, None, None


def window_attention_triton(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        window: Tuple[int, int],
        mode: str,
        bias: Optional[torch.Tensor],
        scale: float,
) -> torch.Tensor:
    """Triton window attention; inputs are validated by :func:`visionzoo.kernels.window_attention`."""
    return _WindowAttention.apply(q, k, v, bias, tuple(window), mode, float(scale))
