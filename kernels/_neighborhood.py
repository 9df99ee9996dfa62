"""Neighbourhood indexing shared by the neighbourhood ops (NATTEN 0.14 semantics).

Used by ``neighborhood_attention`` (softmax(q.k + rpb) v over each query's neighbourhood) and by
``na2d_av`` (out[i] = sum_j w[i, j] v[nbr(i, j)] with externally supplied weights). Everything an op
needs to agree on *which* keys a query sees, in *which slot order*, and *which* relative-position-bias
entry each (query, key) pair uses lives here, once: per-axis and 2D torch index builders, the tiling
the torch paths use, and ``@triton.jit`` helpers for the Triton kernels.

The rule (one axis; the 2D neighbourhood is the product of the row rule and the column rule)
---------------------------------------------------------------------------------------------
``kernel_size`` k (odd, >= 1) and ``dilation`` d (>= 1) on an axis of ``length`` n:

* **Sub-lattices.** Map index ``i`` belongs to residue class ``r = i % d`` at sub-lattice position
  ``p = i // d`` (``i = r + d * p``). Class ``r`` holds ``L_r = ceil((n - r) / d)`` tokens
  (:func:`sublattice_length`): when n is not a multiple of d the first ``n % d`` classes hold one token
  more than the others. Queries only ever see keys of their own class, and everything below is
  computed in sub-lattice units with that class's own length L_r.
* **Window.** Position p sees the k consecutive positions ``start(p) .. start(p) + k - 1`` with
  ``start(p) = clamp(p - k // 2, 0, L_r - k)`` (:func:`window_start_sub`): centred on p inside, shifted
  inward at the borders, never padded. Every query sees exactly k keys per axis (k * k in 2D); this
  needs ``L_r >= k`` for every class, i.e. ``n >= k * d`` (:func:`check_neighborhood`).
  In map units the neighbours of ``i`` are ``r + d * (start(p) + t)``, ``t = 0 .. k-1`` (slot t).
* **Relative-position index.** The pair (query p, key s) uses entry ``s - p + k - 1`` (in
  ``0 .. 2k-2``) of the bias table's axis: the key-query offset in dilated units, shifted by k - 1.
  A 2D table is ``rpb[heads, 2k-1, 2k-1]``, indexed (row offset, column offset).
* **Slot order.** In 2D, slot ``t = ti * k + tj`` is the neighbour at row slot ti, column slot tj
  (row-major), which is the order of NATTEN's ``attn[..., k*k]`` and of ``na2d_av``'s weights.
* **Inverse neighbourhood.** The queries whose window contains key s form the contiguous range
  ``first(s) .. last(s)`` of the class (:func:`inverse_range_sub`), with ``first(s) = 0`` if
  ``s < k`` else ``s - k // 2`` and ``last(s) = L_r - 1`` if ``s >= L_r - k`` else ``s + k // 2``.
  Backward kernels that own a tile of keys iterate over these queries (no atomics).

Where this was checked. NATTEN v0.14.6 (the version DiNAT's weights were trained with) computes, in
``src/natten/csrc/cpu/natten_cpu_commons.h`` (the CUDA twin is ``src/natten/csrc/cuda/natten_commons.cuh``),
``get_window_start(index, length, KERNEL_SIZE, NEIGHBORHOOD_SIZE, dilation)`` and
``get_pb_start(...)`` in map units: the start is ``index % dilation`` near the start of the axis; near
the end it is ``a + index % d - k * d`` with ``a = floor(n / d) * d`` for the classes ``r >= n % d`` and
``n - n % d + r - (k - 1) * d`` for the classes ``r < n % d``. In sub-lattice units both are
``L_r - k`` with ``L_r = ceil((n - r) / d)``, i.e. each class uses its own length, which is the rule
above; ``get_pb_start`` is ``start(p) - p + k - 1``, the relative index of slot 0. Its backward uses
``get_backward_window_start/end``, which is :func:`inverse_range_sub` in map units. The tests check
these builders against a transcription of those formulas and against natten 0.21's ``na2d``.

Tiling (what the torch path and the Triton kernels share)
--------------------------------------------------------
Work is organised per residue class and per tile of ``tile`` consecutive sub-lattice positions per
axis. A query tile starting at position p0 needs the keys ``start(p0) .. start(p_last) + k - 1``: at
most ``tile + k - 1`` positions (``start`` grows by at most 1 per step), its *halo*. Tiles past the end
of a shorter class are clamped (:func:`axis_tiles`), and validity masks say which entries are real.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Tuple

import torch

__all__ = [
    "check_neighborhood", "sublattice_length", "window_start_sub", "inverse_range_sub",
    "axis_window_start", "axis_neighbors", "axis_rpb_index", "axis_inverse_range",
    "neighbor_index", "rpb_index", "AxisTiles", "axis_tiles", "tiles_per_class", "has_clamped_tiles",
]


# ----------------------------------------------------------------------------------------------- checks

def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_neighborhood(op: str, kernel_size, dilation, height: int, width: int) -> Tuple[int, int]:
    """Validate the neighbourhood arguments of ``op`` on a ``height x width`` map; return ``(k, d)`` as ints.

    ``kernel_size`` must be an odd int >= 1, ``dilation`` an int >= 1, and both sides at least
    ``kernel_size * dilation`` (so that every dilation sub-lattice holds at least ``kernel_size``
    tokens). Raises ``ValueError`` naming the offending numbers. Maps that are too small must be padded
    by the caller (the model layer), as NATTEN 0.14's modules did.
    """
    if not _is_int(kernel_size) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{op}: kernel_size must be an odd integer >= 1 (each query sees kernel_size**2 keys "
                         f"centred on it), got {kernel_size!r}")
    if not _is_int(dilation) or dilation < 1:
        raise ValueError(f"{op}: dilation must be an integer >= 1, got {dilation!r}")
    k, d = int(kernel_size), int(dilation)
    for name, n in (("height", height), ("width", width)):
        if n < k * d:
            raise ValueError(
                f"{op}: the map is too small for kernel_size * dilation = {k} * {d} = {k * d}: {name} {n} < {k * d} "
                f"(each of the {d} dilation sub-lattices along the {name} must hold at least kernel_size = {k} tokens; "
                f"the smallest holds {n // d}). Pad the map to at least {k * d} first.")
    return k, d


# -------------------------------------------------------------------------- scalar rule (Python ints)

def sublattice_length(length: int, dilation: int, residue: int) -> int:
    """Number of map indices ``i < length`` with ``i % dilation == residue``:
    ``ceil((length - residue) / dilation)``."""
    return (length - residue + dilation - 1) // dilation


def window_start_sub(p: int, sub_length: int, kernel_size: int) -> int:
    """First key (sub-lattice units) of the window of position ``p`` in a class of ``sub_length`` tokens."""
    return min(max(p - kernel_size // 2, 0), sub_length - kernel_size)


def inverse_range_sub(s: int, sub_length: int, kernel_size: int) -> Tuple[int, int]:
    """``(first, last)``: the positions (sub-lattice units, inclusive) whose window contains key ``s``."""
    first = 0 if s < kernel_size else s - kernel_size // 2
    last = sub_length - 1 if s >= sub_length - kernel_size else s + kernel_size // 2
    return first, last


# ------------------------------------------------------------------------- per-axis tensors (map units)

def _axis_sub(length: int, dilation: int, device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(residue, position, class length) of every map index ``0 .. length-1``."""
    i = torch.arange(length, device=device)
    r = i % dilation
    return r, i // dilation, (length - r + dilation - 1) // dilation


