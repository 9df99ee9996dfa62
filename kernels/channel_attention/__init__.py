"""Channel (group) attention: DaViT's ``ChannelAttention`` (v1) and Florence-2's ``ChannelAttentionV2`` (v2).

``channel_attention(q, k, v, groups, scale=None, version=1)``

* ``q, k, v``: (B, N, C) projections, any strides (e.g. the three C-wide slices of one fused (B, N, 3C) qkv
  projection, as timm's ``qkv`` Linear produces them). ``groups`` (timm's ``num_heads``) must divide C;
  group g is channels ``g*C_g .. (g+1)*C_g - 1`` with ``C_g = C // groups`` (timm's
  ``reshape(B, N, 3, groups, C_g)``). For each image and group, with (N, C_g) slices q_g, k_g, v_g:

  - ``version=1`` (DaViT; timm ``ChannelAttention``): ``A = softmax(scale * k_g^T v_g)``, a C_g x C_g matrix,
    softmax over its last axis; ``out_g = (A q_g^T)^T = q_g A^T``. Note the unusual roles: k and v form the
    attention, q is what it is applied to. Default ``scale = C_g ** -0.5``.
  - ``version=2`` (Florence-2; timm ``ChannelAttentionV2``): ``A = softmax(scale * q_g^T k_g)``,
    ``out_g = (A v_g^T)^T = v_g A^T``. Default ``scale = N ** -0.5`` (timm's ``dynamic_scale=True``, its
    default; for ``dynamic_scale=False`` pass ``scale=C_g ** -0.5``).

* ``scale``: a Python number multiplying the C_g x C_g score matrix. timm multiplies the first operand
  instead (v1: ``k = k * scale``; v2: ``q = q * scale``) before the matmul; the two are equal in exact
  arithmetic (the tests check it against timm's modules in float64). In fp16/bf16 the fast paths keep the
  sum over N from overflowing: Triton accumulates in fp32 and scales the fp32 sum, the torch path scales
  the first operand as timm does.
* timm (1.0.x) has no ``staged_softmax`` option in either class; ``dynamic_scale`` is covered by ``scale``.

Returns (B, N, C), contiguous, in q's dtype. Cost is linear in N: 4·B·N·C·C_g FLOPs
(:func:`channel_attention_flops`); no N x N matrix exists on any path.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from .._backend import choose_backend
from .._checks import check_tensors
from .reference import channel_attention_reference
from .torch_path import channel_attention_torch

__all__ = ["channel_attention", "channel_attention_flops", "VERSIONS"]

VERSIONS = (1, 2)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
TRITON_MAX_HEAD_DIM = 128


def _divisors(n: int):
    return [d for d in range(1, n + 1) if n % d == 0]


def _validate(q, k, v, groups, scale, version) -> None:
    check_tensors("(B, N, C)", q=q, k=k, v=v)
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not isinstance(version, numbers.Integral) or isinstance(version, bool) or version not in VERSIONS:
        raise ValueError(f"version must be 1 (DaViT) or 2 (Florence-2), got {version!r}")
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups <= 0:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    C = q.shape[-1]
    if C % groups != 0:
        raise ValueError(f"groups={groups} does not divide the channel count C={C}: each group needs C // groups "
                         f"channels; allowed groups for C={C}: {_divisors(C)}")
    if scale is not None:
        if not isinstance(scale, numbers.Real) or isinstance(scale, bool) or not math.isfinite(scale):
            raise TypeError(f"scale must be None or a finite Python number, got {scale!r}")


def _default_scale(q: torch.Tensor, groups: int, version: int) -> float:
    B, N, C = q.shape
    return (C // groups) ** -0.5 if version == 1 else N ** -0.5


def _triton_unsupported(q: torch.Tensor, groups: int) -> Optional[str]:
    if q.dtype not in TRITON_DTYPES:
        return f"dtype {q.dtype} (supported: float16, bfloat16, float32)"
    if q.shape[-1] // groups > TRITON_MAX_HEAD_DIM:
        return f"channels per group {q.shape[-1] // groups} > {TRITON_MAX_HEAD_DIM}"
    return None


def channel_attention(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        groups: int,
        scale: Optional[float] = None,
        version: int = 1,
) -> torch.Tensor:
    _validate(q, k, v, groups, scale, version)
    groups = int(groups)
    scale = _default_scale(q, groups, version) if scale is None else float(scale)
    backend = choose_backend("channel_attention", q, k, v, triton_supported=_triton_unsupported(q, groups))
    if backend == "triton":
        from .triton_kernel import channel_attention_triton  # imported lazily: TRITON_INTERPRET is read at import
        return channel_attention_triton(q, k, v, groups, scale, version)
    if backend == "reference":
        return channel_attention_reference(q, k, v, groups, scale, version)
    return channel_attention_torch(q, k, v, groups, scale, version)


channel_attention.__doc__ = __doc__


def channel_attention_flops(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        groups: int,
        scale: Optional[float] = None,
        version: int = 1,
) -> int:
    """Forward FLOPs of :func:`channel_attention` on these inputs (meta tensors are fine).

    2 per multiply-add of the two matmuls per (image, group): the C_g x C_g scores summed over N tokens
    (2·N·C_g²) and the per-token product with A (2·N·C_g²); softmax and scaling not counted.
    Total 4·B·N·C·C_g, the same for both versions. The backward is twice this (dA, dZ, dX, dY).
    """
    _validate(q, k, v, groups, scale, version)
    B, N, C = q.shape
    return 4 * B * N * C * (C // int(groups))
