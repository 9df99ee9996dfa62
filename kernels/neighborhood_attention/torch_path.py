"""Neighbourhood attention, the fast PyTorch path.

Tiles, as the Triton kernels do (``_neighborhood.axis_tiles``): per dilation sub-lattice, queries are
grouped in tiles of ``TILE x TILE`` positions, and each tile attends to its halo, the
``(TILE + k - 1)^2`` keys that hold all of its queries' windows, with a mask (key in the query's
window) and the relative-position bias added to the scores. So every product is a batched matmul
(tile queries x halo keys, 25 % of it useful at k = 7, TILE = 8), K and V are gathered per tile halo
(about 3x their size at k = 7, never k*k copies), and no score of a key outside the halo is computed.
On a sub-lattice no longer than TILE (e.g. DiNAT's dilation-8 layers on 56x56: 7x7 sub-lattices) a
tile is the whole sub-lattice and the halo equals it: dense attention inside the sub-lattice.

Memory is bounded: tiles (and, for large batches, images) are processed in chunks whose scores take
at most ``CHUNK_BYTES``; a custom autograd.Function saves only q, k, v, rpb, the output and the
log-sum-exp, and the backward recomputes the scores chunk by chunk (FlashAttention-style), so training
never holds the (tiles x 64 x 196) probabilities of the whole map. Gradients of keys, values and the
bias table are summed over overlapping halos with ``index_add_`` (deterministic on CPU; on CUDA torch
may use atomics, so this fallback path is not bitwise reproducible there: the Triton path is).

The chunk loop runs a number of iterations fixed by the shapes, and no Python branch reads tensor
values, so ``torch.compile`` traces it (unrolled).
"""
from __future__ import annotations

import functools
from typing import List, NamedTuple, Optional, Tuple

import torch

from .._neighborhood import axis_tiles

TILE = 8
CHUNK_BYTES = 32 * 2 ** 20  # fp32 scores of one chunk (the probabilities, masks, dS are of the same size)


class _Chunk(NamedTuple):
    """Index tensors of a chunk of T 2D tiles (M queries and N halo keys each); they depend on shapes only."""
    qtok: torch.Tensor  # (T*M,) flat token index of each tile query (clamped duplicates included)
    qvalid: torch.Tensor  # (T, M, 1) bool: False for clamped duplicates
    ktok: torch.Tensor  # (T*N,) flat token index of each halo key
    bias_index: torch.Tensor  # (T, M, N) index into the bias table padded with -inf: (2k-1)^2 outside the window
    shape: Tuple[int, int, int]  # (T, M, N)


def _chunk(tr, tc, a, b, width: int, kernel_size: int) -> _Chunk:
    T = a.numel()
    M = tr.query.shape[1] * tc.query.shape[1]
    N = tr.halo.shape[1] * tc.halo.shape[1]
    nb = 2 * kernel_size - 1
    allowed = (tr.in_window[a][:, :, None, :, None] & tc.in_window[b][:, None, :, None, :]).reshape(T, M, N)
    bias_index = (tr.rpb[a][:, :, None, :, None] * nb + tc.rpb[b][:, None, :, None, :]).reshape(T, M, N)
    return _Chunk(
        qtok=(tr.query[a][:, :, None] * width + tc.query[b][:, None, :]).reshape(T * M),
        qvalid=(tr.query_valid[a][:, :, None] & tc.query_valid[b][:, None, :]).reshape(T, M, 1),
        ktok=(tr.halo[a][:, :, None] * width + tc.halo[b][:, None, :]).reshape(T * N),
        bias_index=bias_index.masked_fill_(~allowed, nb * nb),
        shape=(T, M, N),
    )


