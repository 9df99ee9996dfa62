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

from typing import List, Optional, Tuple

import torch

from .._neighborhood import axis_tiles

TILE = 8
CHUNK_BYTES = 32 * 2 ** 20  # fp32 scores of one chunk (the probabilities, masks, dS are of the same size)


class _Chunk:
    """Index tensors of a chunk of T 2D tiles (M queries and N halo keys each)."""

    def __init__(self, tr, tc, a, b, width: int, kernel_size: int, rpb: Optional[torch.Tensor], dtype):
        T = a.numel()
        M = tr.query.shape[1] * tc.query.shape[1]
        N = tr.halo.shape[1] * tc.halo.shape[1]
        self.qtok = (tr.query[a][:, :, None] * width + tc.query[b][:, None, :]).reshape(T, M)
        self.qvalid = (tr.query_valid[a][:, :, None] & tc.query_valid[b][:, None, :]).reshape(T, 1, M, 1)
        self.ktok = (tr.halo[a][:, :, None] * width + tc.halo[b][:, None, :]).reshape(T, N)
        allowed = (tr.in_window[a][:, :, None, :, None] & tc.in_window[b][:, None, :, None, :]).reshape(T, 1, M, N)
        self.bias_index = None
        if rpb is not None:
            nb = 2 * kernel_size - 1
            self.bias_index = (tr.rpb[a][:, :, None, :, None] * nb + tc.rpb[b][:, None, :, None, :]).reshape(T, M, N)
            bias = rpb.flatten(1)[:, self.bias_index].transpose(0, 1).to(dtype)  # (T, heads, M, N)
        else:
            bias = torch.zeros((), dtype=dtype, device=allowed.device)
        self.bias = bias.masked_fill(~allowed, float("-inf"))  # (T, heads or 1, M, N)


