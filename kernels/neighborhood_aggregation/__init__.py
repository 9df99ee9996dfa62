"""2D neighbourhood aggregation with caller-supplied weights (NATTEN 0.17's ``na2d_av``, OverLoCK's ContMix):
see :func:`neighborhood_aggregation`."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from .._backend import choose_backend
from .._checks import check_tensors
from .._neighborhood import check_neighborhood
from .reference import neighborhood_aggregation_reference
from .torch_path import neighborhood_aggregation_torch

__all__ = ["neighborhood_aggregation", "na2d_av", "neighborhood_aggregation_flops"]

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
TRITON_MAX_HEAD_DIM = 256
OP = "neighborhood_aggregation"


def _shape(x, name: str):
    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(x)
    if len(shape) != 5:
        last = "kernel_size**2" if name == "attn" else "head_dim"
        raise ValueError(f"{OP}: {name} must be (B, heads, H, W, {last}), got shape {shape}")
    return shape


def _check_shapes(attn_shape, value_shape, kernel_size, dilation):
    """Kernel size and dilation against the map, the weights' length and the shared (B, heads, H, W)."""
    B, heads, H, W, D = value_shape
    kernel_size, dilation = check_neighborhood(OP, kernel_size, dilation, H, W)
    if attn_shape[-1] != kernel_size * kernel_size:
        raise ValueError(
            f"{OP}: attn must hold one weight per neighbour, kernel_size**2 = {kernel_size}**2 = "
            f"{kernel_size * kernel_size} in its last dimension (row-major over the window), got {attn_shape[-1]} "
            f"(attn shape {attn_shape})")
    if attn_shape[:4] != value_shape[:4]:
        raise ValueError(f"{OP}: attn and value must agree on (B, heads, H, W), got attn {attn_shape} and value "
                         f"{value_shape}")
    return kernel_size, dilation


def _triton_unsupported(attn: torch.Tensor, value: torch.Tensor) -> Optional[str]:
    for name, t in (("value", value), ("attn", attn)):
        if t.dtype not in TRITON_DTYPES:
            return f"{name} dtype {t.dtype} (supported: float16, bfloat16, float32)"
    if value.shape[-1] > TRITON_MAX_HEAD_DIM:
        return f"head_dim {value.shape[-1]} > {TRITON_MAX_HEAD_DIM}"
    return None


def neighborhood_aggregation(attn: torch.Tensor, value: torch.Tensor, kernel_size: int,
                             dilation: int = 1) -> torch.Tensor:
    """2D neighbourhood aggregation with per-pixel weights supplied by the caller (NATTEN 0.17's ``na2d_av``).

    ``neighborhood_aggregation(attn, value, kernel_size, dilation=1)``, alias ``na2d_av``::

        out[b, h, i, j] = sum over t = ti*k + tj of attn[b, h, i, j, t] * value[b, h, row(i, ti), col(j, tj)]

    * ``attn``: (B, heads, H, W, kernel_size**2), the weights of each pixel's k x k neighbours in row-major slot
      order (slot ``ti * k + tj`` is the neighbour at row slot ti, column slot tj of the window). They are used as
      given (OverLoCK's ContMix softmaxes them per tap group before the call; nothing is normalised here).
    * ``value``: (B, heads, H, W, D) on attn's device. Any strides for both. ``attn`` may have another floating dtype
      (under autocast the caller's softmax gives fp32 weights for bf16 values): as NATTEN 0.17's ``na2d_av`` does, the
      weights are used in value's dtype (rounded to it), sums accumulate in fp32, and attn's gradient comes back in
      attn's dtype.
    * The neighbourhood is that of :func:`neighborhood_attention` (NATTEN semantics, ``kernels/_neighborhood.py``):
      along each axis, the ``kernel_size`` consecutive positions of the pixel's dilation sub-lattice centred on it,
      shifted inward at the borders (never padded), so every pixel has exactly k*k neighbours. With dilation 1 that
      is the window starting at ``clamp(i - k // 2, 0, H - k)``: ContMix's unfold fallback (valid unfold, then the
      grid of windows replicate-padded at the borders) computes the same thing with k*k copies of V.
    * ``kernel_size``: odd int >= 1; ``dilation``: int >= 1; H and W must be >= ``kernel_size * dilation``
      (ContMix upsamples smaller maps to k before the call; that is the caller's to do).

    Returns (B, heads, H, W, D), contiguous, in value's dtype. Differentiable in both ``attn`` and ``value``.
    Backends (``use_backend`` / ``VISIONZOO_KERNEL_BACKEND``): Triton kernels on CUDA (fp16/bf16/fp32, head dims
    up to 256; no k*k copy of V, deterministic backward), a tiled torch path elsewhere, and the reference.
    """
    check_tensors("(B, heads, H, W, kernel_size**2)", attn=attn)
    check_tensors("(B, heads, H, W, head_dim)", value=value)
    if attn.device != value.device:
        raise ValueError(f"{OP}: attn and value must be on the same device, got {attn.device} and {value.device}")
    kernel_size, dilation = _check_shapes(tuple(attn.shape), tuple(value.shape), kernel_size, dilation)
    backend = choose_backend(OP, attn, value, triton_supported=_triton_unsupported(attn, value))
    if backend == "triton":  # the kernels read attn in its own dtype and round it to value's as they load it
        from .triton_kernel import neighborhood_aggregation_triton  # imported lazily, like the other ops
        return neighborhood_aggregation_triton(attn, value, kernel_size, dilation)
    if backend == "reference":
        return neighborhood_aggregation_reference(attn, value, kernel_size, dilation)
    # autograd's cast returns attn's gradient in attn's dtype
    return neighborhood_aggregation_torch(attn.to(value.dtype), value, kernel_size, dilation)


na2d_av = neighborhood_aggregation


def neighborhood_aggregation_flops(attn: Union[torch.Tensor, Sequence[int]], value: Union[torch.Tensor, Sequence[int]],
                                   kernel_size: int, dilation: int = 1) -> int:
    """Forward FLOPs of :func:`neighborhood_aggregation` for its arguments (tensors, meta ones fine, or shapes).

    2 per multiply-add of the weighted sums over exactly the k*k neighbours: ``2 * B * heads * H * W * k**2 * D``.
    Dilation does not change the count. (The kernels compute more: whole tile halos, see kernels/README.md.)
    """
    attn_shape, value_shape = _shape(attn, "attn"), _shape(value, "value")
    kernel_size, _ = _check_shapes(attn_shape, value_shape, kernel_size, dilation)
    B, heads, H, W, D = value_shape
    return 2 * B * heads * H * W * kernel_size * kernel_size * D
