"""2D neighbourhood attention (NA / DiNA), NATTEN 0.14 semantics: see :func:`neighborhood_attention`."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from .._backend import choose_backend
from .._neighborhood import check_neighborhood
from .reference import neighborhood_attention_reference
from .torch_path import neighborhood_attention_torch

__all__ = ["neighborhood_attention", "neighborhood_attention_flops"]

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
TRITON_MAX_HEAD_DIM = 256
OP = "neighborhood_attention"


def _validate(q, k, v, rpb, kernel_size, dilation):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 5:
            raise ValueError(f"{OP}: {name} must be (B, H, W, heads, head_dim), got a {t.dim()}-D tensor of shape "
                             f"{tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{OP}: {name} must be a floating point tensor, got {t.dtype}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"{OP}: q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise ValueError(f"{OP}: q, k, v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype} on "
                         f"{q.device}/{k.device}/{v.device}")
    if min(q.shape) == 0:
        raise ValueError(f"{OP}: q, k, v must not be empty, got shape {tuple(q.shape)}")
    kernel_size, dilation = check_neighborhood(OP, kernel_size, dilation, q.shape[1], q.shape[2])
    if rpb is not None:
        if not isinstance(rpb, torch.Tensor):
            raise TypeError(f"{OP}: rpb must be a torch.Tensor or None, got {type(rpb).__name__}")
        expected = (q.shape[3], 2 * kernel_size - 1, 2 * kernel_size - 1)
        if tuple(rpb.shape) != expected:
            raise ValueError(f"{OP}: rpb must have shape (heads, 2*kernel_size-1, 2*kernel_size-1) = {expected}, "
                             f"got {tuple(rpb.shape)}")
        if not rpb.is_floating_point() or rpb.device != q.device:
            raise ValueError(f"{OP}: rpb must be a floating point tensor on {q.device}, "
                             f"got {rpb.dtype} on {rpb.device}")
    return kernel_size, dilation


def _triton_has_gather() -> bool:
    try:
        import triton.language as tl
    except Exception:
        return True  # no triton at all: choose_backend reports that itself
    return hasattr(tl, "gather")


def _triton_unsupported(q: torch.Tensor, rpb: Optional[torch.Tensor]) -> Optional[str]:
    if q.dtype not in TRITON_DTYPES:
        return f"dtype {q.dtype} (supported: float16, bfloat16, float32)"
    if q.shape[-1] > TRITON_MAX_HEAD_DIM:
        return f"head_dim {q.shape[-1]} > {TRITON_MAX_HEAD_DIM}"
    if rpb is not None and rpb.requires_grad and torch.is_grad_enabled() and not _triton_has_gather():
        return "a gradient for rpb needs tl.gather (triton >= 3.2)"
    return None


def neighborhood_attention(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kernel_size: int,
        dilation: int = 1,
        rpb: Optional[torch.Tensor] = None,
        scale: Optional[float] = None,
) -> torch.Tensor:
    """2D neighbourhood attention (NA) and dilated neighbourhood attention (DiNA), NATTEN 0.14 semantics.

    ``neighborhood_attention(q, k, v, kernel_size, dilation=1, rpb=None, scale=None)``

    * ``q, k, v``: (B, H, W, heads, D), any strides (views into one fused qkv projection are read in place).
    * Query (i, j) attends to exactly ``kernel_size**2`` keys: along each axis, the ``kernel_size``
      consecutive positions of its dilation sub-lattice (the indices congruent to it modulo ``dilation``)
      centred on it, shifted inward at the borders of the sub-lattice (no padding, no missing keys). A
      sub-lattice of length L (``ceil((n - r) / dilation)`` for residue r on an axis of n) puts position p's
      window at ``clamp(p - k // 2, 0, L - k)``. See ``kernels/_neighborhood.py`` for the rule in full.
    * ``rpb``: optional additive relative-position bias (heads, 2k-1, 2k-1): the pair (query, key) adds
      ``rpb[h, (key_row - query_row) / dilation + k - 1, (key_col - query_col) / dilation + k - 1]`` (offsets in
      sub-lattice units); it receives a gradient.
    * ``scale`` multiplies q.k before the bias; default D ** -0.5. Softmax over the window, then times v.
    * ``kernel_size``: odd int >= 1; ``dilation``: int >= 1; both H and W must be >= ``kernel_size * dilation``
      (every sub-lattice at least ``kernel_size`` long). Smaller maps are the caller's to pad (NATTEN 0.14's
      module zero-padded its input to k*d on the right/bottom before the qkv projection).

    Returns (B, H, W, heads, D), contiguous, in q's dtype.
    """
    kernel_size, dilation = _validate(q, k, v, rpb, kernel_size, dilation)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    backend = choose_backend(OP, q, k, v, triton_supported=_triton_unsupported(q, rpb))
    if backend == "triton":
        from .triton_kernel import neighborhood_attention_triton  # imported lazily, like window_attention's
        return neighborhood_attention_triton(q, k, v, kernel_size, dilation, rpb, scale)
    if backend == "reference":
        return neighborhood_attention_reference(q, k, v, kernel_size, dilation, rpb, scale)
    return neighborhood_attention_torch(q, k, v, kernel_size, dilation, rpb, scale)


def neighborhood_attention_flops(q: Union[torch.Tensor, Sequence[int]], kernel_size: int, dilation: int = 1,
                                 rpb: Optional[torch.Tensor] = None) -> int:
    """Forward FLOPs of :func:`neighborhood_attention` for q (or its shape (B, H, W, heads, D)).

    2 per multiply-add of the useful matmul work: scores q.k over the k*k keys of each query and the
    weighted sum of as many values, ``4 * B * H * W * heads * k**2 * D``. Softmax, scale and bias are not
    counted; dilation and the bias do not change the count. (Kernels compute more: the Triton and torch
    paths score whole tile halos, about 4x this at k = 7; see kernels/README.md.)
    """
    B, H, W, heads, D = (q.shape if isinstance(q, torch.Tensor) else tuple(q))
    return 4 * B * H * W * heads * kernel_size * kernel_size * D