def axis_window_start(length: int, kernel_size: int, dilation: int = 1, device=None) -> torch.Tensor:
    """(length,) int64: the map index of slot 0 of each index's window (its neighbours are ``start + dilation * t``)."""
    r, p, sub_len = _axis_sub(length, dilation, device)
    start = torch.minimum((p - kernel_size // 2).clamp(min=0), sub_len - kernel_size)
    return r + dilation * start


def axis_neighbors(length: int, kernel_size: int, dilation: int = 1, device=None) -> torch.Tensor:
    """(length, kernel_size) int64: map index of slot t of each index's window."""
    start = axis_window_start(length, kernel_size, dilation, device)
    return start[:, None] + dilation * torch.arange(kernel_size, device=device)


def axis_rpb_index(length: int, kernel_size: int, dilation: int = 1, device=None) -> torch.Tensor:
    """(length, kernel_size) int64 in ``0 .. 2k-2``: bias-table index of (index, slot t),
    ``(key - query) / d + k - 1``."""
    nbr = axis_neighbors(length, kernel_size, dilation, device)
    i = torch.arange(length, device=device)
    return torch.div(nbr - i[:, None], dilation, rounding_mode="floor") + kernel_size - 1


def axis_inverse_range(length: int, kernel_size: int, dilation: int = 1,
                       device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(first, last)``, each (length,) int64 map indices: the queries whose window holds key j are
    ``first[j], first[j] + d, ..., last[j]`` (inclusive)."""
    r, s, sub_len = _axis_sub(length, dilation, device)
    first = torch.where(s < kernel_size, torch.zeros_like(s), s - kernel_size // 2)
    last = torch.where(s >= sub_len - kernel_size, sub_len - 1, s + kernel_size // 2)
    return r + dilation * first, r + dilation * last


# ------------------------------------------------------------------------------------ 2D (token) tensors

def neighbor_index(height: int, width: int, kernel_size: int, dilation: int = 1, device=None) -> torch.Tensor:
    """(height*width, k*k) int64: flat row-major token index ``row * width + col`` of slot ``ti * k + tj``
    of each token's neighbourhood (tokens row-major too). ``x.flatten(1, 2)[:, neighbor_index(...)]`` gathers
    the neighbours of a (B, H, W, ...) tensor (a k*k copy: fine for references, not for fast paths)."""
    rows = axis_neighbors(height, kernel_size, dilation, device)  # (H, k)
    cols = axis_neighbors(width, kernel_size, dilation, device)  # (W, k)
    idx = rows[:, None, :, None] * width + cols[None, :, None, :]  # (H, W, k, k)
    return idx.reshape(height * width, kernel_size * kernel_size)


def rpb_index(height: int, width: int, kernel_size: int, dilation: int = 1, device=None) -> torch.Tensor:
    """(height*width, k*k) int64: flat index ``a * (2k-1) + b`` into a (2k-1, 2k-1) bias table for each
    (token, slot), in the slot order of :func:`neighbor_index`. ``rpb.flatten(1)[:, rpb_index(...)]`` gives
    the (heads, H*W, k*k) bias of every pair."""
    rows = axis_rpb_index(height, kernel_size, dilation, device)
    cols = axis_rpb_index(width, kernel_size, dilation, device)
    idx = rows[:, None, :, None] * (2 * kernel_size - 1) + cols[None, :, None, :]
    return idx.reshape(height * width, kernel_size * kernel_size)


# ------------------------------------------------------------------------------------------------ tiles

class AxisTiles(NamedTuple):
    """The tiles of one axis, for every residue class (see :func:`axis_tiles`). ``n`` tiles in all.

    * ``query`` (n, tile) int64: map indices of the tile's queries (clamped to the class's last token).
    * ``query_valid`` (n, tile) bool: False for the clamped duplicates past the end of the class.
    * ``halo`` (n, halo) int64: map indices of the keys the tile needs (clamped likewise).
    * ``in_window`` (n, tile, halo) bool: halo key u is in the window of query position i (never true for
      a clamped halo entry; true for exactly k entries per query row, duplicates of valid queries included).
    * ``rpb`` (n, tile, halo) int64: bias-table index of the pair, clamped to ``0 .. 2k-2`` where not in window.
    * ``slot`` (n, tile, halo) int64: the pair's slot t along this axis (key = window start + t), clamped to
      ``0 .. k-1`` where not in window; the 2D slot is ``slot_row * k + slot_col`` (for weights given per slot,
      as ``na2d_av`` takes them: ``w[..., slot]`` scattered onto the halo).
    * ``slot_halo`` (n, tile, k) int64: the inverse of ``slot``: the halo entry (``0 .. halo-1``) that holds slot t
      of query i's window (``halo[., slot_halo[., i, t]]`` is its t-th neighbour), duplicates included.
    """
    query: torch.Tensor
    query_valid: torch.Tensor
    halo: torch.Tensor
    in_window: torch.Tensor
    rpb: torch.Tensor
    slot: torch.Tensor
    slot_halo: torch.Tensor


def tiles_per_class(length: int, kernel_size: int, dilation: int, tile: int) -> Tuple[int, int, int]:
    """``(tile, halo, tiles)`` for an axis: the tile and halo sizes actually used (neither larger than the
    longest class, ``ceil(length / d)``; halo = min(tile + k - 1, longest)) and the number of tiles per class."""
    longest = -(-length // dilation)
    tile = max(1, min(tile, longest))
    return tile, min(tile + kernel_size - 1, longest), -(-longest // tile)


def has_clamped_tiles(length: int, dilation: int, tile: int) -> bool:
    """Whether some tile of :func:`axis_tiles` holds clamped duplicate positions, for ``tile`` as actually used
    (``tiles_per_class(...)[0]``): every class gets the tile count of the longest one, so a class whose length is not
    exactly that many tiles has duplicates. Shape arithmetic only (no tensors), so ``torch.compile`` needs no guard."""
    per_class = -(-sublattice_length(length, dilation, 0) // tile)
    return any(sublattice_length(length, dilation, r) != per_class * tile for r in range(dilation))


def axis_tiles(length: int, kernel_size: int, dilation: int = 1, tile: int = 8, device=None) -> AxisTiles:
    """Tiles of ``tile`` consecutive sub-lattice positions for every residue class of one axis.

    Tile ``c * per_class + j`` is tile j of class c (``per_class`` = ``tiles_per_class(...)[2]``, the same
    for every class; the last tile of a shorter class is clamped). The halo is ``min(tile + k - 1, longest
    class)`` positions starting at the window start of the tile's first query. A 2D tile is the product of
    a row tile and a column tile: queries ``query_r[a][:, None], query_c[b][None, :]`` etc.
    """
    tile, halo, per_class = tiles_per_class(length, kernel_size, dilation, tile)
    r = torch.arange(dilation, device=device).repeat_interleave(per_class)  # (n,)
    sub_len = (length - r + dilation - 1) // dilation  # (n,)
    j = torch.arange(per_class, device=device).repeat(dilation)  # tile index inside its class
    p = j[:, None] * tile + torch.arange(tile, device=device)  # (n, tile) unclamped positions
    query_valid = p < sub_len[:, None]
    p = torch.minimum(p, sub_len[:, None] - 1)
    start = torch.minimum((p - kernel_size // 2).clamp(min=0), (sub_len - kernel_size)[:, None])  # (n, tile)
    s = start[:, :1] + torch.arange(halo, device=device)  # (n, halo) unclamped key positions
    in_window = (s[:, None, :] >= start[:, :, None]) & (s[:, None, :] < start[:, :, None] + kernel_size)
    rpb = (s[:, None, :] - p[:, :, None] + kernel_size - 1).clamp(0, 2 * kernel_size - 2)
    slot = (s[:, None, :] - start[:, :, None]).clamp(0, kernel_size - 1)
    slot_halo = (start - start[:, :1])[:, :, None] + torch.arange(kernel_size, device=device)  # (n, tile, k)
    s = torch.minimum(s, sub_len[:, None] - 1)
    return AxisTiles(r[:, None] + dilation * p, query_valid, r[:, None] + dilation * s, in_window, rpb, slot,
                     slot_halo)


# ------------------------------------------------------------------------------------------ Triton helpers
# The same rule for Triton kernels, on int32 tensors (blocks) or scalars, in sub-lattice units.
# Defined only when triton imports; the torch builders above never need it.

try:
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - a CPU install without triton
    triton = None

if triton is not None:
    @triton.jit
    def nb_sublattice_length(length, residue, DILATION):
        """Tokens of residue class ``residue`` on an axis of ``length``: ceil((length - residue) / DILATION)."""
        return (length - residue + DILATION - 1) // DILATION

    @triton.jit
    def nb_window_start(p, sub_length, K: tl.constexpr):
        """Slot-0 key position of the window of position(s) ``p`` (sub-lattice units): clamp(p - K//2, 0, L - K)."""
        return tl.minimum(tl.maximum(p - K // 2, 0), sub_length - K)

    @triton.jit
    def nb_inverse_first(s, K: tl.constexpr):
        """First query position whose window holds key position(s) ``s`` (sub-lattice units)."""
        return tl.where(s < K, 0, s - K // 2)

    @triton.jit
    def nb_inverse_last(s, sub_length, K: tl.constexpr):
        """Last query position whose window holds key position(s) ``s`` (inclusive, sub-lattice units)."""
        return tl.where(s >= sub_length - K, sub_length - 1, s + K // 2)

    @triton.jit
    def nb_in_window(q_start, s, K: tl.constexpr):
        """True where key position ``s`` lies in the window that starts at ``q_start`` (broadcasts)."""
        return (s >= q_start) & (s < q_start + K)

    @triton.jit
    def nb_rpb_offset(p, s, K: tl.constexpr):
        """Bias-table index along one axis of the pair (query p, key s): s - p + K - 1 (in 0 .. 2K-2 in window)."""
        return s - p + K - 1

    # Tiles of the Triton kernels: per image, per residue class (rr, rc) and per TH x TW class positions. Every
    # class gets the tile count of the longest one (n_th x n_tw); positions past the end of a shorter class are
    # clamped duplicates of its last position (computed like their twin, never stored).

    @triton.jit
    def nb_decode_tile(pid, n_th, n_tw, DIL):
        """Program id -> (image, row residue, column residue, tile row, tile column); tile column fastest."""
        tw = pid % n_tw
        pid = pid // n_tw
        th = pid % n_th
        pid = pid // n_th
        rc = pid % DIL
        pid = pid // DIL
        rr = pid % DIL
        return pid // DIL, rr, rc, th, tw

    @triton.jit
    def nb_tile_positions(th, tw, Lr, Lc, TH: tl.constexpr, TW: tl.constexpr, BLOCK: tl.constexpr):
        """Class (row, col) positions of the tile's BLOCK = TH * TW entries (row-major), clamped into the class
        (Lr x Lc), and which of them are real."""
        m = tl.arange(0, BLOCK)
        pr = th * TH + m // TW
        pc = tw * TW + m % TW
        ok = (pr < Lr) & (pc < Lc)
        return tl.minimum(pr, Lr - 1), tl.minimum(pc, Lc - 1), ok

    @triton.jit
    def nb_query_halo(t, L, T: tl.constexpr, K: tl.constexpr):
        """(first key position, number of key positions) along one axis that query tile t (of T positions) needs:
        ``start(first) .. start(last) + K - 1``, at most T + K - 1."""
        first = tl.minimum(t * T, L - 1)
        last = tl.minimum(t * T + T - 1, L - 1)
        h0 = nb_window_start(first, L, K)
        return h0, nb_window_start(last, L, K) + K - h0

    @triton.jit
    def nb_key_halo(t, L, T: tl.constexpr, K: tl.constexpr):
        """(first query position, number of query positions) along one axis whose windows hold keys of key tile t:
        ``first(first key) .. last(last key)`` (the inverse neighbourhood, contiguous), at most T + 2 (K - 1)."""
        first = tl.minimum(t * T, L - 1)
        last = tl.minimum(t * T + T - 1, L - 1)
        q0 = nb_inverse_first(first, K)
        return q0, nb_inverse_last(last, L, K) - q0 + 1
else:  # pragma: no cover
    nb_sublattice_length = nb_window_start = nb_inverse_first = nb_inverse_last = None
    nb_in_window = nb_rpb_offset = None
    nb_decode_tile = nb_tile_positions = nb_query_halo = nb_key_halo = None
