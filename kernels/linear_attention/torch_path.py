"""Linear attention, the fast PyTorch path: the two-phase (state first) form, never N x N.

Forward, per image and head:

1. state ``S = k^T v`` (d x e) and key sum ``z = sum_n k_den[n]`` (d);
2. ``num = q S``, ``den = max(den_scale * (q_den . z) + eps, denom_min)``, ``out = scale * num / den``.

A custom ``autograd.Function`` whose backward is two-phase too (the algebra of the Triton kernels):

A. ``u = dO S^T`` gives both ``dq = (scale / den) u`` and ``t = (q . u) / den`` (= sum_e dO * num / den);
   ``r = -scale * t / den`` where the clamp passes, ``dq_den = den_scale * r z``;
   the reductions over tokens ``dS = q^T (scale * dO / den)``, ``dz = den_scale * sum_n r q_den``,
   ``dscale = sum_n t``;
B. ``dk = v dS^T``, ``dv = k dS``, ``dk_den = dz`` for every token.

It saves only the inputs, the d x e state, the key sum and the per-token denominator (plain autograd
would also keep the N x e numerator and, for fp16/bf16 inputs, fp32 copies of every input).
Everything is computed in fp32 (fp64 for fp64 inputs), also inside an enclosing autocast region: the state
sums N products, the denominator feeds a division; the fp32 copies of fp16/bf16 inputs live only inside one call.
Memory is O(N (d + e)) per image and head; no Python control flow depends on tensor values, so it
traces under ``torch.compile``.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .._backend import autocast_disabled


def _raw_den(qd, z, den_scale: float, eps: float):
    """den_scale * (q_den . z) + eps, (B, heads, N, 1); a matmul, so FLOP counters see the dot products."""
    raw = qd @ z
    if den_scale != 1.0:  # Python numbers: no data-dependent control flow
        raw = raw * den_scale
    return raw + eps if eps != 0.0 else raw


class _LinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, q_den, k_den, scale_t, scale_f, den_scale, eps, denom_min):
        with autocast_disabled(q.device.type):  # the inputs' dtypes decide, not an enclosing autocast
            return _LinearAttention._forward(ctx, q, k, v, q_den, k_den, scale_t, scale_f, den_scale, eps, denom_min)

    @staticmethod
    def _forward(ctx, q, k, v, q_den, k_den, scale_t, scale_f, den_scale, eps, denom_min):
        cd = torch.promote_types(q.dtype, torch.float32)
        kf = k.to(cd)
        state = kf.transpose(-1, -2) @ v.to(cd)  # (B, heads, d, e)
        z = (kf if k_den is None else k_den.to(cd)).sum(dim=-2).unsqueeze(-1)  # (B, heads, d, 1)
        qf = q.to(cd)
        raw = _raw_den(qf if q_den is None else q_den.to(cd), z, den_scale, eps)
        den = raw if denom_min is None else raw.clamp(min=denom_min)
        scale = scale_f if scale_t is None else scale_t.to(cd).reshape(1, -1, 1, 1)
        scaled_state = state if scale_t is None and scale_f == 1.0 else state * scale  # d x e, cheap
        out = (qf @ scaled_state).div_(den)
        ctx.save_for_backward(q, k, v, q_den, k_den, scale_t, state, z, raw)
        ctx.scale_f, ctx.den_scale, ctx.denom_min = scale_f, den_scale, denom_min
        return out.to(q.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out):
        with autocast_disabled(d_out.device.type):
            return _LinearAttention._backward(ctx, d_out)

    @staticmethod
    def _backward(ctx, d_out):
        q, k, v, q_den, k_den, scale_t, state, z, raw = ctx.saved_tensors
        den_scale, denom_min = ctx.den_scale, ctx.denom_min
        cd = state.dtype
        den = raw if denom_min is None else raw.clamp(min=denom_min)
        scale = ctx.scale_f if scale_t is None else scale_t.to(cd).reshape(1, -1, 1, 1)
        qf, do = q.to(cd), d_out.to(cd)

        # Phase A: per query token, then reductions over the tokens.
        inv_den = den.reciprocal()  # (B, heads, N, 1)
        u = do @ state.transpose(-1, -2)  # (B, heads, N, d) = dO S^T
        t = (qf * u).sum(dim=-1, keepdim=True) * inv_den  # sum_e dO * num / den
        r = t * inv_den * (-scale)  # dL/d den
        if denom_min is not None:
            r = r * (raw >= denom_min)  # torch.clamp passes the gradient where input >= min
        r_dot = r * den_scale if den_scale != 1.0 else r  # dL/d (q_den . z)
        a = inv_den * scale  # dL/d num = a * dO
        d_state = qf.transpose(-1, -2) @ (do * a)  # (B, heads, d, e)
        dz = r_dot.transpose(-1, -2) @ (qf if q_den is None else q_den.to(cd))  # (B, heads, 1, d)
        dq = u.mul_(a)
        z_row = z.transpose(-1, -2)  # (B, heads, 1, d)
        if q_den is None:
            dq, dqd = dq.addcmul_(r_dot, z_row), None
        else:
            dqd = (r_dot * z_row).to(q_den.dtype)
        dscale = None
        if scale_t is not None and ctx.needs_input_grad[5]:
            dscale = t.sum(dim=(0, 2, 3)).to(scale_t.dtype)

        # Phase B: per key token.
        dk = v.to(cd) @ d_state.transpose(-1, -2)
        dv = k.to(cd) @ d_state
        if k_den is None:
            dk, dkd = dk.add_(dz), None
        else:
            dkd = dz.expand(k_den.shape).to(k_den.dtype)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dqd, dkd, dscale, None, None, None, None


def linear_attention_torch(
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
    """Inputs validated by :func:`visionzoo.kernels.linear_attention`; ``q_den``/``k_den`` None: use q/k.

    ``scale``: a float or a (heads,) tensor (it gets a gradient).
    """
    scale_t = scale if isinstance(scale, torch.Tensor) else None
    scale_f = 1.0 if scale_t is not None else float(scale)
    return _LinearAttention.apply(q, k, v, q_den, k_den, scale_t, scale_f, float(den_scale), float(eps),
                                  None if denom_min is None else float(denom_min))
