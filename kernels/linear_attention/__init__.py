"""Non-causal linear attention with separate numerator and normaliser inputs (L²ViT, RALA/RAVLT).

``linear_attention(q, k, v, q_den=None, k_den=None, scale=1.0, den_scale=1.0, eps=0.0, denom_min=None)``

* ``q, k``: (B, heads, N, d) numerator features; ``v``: (B, heads, N, e); ``q_den, k_den``: (B, heads, N, d)
  normaliser features, defaulting to ``q`` and ``k``. N is the token count of the map (H*W, row-major or
  any order: the op is permutation-equivariant in the tokens, so rectangular maps need nothing special).
  All already feature-mapped (and re-weighted, RoPE'd) by the caller; any strides.
* For every image, head and query n::

      S       = sum_m k[m]^T v[m]                                   (d x e state)
      z       = sum_m k_den[m]                                      (d, key sum)
      den[n]  = max(den_scale * (q_den[n] . z) + eps, denom_min)    (no clamp when denom_min is None)
      out[n]  = scale * (q[n] S) / den[n]

  i.e. ``out[n] = scale * sum_m (q[n].k[m]) v[m] / max(den_scale * sum_m q_den[n].k_den[m] + eps, denom_min)``.
* ``scale``: a number, or a tensor with one value per head (shape (heads,), (heads, 1, 1) as L²ViT's
  ``temperature``, (1, heads, 1, 1), or a single element); a tensor receives a gradient.
  ``den_scale``, ``eps``, ``denom_min``: numbers. The denominator must not vanish (0/0 is NaN, as in the papers).

Returns (B, heads, N, e), contiguous, in q's dtype. Accumulation (state, key sum, denominator) is fp32.
Cost is linear in N (:func:`linear_attention_flops`); no N x N matrix exists except in the reference.

The papers' token mixers, given the projected q, k, v of shape (B, heads, N, d):

* L²ViT ``LinearAttention``: ``q, k = l2vit_features(q), l2vit_features(k)`` (ReLU), then
  ``linear_attention(q, k, v, scale=temperature, denom_min=100.0)``:
  ``(q (k^T v) * temperature) / clamp(q . sum k, min=100)``.
* RALA ``GateLinearAttentionNoSilu`` (N = H*W): ``q, k = rala_features(q), rala_features(k)`` (ELU + 1);
  ``k = k * rala_key_weights(q, k)`` (softmax over tokens of d^-0.5 * mean(q) . k, times N); then, with the
  caller's 2D RoPE on the numerator only,
  ``linear_attention(rope(q), rope(k), v, q_den=q, k_den=k, scale=1/N, den_scale=1/N, eps=1e-6)``:
  ``(rope(q) (rope(k)^T/sqrt(N)) (v/sqrt(N))) / (q . mean(k) + 1e-6)``.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .._backend import choose_backend
from .._checks import check_tensors
from .reference import linear_attention_reference
from .torch_path import linear_attention_torch

__all__ = ["linear_attention", "linear_attention_flops", "l2vit_features", "rala_features", "rala_key_weights"]

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
TRITON_MAX_HEAD_DIM = 128
L2VIT_DENOM_MIN = 100.0  # L²ViT clamps the denominator at 1e2 ("makes training stable")
RALA_EPS = 1e-6


# ------------------------------------------------------------------------------------ per-paper helpers

def l2vit_features(x: torch.Tensor) -> torch.Tensor:
    """L²ViT's feature map: ReLU (applied to q and k)."""
    return F.relu(x)


