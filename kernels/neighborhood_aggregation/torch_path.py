"""Neighbourhood aggregation, the fast PyTorch path.

Tiles, as the Triton kernels and the neighbourhood attention torch path do (``_neighborhood.axis_tiles``): per
dilation sub-lattice, queries are grouped in tiles of about ``TILE x TILE`` positions (balanced: a 14-long class
gets two tiles of 7, not 8 + 6), and each tile reads its halo, the ``(tile + k - 1)^2`` values that hold all of its
queries' windows. The per-pixel weights of the tile are scattered into a dense (queries x halo) matrix, zero
outside each query's window (each query's k*k weights go to the halo columns of its slots, the shared
``slot_halo`` index), so the aggregation is one batched matmul per chunk of tiles: V is gathered per tile halo
(about 1.5-6x its size, never k*k copies), and the dense weights are (tile + k - 1)^2 / k^2 times the weights' size
(1.16x for OverLoCK-T stage 3 at 224, where a 7x7 tile's halo is the 14x14 map; 2.4x for 8x8 tiles at k = 13).

Backward (custom autograd.Function; saves only attn and value): per chunk, dW_dense = dO V_halo^T, whose entries
at each query's window are read back in slot order (a gather by the same index), and dV_halo = W_dense^T dO,
summed over overlapping halos with ``index_add_`` (deterministic on CPU; on CUDA torch may use atomics for it, the
Triton path is the default there). Memory is bounded: tiles (and, for large batches, images) are processed in
chunks whose dense weights and halo values take at most ``CHUNK_BYTES``.

The chunk loop runs a number of iterations fixed by the shapes, and no Python branch reads tensor values, so
``torch.compile`` traces it (unrolled).
"""
from __future__ import annotations

import functools
from typing import List, NamedTuple, Tuple

import torch

from .._neighborhood import axis_tiles, has_clamped_tiles

TILE = 8
CHUNK_BYTES = 32 * 2 ** 20  # fp32 dense weights + halo values of one chunk


class _Chunk(NamedTuple):
    """Index tensors of a chunk of T 2D tiles (M queries and N halo keys each); they depend on shapes only."""
    qtok: torch.Tensor  # (T*M,) flat token index of each tile query (clamped duplicates included)
    qvalid: torch.Tensor  # (T, M, 1) bool: False for clamped duplicates
    ktok: torch.Tensor  # (T*N,) flat token index of each halo key
    column: torch.Tensor  # (T*M, kk) the halo column (0 .. N-1) of each slot of each tile query
    shape: Tuple[int, int, int]  # (T, M, N)


class _Plan(NamedTuple):
    chunks: List[_Chunk]
    images: List[Tuple[int, int]]
    duplicates: bool  # some tile holds clamped duplicate queries (shape arithmetic only)
    disjoint: bool  # every key lies in exactly one halo (each class is one tile and its own halo)


