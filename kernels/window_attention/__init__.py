"""Window attention over non-overlapping windows (``block``) or dilated grids (``grid``).

``window_attention(q, k, v, window, partition, bias=None, scale=None)``

* ``q, k, v``: (B, H, W, heads, D), any strides (views into one fused qkv projection are fine).
* ``window``: (wh, ww), or an int for a square window.
  ``block``: each group is a wh x ww window of adjacent tokens (local attention).
  ``grid``: the map is split into a fixed wh x ww grid: each group holds wh x ww tokens spaced
  ceil(H / wh) rows and ceil(W / ww) columns apart (dilated, global attention; MaxViT's grid attention).
* Maps that are not whole windows are padded up to ``ceil(H / wh) * wh`` (and W likewise); the padded keys
  are masked out and the padded queries dropped, so no padding value ever reaches a real token.
* ``bias``: optional additive (heads, wh*ww, wh*ww) bias indexed by the query's and the key's position inside
  their window (row-major), e.g. a relative-position bias; it receives a gradient.
* ``scale``: multiplies q.k before the bias; default D ** -0.5.

Returns (B, H, W, heads, D), contiguous, in q's dtype.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple, Union

import torch

from .._backend import choose_backend
from .._checks import check_tensors
from .reference import window_attention_reference
from .torch_path import window_attention_torch

__all__ = ["window_attention", "window_attention_flops", "PARTITIONS"]

PARTITIONS = ("block", "grid")
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
TRITON_MAX_HEAD_DIM = 256


def _as_pair(window: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(window, numbers.Integral):
        pair = (window, window)
    else:
        try:
            pair = tuple(window)
        except TypeError:  # a float or another non-iterable: report it like any other bad window
            pair = ()
    # bool is an int subclass but never a window size; numpy integers are fine
    if len(pair) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
                                 for s in pair):
        raise ValueError(f"window must be a positive int or a pair of positive ints, got {window!r}")
    return int(pair[0]), int(pair[1])


def _validate(q, k, v, window, partition, bias) -> None:
    if partition not in PARTITIONS:
        raise ValueError(f"partition must be one of {PARTITIONS}, got {partition!r}")
    check_tensors("(B, H, W, heads, head_dim)", q=q, k=k, v=v)
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if bias is not None:
        n = window[0] * window[1]
        expected = (q.shape[3], n, n)
        if tuple(bias.shape) != expected:
            raise ValueError(f"bias must have shape (heads, wh*ww, wh*ww) = {expected}, got {tuple(bias.shape)}")
        if not bias.is_floating_point() or bias.device != q.device:
            raise ValueError(f"bias must be a floating point tensor on {q.device}, got {bias.dtype} on {bias.device}")


def _triton_unsupported(q: torch.Tensor) -> Optional[str]:
    if q.dtype not in TRITON_DTYPES:
        return f"dtype {q.dtype} (supported: float16, bfloat16, float32)"
    if q.shape[-1] > TRITON_MAX_HEAD_DIM:
        return f"head_dim {q.shape[-1]} > {TRITON_MAX_HEAD_DIM}"
    return None


def window_attention(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        window: Union[int, Sequence[int]],
        partition: str = "block",
        bias: Optional[torch.Tensor] = None,
        scale: Optional[float] = None,
) -> torch.Tensor:
    window = _as_pair(window)
    _validate(q, k, v, window, partition, bias)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    backend = choose_backend("window_attention", q, k, v, triton_supported=_triton_unsupported(q))
    if backend == "triton":
        from .triton_kernel import window_attention_triton  # imported lazily: TRITON_INTERPRET is read at import
        return window_attention_triton(q, k, v, window, partition, bias, scale)
    if backend == "reference":
        return window_attention_reference(q, k, v, window, partition, bias, scale)
    return window_attention_torch(q, k, v, window, partition, bias, scale)


def window_attention_flops(shape: Sequence[int], window: Union[int, Sequence[int]]) -> int:
    """Forward FLOPs of ``window_attention`` on q of ``shape`` (B, H, W, heads, D): q.k and p.v over every group of
    the padded map, 2 FLOPs per multiply-add (softmax, scale and bias not counted), as the kernels compute it."""
    B, H, W, heads, D = shape
    wh, ww = _as_pair(window)
    padded_tokens = -(-H // wh) * wh * -(-W // ww) * ww
    return 2 * 2 * B * heads * padded_tokens * wh * ww * D
