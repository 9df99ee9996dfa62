"""Linear attention, the Triton kernels (forward and backward, both two-phase; no N x N anywhere).

Semantics are those of :mod:`.reference`; the algebra is that of :mod:`.torch_path`. Design (details and
byte counts in ``kernels/README.md``):

* Tokens are split into chunks of whole BLOCK_N tiles; one program per (image, head, chunk), on grid axis 0.
  Every tensor is read through its own strides (views of a fused qkv projection, NCHW conv outputs seen as
  (B, heads, N, d), ... need no copy).
* Forward phase 1 (:func:`_state_kernel`): per chunk, the partial state ``k^T v`` (d x e) and key sum
  (d), fp32, written to per-chunk partial buffers; torch sums the chunks (deterministic, no atomics).
* Forward phase 2 (:func:`_output_kernel`): per tile, ``num = q S``, ``den = max(den_scale (q_den . z) + eps,
  denom_min)``, ``out = scale num / den``. The state and key sum are saved for the backward (a few KB).
* Backward phase A (:func:`_bwd_query_kernel`): per tile ``u = dO S^T`` gives dq and the denominator
  gradient; per chunk partial reductions dS = q^T (scale dO / den), dz, dscale; torch sums the chunks.
  Phase B (:func:`_bwd_key_kernel`): per tile ``dk = v dS^T (+ dz)``, ``dv = k dS``.
* dtypes: the state dot ``k^T v`` takes fp16/bf16 operands as they are (fp32 accumulation). Dots with an
  fp32 operand (the state S, its gradient, the fp32-scaled dO) run on fp32 operands: ``input_precision="tf32"``
  for fp16/bf16 inputs (the input values are exact in TF32, the state is rounded to 10 mantissa bits like an
  fp16 state but keeps fp32's range, so a large state cannot overflow), ``"ieee"`` for fp32 inputs (no TF32:
  results match the fp32 reference to ~1e-5). bf16 ``tl.dot`` is broken in the Triton CPU interpreter, so
  bf16 operands are upcast to fp32 there.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import triton
import triton.language as tl

__all__ = ["linear_attention_triton"]

# Chunking: aim for this many programs (a few per SM on a 132-SM H100), but use at most ceil(tiles / this) chunks
# (about this many tiles each), so the per-chunk fp32 partial state (d*e*4 bytes) stays small next to the chunk's
# inputs.
TARGET_PROGRAMS = 512
MIN_TILES_PER_CHUNK = 8


def tile_sizes(head_dim: int, value_dim: int) -> Tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_D, BLOCK_E, num_warps). Every ``tl.dot`` dimension is >= 16 (the GPU minimum).

    Head dims are padded to powers of two with masks; the d x e state and its gradient live in registers,
    so wide heads get smaller token tiles and more warps.
    """
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_e = max(16, triton.next_power_of_2(value_dim))
    wide = max(block_d, block_e) >= 128
    return (32 if wide else 64), block_d, block_e, (8 if wide else 4)


def chunking(n_tokens: int, block_n: int, batch_heads: int) -> Tuple[int, int]:
    """(n_chunks, tiles_per_chunk) for the token axis; every chunk has at least one token."""
    n_tiles = triton.cdiv(n_tokens, block_n)
    n_chunks = max(1, min(triton.cdiv(TARGET_PROGRAMS, batch_heads), triton.cdiv(n_tiles, MIN_TILES_PER_CHUNK)))
    tiles_per_chunk = triton.cdiv(n_tiles, n_chunks)
    return triton.cdiv(n_tiles, tiles_per_chunk), tiles_per_chunk


