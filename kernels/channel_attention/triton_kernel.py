"""Channel (group) attention, the Triton kernels (forward and backward).

Semantics are those of :mod:`.reference`. In the role-neutral notation used below, per (image, group):
X, Y, Z are the group's (N, d) slices (v1: X = k, Y = v, Z = q; v2: X = q, Y = k, Z = v),
S = scale * X^T Y (d x d), A = softmax(S) over its last axis, out = Z A^T.

Backward: dZ = dO A, dA = dO^T Z, dS = A * (dA - rowsum(dA * A)), dX = scale * Y dS^T, dY = scale * X dS.

Both passes are a reduction over N (a d x d matrix per group, N large, d small) followed by a per-token
apply, so three launches each (details and byte counts in ``kernels/README.md``):

* ``_gram_kernel``: grid (image·group·split). Each program sums ``P^T R`` over its own contiguous range of
  tokens (a split) into an fp32 d x d tile and stores that partial; forward P, R = X, Y; backward
  P, R = dO, Z, and the same loop also writes dZ = dO A (A is known from the forward), so dO and Z are
  read once.
* ``_softmax_kernel`` / ``_dsoftmax_kernel``: one program per (image, group) adds the partials in split
  order (a fixed order: deterministic, no atomics), then forward: A = softmax(scale * S) (fp32, saved
  for the backward); backward: M = scale * dS.
* ``_apply_kernel``: grid (image·group·split): out = Z A^T (forward), or dX = Y M^T and dY = X M in one
  pass (backward).

Tokens are read through the strides of the (B, N, C) tensors (views of a fused qkv projection are fine):
group g of image b is ``base + b*s_b + n*s_n + (g*d + c)*s_c``. Head dims are padded to a power of two
>= 16 with masks (every ``tl.dot`` dimension >= 16). Outputs and gradients are contiguous, in the input dtype.

dtypes: every tile is converted to fp32 after loading and every dot accumulates in fp32. fp32 inputs use
``input_precision="ieee"`` (no TF32: matches the fp32 reference to ~1e-6 relative). fp16/bf16 inputs use
``"tf32"``: their values are exact in TF32 (10-bit mantissa, 8-bit exponent), so the products of phase 1 are
exactly those of an fp16/bf16 tensor-core dot, while A and dS are rounded to TF32 rather than to fp16 (no
fp16 underflow of small dS entries, 10 mantissa bits rather than bf16's 7). TF32 runs at half the fp16
tensor-core rate, irrelevant here (the op is HBM-bound, see the README). No bf16 ``tl.dot`` is ever issued,
so bf16 also runs under the Triton CPU interpreter (where the TF32 dot is an fp32 numpy matmul).
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from .reference import operand_roles

__all__ = ["channel_attention_triton", "token_splits", "tile_sizes"]

# Splitting N: aim for this many programs per launch (a few per SM on a 132-SM H100), but give every split at
# least this many tokens, so that the d x d partial written per split stays small next to the tokens it sums.
TARGET_PROGRAMS = 1024
MIN_TOKENS_PER_SPLIT = 256


def tile_sizes(head_dim: int) -> Tuple[int, int, int]:
    """(BLOCK_N, BLOCK_D, num_warps): token tile, padded head dim, warps.

    A d x d fp32 tile lives in registers (the partial sum, A, or M) next to two or four (BLOCK_N, d) fp32
    tiles, so the token tile shrinks as d grows.
    """
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_n = 64 if block_d <= 64 else 32
    num_warps = 4 if block_d <= 64 else 8
    return block_n, block_d, num_warps


def token_splits(n_tokens: int, n_matrices: int, block_n: int) -> Tuple[int, int]:
    """(number of splits, tokens per split) of the N axis, for ``n_matrices`` = batch x groups.

    Depends on the shape only (never on the device), so results are reproducible across GPUs; tokens per
    split is a multiple of ``block_n`` and every split is non-empty.
    """
    want = max(1, -(-TARGET_PROGRAMS // n_matrices))
    cap = max(1, -(-n_tokens // MIN_TOKENS_PER_SPLIT))
    n_splits = min(want, cap)
    per_split = -(-(-(-n_tokens // n_splits)) // block_n) * block_n
    return -(-n_tokens // per_split), per_split


@triton.jit
def _tile(PTR, b, n, c, n_ok, c_ok, s_b, s_n, s_c):
    """A (tokens, channels) tile of a (B, N, C) tensor, as fp32 (masked entries are 0)."""
    ptrs = PTR + b * s_b + n[:, None] * s_n + c[None, :] * s_c
    return tl.load(ptrs, mask=n_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)


@triton.jit
def _gram_kernel(
        P, R, PART, A, DZ,
        spb, spn, spc,
        srb, srn, src,
        sdb, sdn, sdc,
        N, D, G, per_split, n_splits,
        WRITE_DZ: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """PART[program] = sum over this split's tokens of P^T R; with WRITE_DZ also DZ = P A on those tokens."""
    pid = tl.program_id(0)
    mat = pid // n_splits  # = b * G + g
    split = pid % n_splits
    b = (mat // G).to(tl.int64)  # batch offsets may exceed int32
    g = mat % G
    offs_d = tl.arange(0, BLOCK_D)
    c_ok = offs_d < D
    c = g * D + offs_d
    square = offs_d[:, None] * BLOCK_D + offs_d[None, :]
    if WRITE_DZ:
        a = tl.load(A + mat.to(tl.int64) * BLOCK_D * BLOCK_D + square)
    acc = tl.zeros([BLOCK_D, BLOCK_D], tl.float32)
    start = split * per_split
    end = tl.minimum(start + per_split, N)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_ok = n < end
        p = _tile(P, b, n, c, n_ok, c_ok, spb, spn, spc)
        r = _tile(R, b, n, c, n_ok, c_ok, srb, srn, src)
        acc += tl.dot(tl.trans(p), r, input_precision=DOT_PREC)
        if WRITE_DZ:
            dz = tl.dot(p, a, input_precision=DOT_PREC)
            tl.store(DZ + b * sdb + n[:, None] * sdn + c[None, :] * sdc, dz.to(DZ.dtype.element_ty),
                     mask=n_ok[:, None] & c_ok[None, :])
    tl.store(PART + pid.to(tl.int64) * BLOCK_D * BLOCK_D + square, acc)


@triton.jit
def _reduce_splits(PART, mat, n_splits, square, BLOCK_D: tl.constexpr):
    """Sum of the partials of matrix ``mat`` over its splits, in split order (deterministic)."""
    acc = tl.zeros([BLOCK_D, BLOCK_D], tl.float32)
    base = PART + mat.to(tl.int64) * n_splits * BLOCK_D * BLOCK_D
    for s in range(0, n_splits):
        acc += tl.load(base + s * BLOCK_D * BLOCK_D + square)
    return acc


@triton.jit
def _softmax_kernel(PART, A, n_splits, D, scale, BLOCK_D: tl.constexpr):
    """A = softmax(scale * sum of partials) over the last axis; padded rows and columns are stored as 0."""
    mat = tl.program_id(0)
    offs_d = tl.arange(0, BLOCK_D)
    square = offs_d[:, None] * BLOCK_D + offs_d[None, :]
    s = _reduce_splits(PART, mat, n_splits, square, BLOCK_D) * scale
    s = tl.where((offs_d < D)[None, :], s, float("-inf"))
    p = tl.exp(s - tl.max(s, 1)[:, None])
    a = p / tl.sum(p, 1)[:, None]
    a = tl.where((offs_d < D)[:, None], a, 0.0)
    tl.store(A + mat.to(tl.int64) * BLOCK_D * BLOCK_D + square, a)


@triton.jit
def _dsoftmax_kernel(PART, A, M, n_splits, scale, BLOCK_D: tl.constexpr):
    """M = scale * dS with dS = A * (dA - rowsum(dA * A)), dA = sum of partials (padding stays 0: A is 0 there)."""
    mat = tl.program_id(0)
    offs_d = tl.arange(0, BLOCK_D)
    square = offs_d[:, None] * BLOCK_D + offs_d[None, :]
    da = _reduce_splits(PART, mat, n_splits, square, BLOCK_D)
    a = tl.load(A + mat.to(tl.int64) * BLOCK_D * BLOCK_D + square)
    ds = a * (da - tl.sum(da * a, 1)[:, None])
    tl.store(M + mat.to(tl.int64) * BLOCK_D * BLOCK_D + square, ds * scale)


@triton.jit
def _apply_kernel(
        P1, M, O1, P2, O2,
        s1b, s1n, s1c,
        s2b, s2n, s2c,
        sob, son, soc,  # shared by O1 and O2: both contiguous (B, N, C)
        N, D, G, per_split, n_splits,
        TWO: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """O1 = P1 M^T on this split's tokens; with TWO also O2 = P2 M."""
    pid = tl.program_id(0)
    mat = pid // n_splits
    split = pid % n_splits
    b = (mat // G).to(tl.int64)
    g = mat % G
    offs_d = tl.arange(0, BLOCK_D)
    c_ok = offs_d < D
    c = g * D + offs_d
    m = tl.load(M + mat.to(tl.int64) * BLOCK_D * BLOCK_D + offs_d[:, None] * BLOCK_D + offs_d[None, :])
    m_t = tl.trans(m)
    start = split * per_split
    end = tl.minimum(start + per_split, N)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_ok = n < end
        o_ptrs = b * sob + n[:, None] * son + c[None, :] * soc
        o_mask = n_ok[:, None] & c_ok[None, :]
        p1 = _tile(P1, b, n, c, n_ok, c_ok, s1b, s1n, s1c)
        tl.store(O1 + o_ptrs, tl.dot(p1, m_t, input_precision=DOT_PREC).to(O1.dtype.element_ty), mask=o_mask)
        if TWO:
            p2 = _tile(P2, b, n, c, n_ok, c_ok, s2b, s2n, s2c)
            tl.store(O2 + o_ptrs, tl.dot(p2, m, input_precision=DOT_PREC).to(O2.dtype.element_ty), mask=o_mask)


def _dot_precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


class _Geometry:
    """Shape-derived launch parameters shared by the forward and the backward."""

    def __init__(self, q: torch.Tensor, groups: int):
        self.B, self.N, self.C = q.shape
        self.G = groups
        self.D = self.C // groups
        self.mats = self.B * groups
        self.block_n, self.block_d, self.num_warps = tile_sizes(self.D)
        self.n_splits, self.per_split = token_splits(self.N, self.mats, self.block_n)
        self.prec = _dot_precision(q.dtype)

    def squares(self, count: int, device, zero: bool = False) -> torch.Tensor:
        make = torch.zeros if zero else torch.empty
        return make((count, self.block_d, self.block_d), dtype=torch.float32, device=device)

    def common(self):
        return dict(DOT_PREC=self.prec, BLOCK_N=self.block_n, BLOCK_D=self.block_d, num_warps=self.num_warps)


def _forward(q, k, v, groups, scale, version):
    geo = _Geometry(q, groups)
    x, y, z = operand_roles(q, k, v, version)
    part = geo.squares(geo.mats * geo.n_splits, q.device)
    attn = geo.squares(geo.mats, q.device)
    out = torch.empty((geo.B, geo.N, geo.C), dtype=q.dtype, device=q.device)
    grid = (geo.mats * geo.n_splits,)
    _gram_kernel[grid](
        x, y, part, attn, out,  # attn, out: not read or written (WRITE_DZ=False)
        *x.stride(), *y.stride(), *out.stride(),
        geo.N, geo.D, geo.G, geo.per_split, geo.n_splits,
        WRITE_DZ=False, **geo.common())
    _softmax_kernel[(geo.mats,)](part, attn, geo.n_splits, geo.D, scale, BLOCK_D=geo.block_d,
                                 num_warps=geo.num_warps)
    _apply_kernel[grid](
        z, attn, out, z, out,
        *z.stride(), *z.stride(), *out.stride(),
        geo.N, geo.D, geo.G, geo.per_split, geo.n_splits,
        TWO=False, **geo.common())
    return out, attn


def _backward(do, q, k, v, attn, groups, scale, version):
    geo = _Geometry(q, groups)
    x, y, z = operand_roles(q, k, v, version)
    part = geo.squares(geo.mats * geo.n_splits, q.device)
    m = geo.squares(geo.mats, q.device)
    dx, dy, dz = (torch.empty((geo.B, geo.N, geo.C), dtype=q.dtype, device=q.device) for _ in range(3))
    grid = (geo.mats * geo.n_splits,)
    _gram_kernel[grid](
        do, z, part, attn, dz,
        *do.stride(), *z.stride(), *dz.stride(),
        geo.N, geo.D, geo.G, geo.per_split, geo.n_splits,
        WRITE_DZ=True, **geo.common())
    _dsoftmax_kernel[(geo.mats,)](part, attn, m, geo.n_splits, scale, BLOCK_D=geo.block_d,
                                  num_warps=geo.num_warps)
    _apply_kernel[grid](
        y, m, dx, x, dy,
        *y.stride(), *x.stride(), *dx.stride(),
        geo.N, geo.D, geo.G, geo.per_split, geo.n_splits,
        TWO=True, **geo.common())
    # back from the roles (X, Y, Z) to (q, k, v)
    return (dz, dx, dy) if version == 1 else (dx, dy, dz)


class _ChannelAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, groups, scale, version):
        out, attn = _forward(q, k, v, groups, scale, version)
        ctx.save_for_backward(q, k, v, attn)
        ctx.groups, ctx.scale, ctx.version = groups, scale, version
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, attn = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, attn, ctx.groups, ctx.scale, ctx.version)
        needs = ctx.needs_input_grad
        return (dq if needs[0] else None, dk if needs[1] else None, dv if needs[2] else None, None, None, None)


def channel_attention_triton(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        groups: int,
        scale: float,
        version: int,
) -> torch.Tensor:
    """Triton channel attention; inputs are validated by :func:`visionzoo.kernels.channel_attention`."""
    return _ChannelAttention.apply(q, k, v, int(groups), float(scale), int(version))