def rala_features(x: torch.Tensor) -> torch.Tensor:
    """RALA's feature map: ELU + 1 (applied to q and k; strictly positive).

    Computed as ``exp(min(x, 0)) + max(x, 0)`` (the same function: 1 + x above 0, exp(x) below): torch's CPU ELU
    goes through a scalar expm1 and costs ~8x more than the vectorised exp (1.8 vs 0.23 ms for 3136 x 64 fp32,
    one thread). The passes reuse one buffer; the gradient is ``min(y, 1)`` (1 above 0, exp(x) = y below), from the
    saved output alone (autograd through the clamps would cost three masked passes)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _RalaFeatures.apply(x)
    return _elu_plus_one(x)


def _elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(max=0.0).exp_().add_(x.clamp(min=0.0))


class _RalaFeatures(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = _elu_plus_one(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y.clamp(max=1.0)


def rala_key_weights(q: torch.Tensor, k: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """RALA's query-mean key re-weighting (the "KV buffer" rank augmentation), as a (B, heads, N, 1) factor.

    ``q, k``: (B, heads, N, d), already ELU + 1. With qbar the mean of q over the tokens,
    ``w[n] = N * softmax_n(scale * qbar . k[n])``, ``scale`` defaulting to d ** -0.5; the caller then uses
    ``k * w`` as the keys (numerator and normaliser). Computed in fp32 for fp16/bf16 inputs, returned in k's dtype.
    """
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must be (B, heads, N, d) of the same shape, got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")
    cd = torch.promote_types(q.dtype, torch.float32)
    n, d = q.shape[-2], q.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    q_mean = q.to(cd).mean(dim=-2, keepdim=True)  # (B, heads, 1, d)
    logits = (q_mean @ k.to(cd).transpose(-1, -2)) * scale  # (B, heads, 1, N)
    return (logits.softmax(dim=-1) * n).transpose(-1, -2).to(k.dtype)


# ----------------------------------------------------------------------------------------- validation

def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _validate(q, k, v, q_den, k_den, scale, den_scale, eps, denom_min) -> None:
    check_tensors("(B, heads, N, head_dim)", q=q, k=k, v=v, q_den=q_den, k_den=k_den)
    named = [(name, t) for name, t in (("k", k), ("v", v), ("q_den", q_den), ("k_den", k_den)) if t is not None]
    for name, t in named:
        if name == "v":
            if t.shape[:3] != q.shape[:3]:
                raise ValueError(f"v must be (B, heads, N, e) with q's (B, heads, N) = {tuple(q.shape[:3])}, "
                                 f"got {tuple(t.shape)}")
        elif t.shape != q.shape:
            raise ValueError(f"{name} must have q's shape {tuple(q.shape)}, got {tuple(t.shape)}")
    heads = q.shape[1]
    if isinstance(scale, torch.Tensor):
        if not scale.is_floating_point() or scale.device != q.device:
            raise ValueError(f"a tensor scale must be floating point on {q.device}, got {scale.dtype} on "
                             f"{scale.device}")
        if scale.numel() not in (1, heads) or sum(s > 1 for s in scale.shape) > 1:
            raise ValueError(f"a tensor scale must hold one value per head (heads={heads}: shape (heads,), "
                             f"(heads, 1, 1) or (1, heads, 1, 1)) or a single value, got shape {tuple(scale.shape)}")
    elif not _is_number(scale):
        raise TypeError(f"scale must be a finite number or a per-head tensor, got {scale!r}")
    for name, value in (("den_scale", den_scale), ("eps", eps)):
        if not _is_number(value):
            raise TypeError(f"{name} must be a finite number, got {value!r}")
    if denom_min is not None and not _is_number(denom_min):
        raise TypeError(f"denom_min must be None or a finite number, got {denom_min!r}")


def _triton_unsupported(q: torch.Tensor, v: torch.Tensor) -> Optional[str]:
    if q.dtype not in TRITON_DTYPES:
        return f"dtype {q.dtype} (supported: float16, bfloat16, float32)"
    if max(q.shape[-1], v.shape[-1]) > TRITON_MAX_HEAD_DIM:
        return f"head dims d={q.shape[-1]}, e={v.shape[-1]} (supported: up to {TRITON_MAX_HEAD_DIM})"
    return None


# ---------------------------------------------------------------------------------------- the op

def linear_attention(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_den: Optional[torch.Tensor] = None,
        k_den: Optional[torch.Tensor] = None,
        scale: Union[float, torch.Tensor] = 1.0,
        den_scale: float = 1.0,
        eps: float = 0.0,
        denom_min: Optional[float] = None,
) -> torch.Tensor:
    _validate(q, k, v, q_den, k_den, scale, den_scale, eps, denom_min)
    if isinstance(scale, torch.Tensor):  # one value per head, as a (heads,) view (differentiable)
        scale = scale.reshape(-1).expand(q.shape[1])
    backend = choose_backend("linear_attention", q, k, v, *(t for t in (q_den, k_den) if t is not None),
                             triton_supported=_triton_unsupported(q, v))
    if backend == "triton":
        from .triton_kernel import linear_attention_triton  # imported lazily: TRITON_INTERPRET is read at import
        return linear_attention_triton(q, k, v, q_den, k_den, scale, den_scale, eps, denom_min)
    if backend == "reference":
        return linear_attention_reference(q, k, v, q if q_den is None else q_den, k if k_den is None else k_den,
                                          scale, den_scale, eps, denom_min)
    return linear_attention_torch(q, k, v, q_den, k_den, scale, den_scale, eps, denom_min)


linear_attention.__doc__ = __doc__


def linear_attention_flops(
        q: Union[torch.Tensor, Sequence[int]],
        k: Union[torch.Tensor, Sequence[int], None] = None,
        v: Union[torch.Tensor, Sequence[int], None] = None,
        *args,
        **kwargs,
) -> int:
    """Forward FLOPs of :func:`linear_attention`: takes the op's arguments (tensors, meta ones fine, or shapes).

    2 per multiply-add of the matmul work, per image and head: the state k^T v (2·N·d·e), the output q S
    (2·N·d·e) and the denominator dots q_den . z (2·N·d). The key sum, scaling, clamp and division are
    elementwise and not counted. Total 2·B·heads·N·d·(2e + 1). The backward is twice the state/output work
    (dO S^T, q^T G, v dS^T, k dS) plus the denominator terms.
    """
    q_shape = tuple(q.shape) if isinstance(q, torch.Tensor) else tuple(q)
    v_shape = q_shape if v is None else (tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v))
    if len(q_shape) != 4 or len(v_shape) != 4:
        raise ValueError(f"q and v must be (B, heads, N, d) and (B, heads, N, e), got {q_shape} and {v_shape}")
    B, heads, N, d = q_shape
    e = v_shape[-1]
    return 2 * B * heads * N * d * (2 * e + 1)