def balanced_tile(length: int, dilation: int, tile: int) -> int:
    """The tile side used along an axis: as many tiles as ``tile`` needs on the longest class, made as equal as
    possible (14 -> 7 + 7 rather than 8 + 6: fewer clamped duplicates and a smaller halo)."""
    longest = -(-length // dilation)
    n = -(-longest // max(1, tile))
    return -(-longest // n)


def _chunk(tr, tc, a, b, width: int, kernel_size: int) -> _Chunk:
    T, kk = a.numel(), kernel_size * kernel_size
    Nc = tc.halo.shape[1]
    M = tr.query.shape[1] * tc.query.shape[1]
    N = tr.halo.shape[1] * Nc
    # slot ti * k + tj of query (row m_r, col m_c) is halo entry (slot_halo_row[ti], slot_halo_col[tj]), row-major
    column = tr.slot_halo[a][:, :, None, :, None] * Nc + tc.slot_halo[b][:, None, :, None, :]  # (T, Mr, Mc, k, k)
    return _Chunk(
        qtok=(tr.query[a][:, :, None] * width + tc.query[b][:, None, :]).reshape(T * M),
        qvalid=(tr.query_valid[a][:, :, None] & tc.query_valid[b][:, None, :]).reshape(T, M, 1),
        ktok=(tr.halo[a][:, :, None] * width + tc.halo[b][:, None, :]).reshape(T * N),
        column=column.reshape(T * M, kk),
        shape=(T, M, N),
    )


def _split(B: int, heads: int, n_tiles: int, per_tile_image: int, budget: int
           ) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """Tile ranges and image ranges so that one chunk holds at most ``budget`` bytes."""
    tiles_per_chunk = max(1, min(n_tiles, budget // (per_tile_image * B)))
    images_per_chunk = B
    if tiles_per_chunk == 1 and per_tile_image * B > budget:
        images_per_chunk = max(1, budget // per_tile_image)
    tiles = [(t, min(t + tiles_per_chunk, n_tiles)) for t in range(0, n_tiles, tiles_per_chunk)]
    images = [(i, min(i + images_per_chunk, B)) for i in range(0, B, images_per_chunk)]
    return tiles, images


def _build_plan(B, heads, H, W, D, kernel_size, dilation, tile, device, budget) -> _Plan:
    tr = axis_tiles(H, kernel_size, dilation, balanced_tile(H, dilation, tile), device)
    tc = axis_tiles(W, kernel_size, dilation, balanced_tile(W, dilation, tile), device)
    nA, nB = tr.query.shape[0], tc.query.shape[0]
    M = tr.query.shape[1] * tc.query.shape[1]
    N = tr.halo.shape[1] * tc.halo.shape[1]
    pairs = torch.arange(nA * nB, device=device)
    pa, pb = pairs // nB, pairs % nB
    # per tile and image: fp32 dense weights (M x N) and halo values (N x D), for every head
    tile_ranges, images = _split(B, heads, nA * nB, heads * N * (M + D) * 4, budget)
    duplicates = has_clamped_tiles(H, dilation, tr.query.shape[1]) or has_clamped_tiles(W, dilation, tc.query.shape[1])
    disjoint = not duplicates and tr.halo.shape[1] == tr.query.shape[1] and tc.halo.shape[1] == tc.query.shape[1]
    chunks = [_chunk(tr, tc, pa[t0:t1], pb[t0:t1], W, kernel_size) for t0, t1 in tile_ranges]
    return _Plan(chunks, images, duplicates, disjoint)


_cached_plan = functools.lru_cache(maxsize=16)(_build_plan)


def _get_plan(B, heads, H, W, D, kernel_size, dilation, tile, device) -> _Plan:
    """Cached in eager mode (the index tensors depend on shapes only), built in the graph under torch.compile."""
    if torch.compiler.is_compiling():
        return _build_plan(B, heads, H, W, D, kernel_size, dilation, tile, device, CHUNK_BYTES)
    return _cached_plan(B, heads, H, W, D, kernel_size, dilation, tile, device, CHUNK_BYTES)


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _dense(ah: torch.Tensor, c: _Chunk) -> torch.Tensor:
    """(b, heads, T, M, N) dense weights of the chunk's tiles, zero outside each query's window, from the weights
    ah (b, heads, H*W, kk): each query's row of kk weights is scattered to its slots' halo columns (a scatter along
    the last dimension; an index_select of all T*M*N entries from zero-padded weights was ~8x slower on CPU)."""
    b, nh = ah.shape[:2]
    T, M, N = c.shape
    rows = ah.index_select(2, c.qtok)  # (b, heads, T*M, kk)
    dense = torch.zeros((b, nh, T * M, N), dtype=ah.dtype, device=ah.device)
    return dense.scatter_(-1, c.column.expand(b, nh, -1, -1), rows).view(b, nh, T, M, N)


def _gather(x: torch.Tensor, tok: torch.Tensor, T: int) -> torch.Tensor:
    """(b, heads, H*W, D) at tok (T*n,) -> (b, heads, T, n, D)."""
    b, nh, _, D = x.shape
    return x.index_select(2, tok).view(b, nh, T, -1, D)


def _forward(attn, value, kernel_size, dilation, tile):
    B, nh, H, W, D = value.shape
    plan = _get_plan(B, nh, H, W, D, kernel_size, dilation, tile, value.device)
    ah = attn.reshape(B, nh, H * W, attn.shape[-1])
    vh = value.reshape(B, nh, H * W, D)
    # every query lies in exactly one tile unless tiles hold clamped duplicates: then accumulate, masked
    out = (torch.zeros if plan.duplicates else torch.empty)((B, nh, H * W, D), dtype=value.dtype, device=value.device)
    for c in plan.chunks:
        T = c.shape[0]
        for b0, b1 in plan.images:
            # (b, heads, T, M, D); in the output's dtype, which autocast may have changed for the matmul
            o = torch.matmul(_dense(ah[b0:b1], c), _gather(vh[b0:b1], c.ktok, T)).to(out.dtype)
            if plan.duplicates:
                out[b0:b1].index_add_(2, c.qtok, o.mul_(c.qvalid).flatten(2, 3))
            else:
                out[b0:b1].index_copy_(2, c.qtok, o.flatten(2, 3))
    return out.view(B, nh, H, W, D)


def _backward(do, attn, value, kernel_size, dilation, tile, need_attn: bool, need_value: bool):
    B, nh, H, W, D = value.shape
    kk = attn.shape[-1]
    plan = _get_plan(B, nh, H, W, D, kernel_size, dilation, tile, value.device)
    ah = attn.reshape(B, nh, H * W, kk)
    vh = value.reshape(B, nh, H * W, D)
    doh = do.reshape(B, nh, H * W, D)
    acc = _acc_dtype(value)
    # dattn: each real query's row is written by exactly one tile (duplicates add zero rows into zeros)
    dattn = ((torch.zeros if plan.duplicates else torch.empty)((B, nh, H * W, kk), dtype=attn.dtype, device=attn.device)
             if need_attn else None)
    # dvalue: summed over overlapping halos unless they are disjoint
    dvalue = ((torch.empty if plan.disjoint else torch.zeros)((B, nh, H * W, D), dtype=acc, device=value.device)
              if need_value else None)
    for c in plan.chunks:
        T, M, N = c.shape
        for b0, b1 in plan.images:
            dot = _gather(doh[b0:b1], c.qtok, T)  # (b, heads, T, M, D)
            if plan.duplicates:  # clamped duplicate queries get dO = 0: they add nothing to either gradient
                dot = dot * c.qvalid
            vt = _gather(vh[b0:b1], c.ktok, T)  # (b, heads, T, N, D)
            if need_attn:
                dense = torch.matmul(dot, vt.transpose(-1, -2)).to(attn.dtype)  # (b, heads, T, M, N)
                rows = dense.view(b1 - b0, nh, T * M, N).gather(-1, c.column.expand(b1 - b0, nh, -1, -1))
                if plan.duplicates:
                    dattn[b0:b1].index_add_(2, c.qtok, rows)
                else:
                    dattn[b0:b1].index_copy_(2, c.qtok, rows)
            if need_value:
                # (b, heads, T*N, D)
                dvt = torch.matmul(_dense(ah[b0:b1], c).transpose(-1, -2), dot).flatten(2, 3).to(acc)
                if plan.disjoint:
                    dvalue[b0:b1].index_copy_(2, c.ktok, dvt)
                else:
                    dvalue[b0:b1].index_add_(2, c.ktok, dvt)
    if need_attn:
        dattn = dattn.view(attn.shape)
    if need_value:
        dvalue = dvalue.view(B, nh, H, W, D).to(value.dtype)
    return dattn, dvalue


class _NeighborhoodAggregation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attn, value, kernel_size, dilation, tile):
        out = _forward(attn, value, kernel_size, dilation, tile)
        # attn and value themselves (the softmax that made attn keeps it alive anyway); the backward re-pads
        ctx.save_for_backward(attn, value)
        ctx.args = (kernel_size, dilation, tile)
        return out

    @staticmethod
    def backward(ctx, do):
        attn, value = ctx.saved_tensors
        kernel_size, dilation, tile = ctx.args
        dattn, dvalue = _backward(do.contiguous(), attn, value, kernel_size, dilation, tile,
                                  ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return dattn, dvalue, None, None, None


def neighborhood_aggregation_torch(attn: torch.Tensor, value: torch.Tensor, kernel_size: int, dilation: int,
                                   tile: int = None) -> torch.Tensor:
    """Tiled torch neighbourhood aggregation; inputs are validated by
    :func:`visionzoo.kernels.neighborhood_aggregation`. ``tile``: class positions per tile side (default ``TILE``)."""
    return _NeighborhoodAggregation.apply(attn, value, int(kernel_size), int(dilation), int(tile or TILE))
