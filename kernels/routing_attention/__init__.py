"""Routing attention: BiFormer's bi-level routing attention (BRA) core, without the gathered K/V copy.

``routing_attention(q, k, v, num_regions, topk, scale=None, padding="mask", index=None, return_index=False)``

* ``q, k``: (B, H, W, heads, Dqk); ``v``: (B, H, W, heads, Dv) (BiFormer's qk_dim and dim may differ).
  Any strides: views of one fused projection are fine.
* ``num_regions``: (nh, nw) regions along H and W, or an int n for n x n (BiFormer's ``n_win``).
  Region size: ``rh = ceil(H / nh)`` rows, ``rw = ceil(W / nw)`` columns; the map is padded at the bottom and
  right to ``(nh*rh, nw*rw)`` (the size official ``auto_pad`` pads x to). Region ``r = i*nw + j`` (row-major,
  BiFormer's numbering) covers rows ``i*rh ..`` and columns ``j*rw ..``. When the padding is at least a region
  high or wide (e.g. H = 36, n = 7: rh = 6 and the 7th region row is all padding, or n > H), some regions hold
  no real token ("empty" regions).
* Routing (``region_routing``): q and k are averaged per region over all heads' channels (heads*Dqk, i.e.
  BiFormer's qk_dim), detached; affinity ``A = (mean_q * scale) @ mean_kᵀ`` (regions x regions, per image);
  each query region takes the ``topk`` key regions of largest affinity (``torch.topk``, by decreasing
  affinity). The routing is not differentiable: as in the released BiFormer models (``diff_routing``,
  ``soft_routing``, ``param_routing`` all False) the routing weights multiply nothing, so no gradient reaches
  the means; topk picks the same regions for any positive scale.
* Attention: every query token attends to all key tokens of the union of its region's routed regions,
  ``softmax(scale * q.k) @ v`` per head; K and V are read by region index, never gathered into a
  (B, regions, topk, tokens, C) copy. Order and multiplicity: the routed regions are distinct, their order
  does not matter.
* ``padding`` (only matters when the map is not whole regions):

  - ``"mask"`` (default): padded positions are not tokens. Padded keys are masked, padded queries dropped;
    region means are taken over the region's real tokens only; empty regions are never routed to, and
    ``topk`` is clamped to the number of non-empty regions.
  - ``"zeros"``: the map is zero-padded (q = k = v = 0 at padded positions) and padded keys take part like
    any other (score 0, value 0); region means are over all rh*rw positions, padding counted as zeros;
    empty regions are all-zero regions that can be routed to; ``topk`` is clamped to nh*nw. This is
    official ``auto_pad`` when the qkv projection has no bias. The released models' projection has a bias,
    so to reproduce ``auto_pad`` exactly the model zero-pads x *before* the projection and calls this op on
    the padded (whole-region) map, where the two modes coincide, then crops.

* ``topk``: positive int, clamped to the routable region count (above); the effective value is
  ``index.shape[-1]`` of the returned index. ``num_regions`` larger than the map is allowed: rh = 1 and the
  regions past the map are empty (with ``mask`` the result equals that of num_regions clamped to
  (min(nh, H), min(nw, W))).
* ``scale``: multiplies q.k in both the routing and the attention; default ``(heads * Dqk) ** -0.5``, the
  official BRA scale (full qk_dim, not head_dim; BiFormer's stage 4 is plain attention with head_dim ** -0.5
  and is not this op).
* ``index``: optional precomputed routing, (B, nh*nw, kk) integer with distinct region ids per row
  (e.g. from :func:`region_routing`, or the model's own copy of the official routing); with ``mask`` it may
  not name empty regions; ``topk`` is then only validated (the routing is ``index``). ``return_index=True``
  returns ``(out, index)``.

Returns (B, H, W, heads, Dv), contiguous, in q's dtype.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple, Union

import torch

from .._backend import choose_backend
from .._checks import check_tensors
from .._index import _is_compiling
from .reference import region_routing_reference, routing_attention_reference
from .torch_path import RegionGrid, region_grid, region_routing_torch, routing_attention_torch

__all__ = ["routing_attention", "region_routing", "routing_attention_flops", "PADDINGS"]

PADDINGS = ("mask", "zeros")
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
TRITON_MAX_HEAD_DIM = 256
_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _as_pair(value, name: str) -> Tuple[int, int]:
    if isinstance(value, numbers.Integral):
        pair = (value, value)
    else:
        try:
            pair = tuple(value)
        except TypeError:
            pair = ()
    if len(pair) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_topk(topk) -> int:
    if isinstance(topk, bool) or not isinstance(topk, numbers.Integral) or topk < 1:
        raise ValueError(f"topk must be a positive int (it is clamped to the number of routable regions), got {topk!r}"
                         " (BiFormer's topk -1/-2 mean plain attention, which is not this op)")
    return int(topk)


def _shape5(x, name: str) -> Tuple[int, ...]:
    """Shape of a (B, H, W, heads, D) tensor, or of a shape tuple (for the FLOP count)."""
    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(x)
    if len(shape) != 5:
        raise ValueError(f"{name} must be (B, H, W, heads, head_dim), got a {len(shape)}-D shape {shape}")
    if min(shape) <= 0:
        raise ValueError(f"{name} must not be empty, got shape {shape}")
    return shape


def _validate_shapes(q, k, v) -> None:
    qs, ks, vs = _shape5(q, "q"), _shape5(k, "k"), _shape5(v, "v")
    if qs != ks:
        raise ValueError(f"q and k must have the same shape (B, H, W, heads, Dqk), got {qs} and {ks}")
    if vs[:4] != qs[:4]:
        raise ValueError(f"v must be (B, H, W, heads, Dv) with q's (B, H, W, heads) = {qs[:4]}, got {vs}")


def _validate_tensors(q, k, v) -> None:
    check_tensors("(B, H, W, heads, head_dim)", q=q, k=k, v=v)
    _validate_shapes(q, k, v)


def _check_padding(padding) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return padding


def _default_scale(q_shape, scale) -> float:
    if scale is None:
        return float(q_shape[3] * q_shape[4]) ** -0.5  # official BRA: qk_dim ** -0.5 with qk_dim = heads * Dqk
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {scale!r}")
    return float(scale)


def _validate_index(index, q: torch.Tensor, grid: RegionGrid, padding: str) -> torch.Tensor:
    if not isinstance(index, torch.Tensor) or index.dtype not in _INTEGER_DTYPES:
        raise TypeError("index must be an integer tensor (B, regions, kk), got "
                        f"{index.dtype if isinstance(index, torch.Tensor) else type(index).__name__}")
    R, routable = grid.num_regions, grid.routable(padding)
    if index.dim() != 3 or index.shape[:2] != (q.shape[0], R) or not 1 <= index.shape[2] <= routable:
        raise ValueError(f"index must be (B, regions, kk) = ({q.shape[0]}, {R}, 1..{routable}), "
                         f"got {tuple(index.shape)}")
    if index.device != q.device:
        raise ValueError(f"index must be on {q.device}, got {index.device}")
    index = index.long()
    if not _is_compiling():  # value checks read the tensor: skipped while torch.compile traces
        if bool(((index < 0) | (index >= R)).any()):
            raise ValueError(f"index values must lie in [0, {R}) (region ids)")
        ordered = index.sort(dim=-1).values
        if bool((ordered[..., 1:] == ordered[..., :-1]).any()):
            raise ValueError("index rows must hold distinct region ids (a region routed twice would count twice)")
        if padding == "mask" and routable < R and not bool(grid.live_regions(q.device)[index].all()):
            raise ValueError(f"index names a region that holds no real token (a {grid.H}x{grid.W} map in "
                             f"{grid.nh}x{grid.nw} regions of {grid.rh}x{grid.rw}): with padding='mask' it "
                             "has no key to attend to")
    return index


def _triton_unsupported(q: torch.Tensor, v: torch.Tensor) -> Optional[str]:
    if q.dtype not in TRITON_DTYPES:
        return f"dtype {q.dtype} (supported: float16, bfloat16, float32)"
    if max(q.shape[-1], v.shape[-1]) > TRITON_MAX_HEAD_DIM:
        return f"head_dim {max(q.shape[-1], v.shape[-1])} > {TRITON_MAX_HEAD_DIM}"
    return None


def _routing(q, k, grid, topk, scale, padding, backend) -> torch.Tensor:
    if backend == "reference":
        return region_routing_reference(q, k, (grid.nh, grid.nw), topk, scale, padding)
    return region_routing_torch(q, k, grid, topk, scale, padding)


def region_routing(
        q: torch.Tensor,
        k: torch.Tensor,
        num_regions: Union[int, Sequence[int]],
        topk: int,
        scale: Optional[float] = None,
        padding: str = "mask",
) -> torch.Tensor:
    """The routing step of :func:`routing_attention` alone (see the module docstring).

    q, k: (B, H, W, heads, Dqk). Returns (B, nh*nw, kk) int64 key-region ids per query region, by decreasing
    affinity, kk = topk clamped to the routable region count. Rows of regions without a real token
    (``mask``) are valid but arbitrary: such regions have no query.
    """
    num_regions = _as_pair(num_regions, "num_regions")
    topk, padding = _check_topk(topk), _check_padding(padding)
    _validate_tensors(q, k, k)
    scale = _default_scale(q.shape, scale)
    grid = region_grid(q.shape[1], q.shape[2], num_regions)
    backend = choose_backend("region_routing", q, k, triton_supported=None)
    return _routing(q, k, grid, topk, scale, padding, backend)


def routing_attention(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_regions: Union[int, Sequence[int]],
        topk: int,
        scale: Optional[float] = None,
        padding: str = "mask",
        index: Optional[torch.Tensor] = None,
        return_index: bool = False,
):
    num_regions = _as_pair(num_regions, "num_regions")
    topk, padding = _check_topk(topk), _check_padding(padding)
    _validate_tensors(q, k, v)
    scale = _default_scale(q.shape, scale)
    grid = region_grid(q.shape[1], q.shape[2], num_regions)
    backend = choose_backend("routing_attention", q, k, v, triton_supported=_triton_unsupported(q, v))
    if index is None:
        index = _routing(q, k, grid, topk, scale, padding, backend)
    else:
        index = _validate_index(index, q, grid, padding)
    if backend == "triton":
        from .triton_kernel import routing_attention_triton  # imported lazily: TRITON_INTERPRET is read at import
        out = routing_attention_triton(q, k, v, grid, index, scale, padding)
    elif backend == "reference":
        out = routing_attention_reference(q, k, v, num_regions, index, scale, padding)
    else:
        out = routing_attention_torch(q, k, v, grid, index, scale, padding)
    return (out, index) if return_index else out


routing_attention.__doc__ = __doc__


def routing_attention_flops(
        q, k, v,
        num_regions: Union[int, Sequence[int]],
        topk: int,
        scale: Optional[float] = None,
        padding: str = "mask",
        index: Optional[torch.Tensor] = None,
) -> int:
    """Forward FLOPs of :func:`routing_attention` (2 per multiply-add; softmax, means and topk not counted).

    q, k, v: the op's tensors or their shapes. With B images, R = nh*nw regions, T = rh*rw positions per
    region, kk the effective topk (``index.shape[-1]`` when an index is given):

    * routing affinity: ``2 * B * R * R * heads * Dqk``
    * attention: ``2 * B * heads * R * T * (kk * T) * (Dqk + Dv)`` (scores and weighted sum of every query
      position against the kk*T positions of its routed regions).

    Counted on the padded map, which is what every path computes; on whole-region maps (e.g. BiFormer at
    224: 56/28/14 in 7x7 regions) that is exactly the real tokens and their attended keys. With a given
    ``index`` the routing term is not counted (the op does not route).
    """
    num_regions = _as_pair(num_regions, "num_regions")
    topk, padding = _check_topk(topk), _check_padding(padding)
    _validate_shapes(q, k, v)
    B, H, W, heads, dqk = _shape5(q, "q")
    dv = _shape5(v, "v")[4]
    grid = region_grid(H, W, num_regions)
    R, T = grid.num_regions, grid.tokens
    if index is not None:
        kk, routing = int(index.shape[-1]), 0
    else:
        kk, routing = min(topk, grid.routable(padding)), 2 * B * R * R * heads * dqk
    return routing + 2 * B * heads * R * T * kk * T * (dqk + dv)