@triton.jit
def _load_tile(PTR, base, tok, offs_c, s_n, s_c, mask, UPCAST: tl.constexpr):
    """A (tokens, channels) tile, zero where masked; fp32 when UPCAST."""
    x = tl.load(PTR + base + tok[:, None] * s_n + offs_c[None, :] * s_c, mask=mask, other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def _state_kernel(
        K, V, KD, S_PART, Z_PART,
        skb, skh, skn, skd,
        svb, svh, svn, sve,
        sdb, sdh, sdn, sdd,
        heads, N, D, E, n_chunks, tiles_per_chunk,
        HAS_KD: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = pid // n_chunks
    chunk = pid % n_chunks
    b = (bh // heads).to(tl.int64)
    h = bh % heads
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    d_ok = offs_d < D
    e_ok = offs_e < E
    state = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
    ksum = tl.zeros([BLOCK_D], tl.float32)
    start = chunk * tiles_per_chunk * BLOCK_N
    for i in range(tiles_per_chunk):
        tok = start + i * BLOCK_N + tl.arange(0, BLOCK_N)
        ok = tok < N
        k = _load_tile(K, b * skb + h * skh, tok, offs_d, skn, skd, ok[:, None] & d_ok[None, :], UPCAST)
        v = _load_tile(V, b * svb + h * svh, tok, offs_e, svn, sve, ok[:, None] & e_ok[None, :], UPCAST)
        state += tl.dot(tl.trans(k), v, input_precision="ieee")  # fp16/bf16 operands: native, fp32 accumulation
        if HAS_KD:
            kd = tl.load(KD + b * sdb + h * sdh + tok[:, None] * sdn + offs_d[None, :] * sdd,
                         mask=ok[:, None] & d_ok[None, :], other=0.0)
            ksum += tl.sum(kd.to(tl.float32), 0)
        else:
            ksum += tl.sum(k.to(tl.float32), 0)
    tl.store(S_PART + pid * D * E + offs_d[:, None] * E + offs_e[None, :], state, mask=d_ok[:, None] & e_ok[None, :])
    tl.store(Z_PART + pid * D + offs_d, ksum, mask=d_ok)


@triton.jit
def _denominator(qd, z, den_scale, eps, denom_min, HAS_MIN: tl.constexpr):
    """(raw, clamped) per-token denominators from an fp32 (tokens, d) tile and the fp32 key sum."""
    raw = tl.sum(qd * z[None, :], 1) * den_scale + eps
    den = raw
    if HAS_MIN:
        den = tl.maximum(raw, denom_min)
    return raw, den


@triton.jit
def _output_kernel(
        Q, QD, S, Z, SCALE, O,
        sqb, sqh, sqn, sqd,
        sdb, sdh, sdn, sdd,
        sob, soh, son, soe,
        heads, N, D, E, n_chunks, tiles_per_chunk,
        scale_f, den_scale, eps, denom_min,
        HAS_QD: tl.constexpr, HAS_SCALE_T: tl.constexpr, HAS_MIN: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = pid // n_chunks
    chunk = pid % n_chunks
    b = (bh // heads).to(tl.int64)
    h = bh % heads
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    d_ok = offs_d < D
    e_ok = offs_e < E
    state = tl.load(S + bh * D * E + offs_d[:, None] * E + offs_e[None, :], mask=d_ok[:, None] & e_ok[None, :],
                    other=0.0)
    z = tl.load(Z + bh * D + offs_d, mask=d_ok, other=0.0)
    s = scale_f
    if HAS_SCALE_T:
        s = tl.load(SCALE + h).to(tl.float32)
    start = chunk * tiles_per_chunk * BLOCK_N
    for i in range(tiles_per_chunk):
        tok = start + i * BLOCK_N + tl.arange(0, BLOCK_N)
        ok = tok < N
        qmask = ok[:, None] & d_ok[None, :]
        q = _load_tile(Q, b * sqb + h * sqh, tok, offs_d, sqn, sqd, qmask, True)
        qd = q
        if HAS_QD:
            qd = _load_tile(QD, b * sdb + h * sdh, tok, offs_d, sdn, sdd, qmask, True)
        raw, den = _denominator(qd, z, den_scale, eps, denom_min, HAS_MIN)
        num = tl.dot(q, state, input_precision=PRECISION)
        out = num * (s / tl.where(ok, den, 1.0))[:, None]
        tl.store(O + b * sob + h * soh + tok[:, None] * son + offs_e[None, :] * soe, out.to(O.dtype.element_ty),
                 mask=ok[:, None] & e_ok[None, :])


@triton.jit
def _bwd_query_kernel(
        Q, QD, DO, S, Z, SCALE, DQ, DQD, DS_PART, DZ_PART, DSCALE_PART,
        sqb, sqh, sqn, sqd,
        sdb, sdh, sdn, sdd,
        sgb, sgh, sgn, sge,
        heads, N, D, E, n_chunks, tiles_per_chunk,
        scale_f, den_scale, eps, denom_min,
        HAS_QD: tl.constexpr, HAS_SCALE_T: tl.constexpr, HAS_MIN: tl.constexpr, SCALE_GRAD: tl.constexpr,
        PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """Phase A. DQ and DQD are contiguous (B, heads, N, d); DQ receives dq + dq_den when q_den is q."""
    pid = tl.program_id(0)
    bh = pid // n_chunks
    chunk = pid % n_chunks
    b = (bh // heads).to(tl.int64)
    h = bh % heads
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    d_ok = offs_d < D
    e_ok = offs_e < E
    state = tl.load(S + bh * D * E + offs_d[:, None] * E + offs_e[None, :], mask=d_ok[:, None] & e_ok[None, :],
                    other=0.0)
    z = tl.load(Z + bh * D + offs_d, mask=d_ok, other=0.0)
    s = scale_f
    if HAS_SCALE_T:
        s = tl.load(SCALE + h).to(tl.float32)
    d_state = tl.zeros([BLOCK_D, BLOCK_E], tl.float32)
    dz = tl.zeros([BLOCK_D], tl.float32)
    dscale = tl.zeros([BLOCK_N], tl.float32)
    start = chunk * tiles_per_chunk * BLOCK_N
    for i in range(tiles_per_chunk):
        tok = start + i * BLOCK_N + tl.arange(0, BLOCK_N)
        ok = tok < N
        qmask = ok[:, None] & d_ok[None, :]
        q = _load_tile(Q, b * sqb + h * sqh, tok, offs_d, sqn, sqd, qmask, True)
        qd = q
        if HAS_QD:
            qd = _load_tile(QD, b * sdb + h * sdh, tok, offs_d, sdn, sdd, qmask, True)
        do = _load_tile(DO, b * sgb + h * sgh, tok, offs_e, sgn, sge, ok[:, None] & e_ok[None, :], True)
        raw, den = _denominator(qd, z, den_scale, eps, denom_min, HAS_MIN)
        inv_den = tl.where(ok, 1.0 / tl.where(ok, den, 1.0), 0.0)  # padded tokens contribute nothing
        u = tl.dot(do, tl.trans(state), input_precision=PRECISION)  # dO S^T: (tokens, d)
        t = tl.sum(q * u, 1) * inv_den  # sum_e dO * num / den
        r = -s * t * inv_den  # dL / d den
        if HAS_MIN:
            r = tl.where(raw >= denom_min, r, 0.0)  # torch.clamp passes the gradient where input >= min
        dq = u * (s * inv_den)[:, None]
        dqd = (r * den_scale)[:, None] * z[None, :]
        out_off = bh.to(tl.int64) * N * D + tok[:, None] * D + offs_d[None, :]
        if HAS_QD:
            tl.store(DQD + out_off, dqd.to(DQD.dtype.element_ty), mask=qmask)
        else:
            dq += dqd
        tl.store(DQ + out_off, dq.to(DQ.dtype.element_ty), mask=qmask)
        g = do * (s * inv_den)[:, None]  # dL / d num
        d_state += tl.dot(tl.trans(q), g, input_precision=PRECISION)
        dz += tl.sum(qd * r[:, None], 0)
        if SCALE_GRAD:
            dscale += t
    tl.store(DS_PART + pid * D * E + offs_d[:, None] * E + offs_e[None, :], d_state,
             mask=d_ok[:, None] & e_ok[None, :])
    tl.store(DZ_PART + pid * D + offs_d, dz * den_scale, mask=d_ok)
    if SCALE_GRAD:
        tl.store(DSCALE_PART + pid, tl.sum(dscale, 0))


@triton.jit
def _bwd_key_kernel(
        K, V, DS, DZ, DK, DV, DKD,
        skb, skh, skn, skd,
        svb, svh, svn, sve,
        heads, N, D, E, n_chunks, tiles_per_chunk,
        HAS_KD: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """Phase B. DK, DKD contiguous (B, heads, N, d), DV contiguous (B, heads, N, e); DK gets dk + dz when k_den is k."""
    pid = tl.program_id(0)
    bh = pid // n_chunks
    chunk = pid % n_chunks
    b = (bh // heads).to(tl.int64)
    h = bh % heads
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_E)
    d_ok = offs_d < D
    e_ok = offs_e < E
    d_state = tl.load(DS + bh * D * E + offs_d[:, None] * E + offs_e[None, :], mask=d_ok[:, None] & e_ok[None, :],
                      other=0.0)
    dz = tl.load(DZ + bh * D + offs_d, mask=d_ok, other=0.0)
    start = chunk * tiles_per_chunk * BLOCK_N
    for i in range(tiles_per_chunk):
        tok = start + i * BLOCK_N + tl.arange(0, BLOCK_N)
        ok = tok < N
        kmask = ok[:, None] & d_ok[None, :]
        vmask = ok[:, None] & e_ok[None, :]
        k = _load_tile(K, b * skb + h * skh, tok, offs_d, skn, skd, kmask, True)
        v = _load_tile(V, b * svb + h * svh, tok, offs_e, svn, sve, vmask, True)
        dk = tl.dot(v, tl.trans(d_state), input_precision=PRECISION)  # (tokens, d)
        dv = tl.dot(k, d_state, input_precision=PRECISION)  # (tokens, e)
        base = bh.to(tl.int64) * N
        dk_off = base * D + tok[:, None] * D + offs_d[None, :]
        if HAS_KD:
            tl.store(DKD + dk_off, (tl.zeros([BLOCK_N, BLOCK_D], tl.float32) + dz[None, :]).to(DKD.dtype.element_ty),
                     mask=kmask)
        else:
            dk += dz[None, :]
        tl.store(DK + dk_off, dk.to(DK.dtype.element_ty), mask=kmask)
        tl.store(DV + base * E + tok[:, None] * E + offs_e[None, :], dv.to(DV.dtype.element_ty), mask=vmask)


def _upcast(x: torch.Tensor) -> bool:
    # fp32 state dots for fp32 inputs; bf16 dots only on a real GPU (broken in the CPU interpreter).
    return x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and not x.is_cuda)


def _precision(x: torch.Tensor) -> str:
    # TF32 for the fp32-operand dots of fp16/bf16 inputs on NVIDIA GPUs (and in the interpreter, which computes
    # them in fp32); IEEE fp32 for fp32 inputs and on ROCm, whose Triton backends do not all offer TF32.
    return "ieee" if x.dtype == torch.float32 or torch.version.hip is not None else "tf32"


def _geometry(q: torch.Tensor, v: torch.Tensor):
    B, heads, N, D = q.shape
    E = v.shape[-1]
    block_n, block_d, block_e, num_warps = tile_sizes(D, E)
    n_chunks, tiles_per_chunk = chunking(N, block_n, B * heads)
    return B, heads, N, D, E, block_n, block_d, block_e, num_warps, n_chunks, tiles_per_chunk


def _forward(q, k, v, q_den, k_den, scale_t, scale_f, den_scale, eps, denom_min):
    B, heads, N, D, E, block_n, block_d, block_e, num_warps, n_chunks, tpc = _geometry(q, v)
    bh = B * heads
    dev = q.device
    s_part = torch.empty((bh, n_chunks, D, E), dtype=torch.float32, device=dev)
    z_part = torch.empty((bh, n_chunks, D), dtype=torch.float32, device=dev)
    kd = k if k_den is None else k_den
    _state_kernel[(bh * n_chunks,)](
        k, v, kd, s_part, z_part,
        *k.stride(), *v.stride(), *kd.stride(),
        heads, N, D, E, n_chunks, tpc,
        HAS_KD=k_den is not None, UPCAST=_upcast(k),
        BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_E=block_e, num_warps=num_warps,
    )
    state = s_part.sum(1) if n_chunks > 1 else s_part.view(bh, D, E)  # deterministic reduction of the chunks
    z = z_part.sum(1) if n_chunks > 1 else z_part.view(bh, D)
    out = torch.empty((B, heads, N, E), dtype=q.dtype, device=dev)
    qd = q if q_den is None else q_den
    _output_kernel[(bh * n_chunks,)](
        q, qd, state, z, q if scale_t is None else scale_t, out,
        *q.stride(), *qd.stride(), *out.stride(),
        heads, N, D, E, n_chunks, tpc,
        scale_f, den_scale, eps, 0.0 if denom_min is None else denom_min,
        HAS_QD=q_den is not None, HAS_SCALE_T=scale_t is not None, HAS_MIN=denom_min is not None,
        PRECISION=_precision(q),
        BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_E=block_e, num_warps=num_warps,
    )
    return out, state, z


def _backward(do, q, k, v, q_den, k_den, scale_t, scale_f, den_scale, eps, denom_min, state, z, scale_grad):
    B, heads, N, D, E, block_n, block_d, block_e, num_warps, n_chunks, tpc = _geometry(q, v)
    bh = B * heads
    dev = q.device
    dq = torch.empty(q.shape, dtype=q.dtype, device=dev)
    dqd = None if q_den is None else torch.empty(q_den.shape, dtype=q_den.dtype, device=dev)
    ds_part = torch.empty((bh, n_chunks, D, E), dtype=torch.float32, device=dev)
    dz_part = torch.empty((bh, n_chunks, D), dtype=torch.float32, device=dev)
    dscale_part = torch.empty((bh, n_chunks), dtype=torch.float32, device=dev) if scale_grad else dz_part
    qd = q if q_den is None else q_den
    _bwd_query_kernel[(bh * n_chunks,)](
        q, qd, do, state, z, q if scale_t is None else scale_t, dq, dq if dqd is None else dqd,
        ds_part, dz_part, dscale_part,
        *q.stride(), *qd.stride(), *do.stride(),
        heads, N, D, E, n_chunks, tpc,
        scale_f, den_scale, eps, 0.0 if denom_min is None else denom_min,
        HAS_QD=q_den is not None, HAS_SCALE_T=scale_t is not None, HAS_MIN=denom_min is not None,
        SCALE_GRAD=scale_grad, PRECISION=_precision(q),
        BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_E=block_e, num_warps=num_warps,
    )
    d_state = ds_part.sum(1) if n_chunks > 1 else ds_part.view(bh, D, E)
    dz = dz_part.sum(1) if n_chunks > 1 else dz_part.view(bh, D)
    dk = torch.empty(k.shape, dtype=k.dtype, device=dev)
    dv = torch.empty(v.shape, dtype=v.dtype, device=dev)
    dkd = None if k_den is None else torch.empty(k_den.shape, dtype=k_den.dtype, device=dev)
    _bwd_key_kernel[(bh * n_chunks,)](
        k, v, d_state, dz, dk, dv, dk if dkd is None else dkd,
        *k.stride(), *v.stride(),
        heads, N, D, E, n_chunks, tpc,
        HAS_KD=k_den is not None, PRECISION=_precision(q),
        BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_E=block_e, num_warps=num_warps,
    )
    dscale = dscale_part.view(B, heads, n_chunks).sum((0, 2)).to(scale_t.dtype) if scale_grad else None
    return dq, dk, dv, dqd, dkd, dscale


class _LinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, q_den, k_den, scale_t, scale_f, den_scale, eps, denom_min):
        out, state, z = _forward(q, k, v, q_den, k_den, scale_t, scale_f, den_scale, eps, denom_min)
        ctx.save_for_backward(q, k, v, q_den, k_den, scale_t, state, z)
        ctx.args = (scale_f, den_scale, eps, denom_min)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q, k, v, q_den, k_den, scale_t, state, z = ctx.saved_tensors
        scale_grad = scale_t is not None and ctx.needs_input_grad[5]
        dq, dk, dv, dqd, dkd, dscale = _backward(do, q, k, v, q_den, k_den, scale_t, *ctx.args, state, z, scale_grad)
        return dq, dk, dv, dqd, dkd, dscale, None, None, None, None


def linear_attention_triton(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_den: Optional[torch.Tensor],
        k_den: Optional[torch.Tensor],
        scale: Union[float, torch.Tensor],
        den_scale: float,
        eps: float,
        denom_min: Optional[float],
) -> torch.Tensor:
    """Triton linear attention; inputs are validated by :func:`visionzoo.kernels.linear_attention`.

    ``q_den``/``k_den`` None: the numerator tensors serve (their gradients are summed in the kernels).
    ``scale``: a float or a (heads,) tensor.
    """
    scale_t = scale if isinstance(scale, torch.Tensor) else None
    scale_f = 1.0 if scale_t is not None else float(scale)
    if scale_t is not None:
        scale_t = scale_t.contiguous()  # (heads,): a copy only when it was expanded from one value
    return _LinearAttention.apply(q, k, v, q_den, k_den, scale_t, scale_f, float(den_scale), float(eps),
                                  None if denom_min is None else float(denom_min))