def _plan(B: int, heads: int, n_tiles: int, M: int, N: int, budget: Optional[int] = None
          ) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """Tile ranges and image ranges so that one chunk's fp32 scores stay within ``budget`` (CHUNK_BYTES)."""
    budget = CHUNK_BYTES if budget is None else budget
    per_tile_image = heads * M * N * 4
    tiles_per_chunk = max(1, min(n_tiles, budget // (per_tile_image * B)))
    images_per_chunk = B
    if tiles_per_chunk == 1 and per_tile_image * B > budget:
        images_per_chunk = max(1, budget // per_tile_image)
    tiles = [(t, min(t + tiles_per_chunk, n_tiles)) for t in range(0, n_tiles, tiles_per_chunk)]
    images = [(i, min(i + images_per_chunk, B)) for i in range(0, B, images_per_chunk)]
    return tiles, images


def _layout(q: torch.Tensor, kernel_size: int, dilation: int, tile: int):
    B, H, W, nh, D = q.shape
    tr = axis_tiles(H, kernel_size, dilation, tile, q.device)
    tc = axis_tiles(W, kernel_size, dilation, tile, q.device)
    nA, nB = tr.query.shape[0], tc.query.shape[0]
    M = tr.query.shape[1] * tc.query.shape[1]
    N = tr.halo.shape[1] * tc.halo.shape[1]
    pairs = torch.arange(nA * nB, device=q.device)
    return tr, tc, pairs // nB, pairs % nB, M, N


def _build_plan(B, H, W, heads, kernel_size, dilation, tile, device, budget
                ) -> Tuple[List[_Chunk], List[Tuple[int, int]]]:
    q = torch.empty((B, H, W, heads, 1), device=device)  # shapes only
    tr, tc, pa, pb, M, N = _layout(q, kernel_size, dilation, tile)
    tile_ranges, image_ranges = _plan(B, heads, pa.numel(), M, N, budget)
    return [_chunk(tr, tc, pa[t0:t1], pb[t0:t1], W, kernel_size) for t0, t1 in tile_ranges], image_ranges


_cached_plan = functools.lru_cache(maxsize=16)(_build_plan)


def _get_plan(B, H, W, heads, kernel_size, dilation, tile, device):
    """The chunks for these shapes: cached in eager mode (the index tensors only depend on shapes; about
    2.5 MB per 56x56 map at k = 7), built in the graph when torch.compile traces (constant-folded there)."""
    if torch.compiler.is_compiling():
        return _build_plan(B, H, W, heads, kernel_size, dilation, tile, device, CHUNK_BYTES)
    return _cached_plan(B, H, W, heads, kernel_size, dilation, tile, device, CHUNK_BYTES)


def _bias_table(rpb: Optional[torch.Tensor], heads: int, kernel_size: int, dtype, device) -> torch.Tensor:
    """(heads or 1, (2k-1)^2 + 1): the flattened bias table plus a -inf entry that masks pairs outside the window."""
    nb = (2 * kernel_size - 1) ** 2
    table = torch.zeros((1 if rpb is None else heads, nb + 1), dtype=dtype, device=device)
    table[:, nb] = float("-inf")
    if rpb is not None:
        table[:, :nb] = rpb.flatten(1)
    return table


def _heads_first(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, heads, D) -> contiguous (B, heads, H*W, D): one copy, after which every tile gather
    (``x[:, :, tok]``) lands directly in the (B, heads, T, n, D) layout that batched matmuls take."""
    B, H, W, nh, D = x.shape
    return x.permute(0, 3, 1, 2, 4).reshape(B, nh, H * W, D)


def _to_map(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, heads, H*W, D) -> contiguous (B, H, W, heads, D)."""
    B, nh, _, D = x.shape
    return x.view(B, nh, H, W, D).permute(0, 2, 3, 1, 4).contiguous()


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    """Scores, softmax and gradient sums in fp32 (fp64 for fp64 inputs)."""
    return torch.promote_types(x.dtype, torch.float32)


def _gather(x: torch.Tensor, tok: torch.Tensor, T: int) -> torch.Tensor:
    """(b, heads, H*W, D) at tok (T*n,) -> (b, heads, T, n, D)."""
    b, nh, _, D = x.shape
    return x.index_select(2, tok).view(b, nh, T, -1, D)


def _probs(qt, kt, bias, scale):
    """Softmax probabilities (b, heads, T, M, N) in the bias dtype: (scale * q) k^T in the input dtype (the
    scale applied to the M x D queries, not the M x N scores, as NATTEN 0.14 did), then the bias (-inf
    outside each query's window) and softmax. Every row has k*k finite scores."""
    s = torch.matmul(qt * scale, kt.transpose(-1, -2)).to(bias.dtype).add_(bias)
    return torch.softmax(s, dim=-1)


def _forward(q, k, v, kernel_size, dilation, rpb, scale, tile):
    B, H, W, nh, D = q.shape
    chunks, image_ranges = _get_plan(B, H, W, nh, kernel_size, dilation, tile, q.device)
    table = _bias_table(rpb, nh, kernel_size, _acc_dtype(q), q.device)
    qh, kh, vh = _heads_first(q), _heads_first(k), _heads_first(v)
    out = torch.zeros((B, nh, H * W, D), dtype=q.dtype, device=q.device)
    for c in chunks:
        T = c.shape[0]
        bias = table[:, c.bias_index]  # (heads or 1, T, M, N)
        for b0, b1 in image_ranges:
            qt, kt, vt = _gather(qh[b0:b1], c.qtok, T), _gather(kh[b0:b1], c.ktok, T), _gather(vh[b0:b1], c.ktok, T)
            p = _probs(qt, kt, bias, scale)
            o = torch.matmul(p.to(v.dtype), vt).mul_(c.qvalid)  # clamped duplicate queries add nothing
            out[b0:b1].index_add_(2, c.qtok, o.flatten(2, 3))
    return _to_map(out, H, W)


def _backward(do, q, k, v, out, kernel_size, dilation, rpb, scale, tile, need_rpb_grad):
    B, H, W, nh, D = q.shape
    chunks, image_ranges = _get_plan(B, H, W, nh, kernel_size, dilation, tile, q.device)
    acc = _acc_dtype(q)
    table = _bias_table(rpb, nh, kernel_size, acc, q.device)
    qh, kh, vh, doh = _heads_first(q), _heads_first(k), _heads_first(v), _heads_first(do)
    delta = (doh.to(acc) * _heads_first(out).to(acc)).sum(-1, keepdim=True)  # (B, heads, HW, 1) = rowsum(dO * O)
    dq = torch.zeros((B, nh, H * W, D), dtype=acc, device=q.device)
    dk = torch.zeros_like(dq)
    dv = torch.zeros_like(dq)
    # one extra bin collects the pairs outside the windows (their dS is 0 anyway) and is dropped
    drpb = torch.zeros((nh, table.shape[1]), dtype=acc, device=q.device) if need_rpb_grad else None
    for c in chunks:
        T = c.shape[0]
        bias = table[:, c.bias_index]
        for b0, b1 in image_ranges:
            qt, kt, vt = _gather(qh[b0:b1], c.qtok, T), _gather(kh[b0:b1], c.ktok, T), _gather(vh[b0:b1], c.ktok, T)
            # Clamped duplicate queries get dO = 0 and Delta = 0, hence dS = 0: they add nothing to any sum.
            dot = _gather(doh[b0:b1], c.qtok, T).mul_(c.qvalid)
            p = _probs(qt, kt, bias, scale)  # recomputed exactly as in the forward
            dp = torch.matmul(dot, vt.transpose(-1, -2)).to(acc)
            dv[b0:b1].index_add_(2, c.ktok, torch.matmul(p.transpose(-1, -2).to(do.dtype), dot).flatten(2, 3).to(acc))
            delta_t = _gather(delta[b0:b1], c.qtok, T).mul_(c.qvalid)
            ds = p.mul_(dp.sub_(delta_t))  # dL/d(score) = P (dP - Delta), in place of P
            dk[b0:b1].index_add_(2, c.ktok, torch.matmul(ds.transpose(-1, -2).to(q.dtype), qt).flatten(2, 3).to(acc))
            dq[b0:b1].index_add_(2, c.qtok, torch.matmul(ds.to(k.dtype), kt).flatten(2, 3).to(acc))
            if drpb is not None:
                # pairs outside the windows have dS = 0 exactly and land in the extra -inf bin
                drpb.index_add_(1, c.bias_index.flatten(), ds.sum(0).flatten(1))
    dq = _to_map(dq.mul_(scale), H, W).to(q.dtype)
    dk = _to_map(dk.mul_(scale), H, W).to(k.dtype)
    dv = _to_map(dv, H, W).to(v.dtype)
    if drpb is not None:
        drpb = drpb[:, :-1].reshape(rpb.shape).to(rpb.dtype)
    return dq, dk, dv, drpb


class _NeighborhoodAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel_size, dilation, scale, tile):
        out = _forward(q, k, v, kernel_size, dilation, rpb, scale, tile)
        ctx.save_for_backward(q, k, v, rpb, out)
        ctx.args = (kernel_size, dilation, scale, tile)
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, rpb, out = ctx.saved_tensors
        kernel_size, dilation, scale, tile = ctx.args
        need_rpb_grad = rpb is not None and ctx.needs_input_grad[3]
        dq, dk, dv, drpb = _backward(do, q, k, v, out, kernel_size, dilation, rpb, scale, tile, need_rpb_grad)
        return dq, dk, dv, drpb, None, None, None, None


def neighborhood_attention_torch(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kernel_size: int,
        dilation: int,
        rpb: Optional[torch.Tensor],
        scale: float,
        tile: Optional[int] = None,
) -> torch.Tensor:
    """Tiled torch neighbourhood attention; inputs are validated by :func:`visionzoo.kernels.neighborhood_attention`.

    ``tile``: sub-lattice positions per tile side (default ``TILE``)."""
    return _NeighborhoodAttention.apply(q, k, v, rpb, kernel_size, dilation, float(scale), tile or TILE)