def _plan(B: int, heads: int, n_tiles: int, M: int, N: int) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """Tile ranges and image ranges so that one chunk's fp32 scores stay within CHUNK_BYTES."""
    per_tile_image = heads * M * N * 4
    tiles_per_chunk = max(1, min(n_tiles, CHUNK_BYTES // (per_tile_image * B) if per_tile_image * B else n_tiles))
    images_per_chunk = B
    if tiles_per_chunk == 1 and per_tile_image * B > CHUNK_BYTES:
        images_per_chunk = max(1, CHUNK_BYTES // per_tile_image)
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


def _tiles_of(x: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
    """(b, H*W, heads, D) gathered at tok (T, n) -> (b, T, heads, n, D)."""
    return x[:, tok].permute(0, 1, 3, 2, 4)


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    """Scores, softmax and gradient sums in fp32 (fp64 for fp64 inputs)."""
    return torch.promote_types(x.dtype, torch.float32)


def _scores(qt, kt, bias, scale):
    """Scores (b, T, heads, M, N) in the bias dtype: matmul in the input dtype, then scale and the masked bias."""
    return torch.matmul(qt, kt.transpose(-1, -2)).to(bias.dtype).mul_(scale).add_(bias)


def _forward(q, k, v, kernel_size, dilation, rpb, scale, tile):
    B, H, W, nh, D = q.shape
    tr, tc, pa, pb, M, N = _layout(q, kernel_size, dilation, tile)
    qf, kf, vf = (t.reshape(B, H * W, nh, D) for t in (q, k, v))
    out = torch.zeros((B, H * W, nh, D), dtype=q.dtype, device=q.device)
    lse = torch.zeros((B, H * W, nh), dtype=_acc_dtype(q), device=q.device)
    tile_ranges, image_ranges = _plan(B, nh, pa.numel(), M, N)
    for t0, t1 in tile_ranges:
        c = _Chunk(tr, tc, pa[t0:t1], pb[t0:t1], W, kernel_size, rpb, _acc_dtype(q))
        T = t1 - t0
        for b0, b1 in image_ranges:
            qt, kt, vt = _tiles_of(qf[b0:b1], c.qtok), _tiles_of(kf[b0:b1], c.ktok), _tiles_of(vf[b0:b1], c.ktok)
            s = _scores(qt, kt, c.bias, scale)
            m = s.logsumexp(-1, keepdim=True)  # (b, T, heads, M, 1); every row has k*k finite scores
            p = torch.exp(s - m).mul_(c.qvalid)  # clamped duplicate queries contribute nothing
            o = torch.matmul(p.to(v.dtype), vt)  # (b, T, heads, M, D)
            nb_ = b1 - b0
            out[b0:b1].index_add_(1, c.qtok.reshape(-1), o.permute(0, 1, 3, 2, 4).reshape(nb_, T * M, nh, D))
            lse[b0:b1].index_add_(1, c.qtok.reshape(-1),
                                  (m.squeeze(-1) * c.qvalid.squeeze(-1)).transpose(2, 3).reshape(nb_, T * M, nh))
    return out.view(B, H, W, nh, D), lse


def _backward(do, q, k, v, out, lse, kernel_size, dilation, rpb, scale, tile, need_rpb_grad):
    B, H, W, nh, D = q.shape
    tr, tc, pa, pb, M, N = _layout(q, kernel_size, dilation, tile)
    qf, kf, vf = (t.reshape(B, H * W, nh, D) for t in (q, k, v))
    dof = do.reshape(B, H * W, nh, D)
    acc = _acc_dtype(q)
    delta = (dof.to(acc) * out.reshape(B, H * W, nh, D).to(acc)).sum(-1)  # (B, HW, heads) = rowsum(dO * O)
    dq = torch.zeros((B, H * W, nh, D), dtype=acc, device=q.device)
    dk = torch.zeros_like(dq)
    dv = torch.zeros_like(dq)
    drpb = torch.zeros((nh, (2 * kernel_size - 1) ** 2), dtype=acc, device=q.device) if need_rpb_grad else None
    tile_ranges, image_ranges = _plan(B, nh, pa.numel(), M, N)
    for t0, t1 in tile_ranges:
        c = _Chunk(tr, tc, pa[t0:t1], pb[t0:t1], W, kernel_size, rpb, acc)
        T = t1 - t0
        qidx, kidx = c.qtok.reshape(-1), c.ktok.reshape(-1)
        for b0, b1 in image_ranges:
            nb_ = b1 - b0
            qt, kt, vt = _tiles_of(qf[b0:b1], c.qtok), _tiles_of(kf[b0:b1], c.ktok), _tiles_of(vf[b0:b1], c.ktok)
            dot = _tiles_of(dof[b0:b1], c.qtok)
            s = _scores(qt, kt, c.bias, scale)
            lse_t = lse[b0:b1][:, c.qtok].transpose(2, 3).unsqueeze(-1)  # (b, T, heads, M, 1)
            p = torch.exp(s - lse_t).mul_(c.qvalid)
            dp = torch.matmul(dot, vt.transpose(-1, -2)).to(acc)
            ds = p * (dp - delta[b0:b1][:, c.qtok].transpose(2, 3).unsqueeze(-1))  # dL/d(score)
            dv_t = torch.matmul(p.transpose(-1, -2).to(do.dtype), dot)  # (b, T, heads, N, D)
            dk_t = torch.matmul(ds.transpose(-1, -2).to(q.dtype), qt)
            dq_t = torch.matmul(ds.to(k.dtype), kt)  # (b, T, heads, M, D)
            dv[b0:b1].index_add_(1, kidx, dv_t.permute(0, 1, 3, 2, 4).reshape(nb_, T * N, nh, D).to(acc))
            dk[b0:b1].index_add_(1, kidx, dk_t.permute(0, 1, 3, 2, 4).reshape(nb_, T * N, nh, D).to(acc))
            dq[b0:b1].index_add_(1, qidx, dq_t.permute(0, 1, 3, 2, 4).reshape(nb_, T * M, nh, D).to(acc))
            if drpb is not None:
                # masked pairs have dS = 0 exactly, so their (clamped) bias index adds nothing
                drpb.index_add_(1, c.bias_index.reshape(-1), ds.sum(0).transpose(0, 1).reshape(nh, -1))
    shape = (B, H, W, nh, D)
    dq = dq.mul_(scale).view(shape).to(q.dtype)
    dk = dk.mul_(scale).view(shape).to(k.dtype)
    dv = dv.view(shape).to(v.dtype)
    if drpb is not None:
        drpb = drpb.view(rpb.shape).to(rpb.dtype)
    return dq, dk, dv, drpb


class _NeighborhoodAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel_size, dilation, scale, tile):
        out, lse = _forward(q, k, v, kernel_size, dilation, rpb, scale, tile)
        ctx.save_for_backward(q, k, v, rpb, out, lse)
        ctx.args = (kernel_size, dilation, scale, tile)
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, rpb, out, lse = ctx.saved_tensors
        kernel_size, dilation, scale, tile = ctx.args
        need_rpb_grad = rpb is not None and ctx.needs_input_grad[3]
        dq, dk, dv, drpb = _backward(do, q, k, v, out, lse, kernel_size, dilation, rpb, scale, tile, need_rpb_grad)
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
