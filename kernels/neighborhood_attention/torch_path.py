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

from .._neighborhood import axis_tiles, has_clamped_tiles, neighbor_index, rpb_index, tiles_per_class

TILE = 8
CHUNK_BYTES = 32 * 2 ** 20  # fp32 scores of one chunk (the probabilities, masks, dS are of the same size)
DENSE = True  # small maps: one masked SDPA over the whole map when that scores no more pairs than the tiles


class _Chunk(NamedTuple):
    """Index tensors of a chunk of T 2D tiles (M queries and N halo keys each); they depend on shapes only."""
    qtok: torch.Tensor  # (T*M,) flat token index of each tile query (clamped duplicates included)
    qvalid: torch.Tensor  # (T, M, 1) bool: False for clamped duplicates
    ktok: torch.Tensor  # (T*N,) flat token index of each halo key
    bias_index: torch.Tensor  # (T*M*N,) index into the bias table padded with -inf: (2k-1)^2 outside the window
    shape: Tuple[int, int, int]  # (T, M, N)
    duplicates: bool  # whether any tile of the map holds clamped duplicate queries (shape arithmetic only)
    disjoint: bool  # whether every key lies in exactly one halo (each class is one tile and its own halo)
    span: Optional[Tuple[int, int]]  # blocked layout only: the chunk's tokens are this range (queries = keys)


def _chunk(tr, tc, a, b, width: int, kernel_size: int, duplicates: bool, disjoint: bool,
           span: Optional[Tuple[int, int]]) -> _Chunk:
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
        bias_index=bias_index.masked_fill_(~allowed, nb * nb).reshape(T * M * N),
        shape=(T, M, N),
        duplicates=duplicates,
        disjoint=disjoint,
        span=span,
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


Blocked = Optional[Tuple[int, int, int]]  # (d, H / d, W / d) when the class-major layout is used


def _build_plan(B, H, W, heads, kernel_size, dilation, tile, device, budget
                ) -> Tuple[List[_Chunk], List[Tuple[int, int]], Blocked]:
    q = torch.empty((B, H, W, heads, 1), device=device)  # shapes only
    tr, tc, pa, pb, M, N = _layout(q, kernel_size, dilation, tile)
    tile_ranges, image_ranges = _plan(B, heads, pa.numel(), M, N, budget)
    duplicates = has_clamped_tiles(H, dilation, tr.query.shape[1]) or has_clamped_tiles(W, dilation, tc.query.shape[1])
    # halo == tile on both axes means one tile per class whose halo is the class (e.g. 7x7 classes at d = 8 on 56)
    disjoint = not duplicates and tr.halo.shape[1] == tr.query.shape[1] and tc.halo.shape[1] == tc.query.shape[1]
    # Then (no duplicates: every class has the same length, H and W are multiples of d) tile t is class t in
    # class-major order, and its queries and keys are tokens t*M .. (t+1)*M of the class-major layout: views, no gathers.
    one_tile_per_class = tr.query.shape[0] == dilation and tc.query.shape[0] == dilation
    blocked = (dilation, H // dilation, W // dilation) if disjoint and one_tile_per_class else None
    chunks = [_chunk(tr, tc, pa[t0:t1], pb[t0:t1], W, kernel_size, duplicates, disjoint,
                     (t0 * M, t1 * M) if blocked else None) for t0, t1 in tile_ranges]
    return chunks, image_ranges, blocked


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


def _heads_first(x: torch.Tensor, scale: Optional[float] = None, blocked: Blocked = None) -> torch.Tensor:
    """(B, H, W, heads, D) -> contiguous (B, heads, H*W, D), times ``scale`` if given, in one pass; every tile
    gather (``index_select`` on dim 2) then lands directly in the (B, heads, T, n, D) layout batched matmuls take.
    Tokens are in raster order, or class-major (residue row, residue col, row, col) when ``blocked``."""
    B, H, W, nh, D = x.shape
    if blocked is not None and torch.compiler.is_compiling():
        # AOTAutograd's functionalization cannot replay ``mul(out=)`` / ``copy_`` into the class-major view below
        # ("Cannot view a tensor ... as a tensor with shape (B, heads, H*W, D)"); under compile the functional form
        # (which inductor fuses into one pass anyway) is used instead.
        d, Lh, Lw = blocked
        src = x.view(B, Lh, d, Lw, d, nh, D).permute(0, 5, 2, 4, 1, 3, 6)
        return (src if scale is None else src * scale).contiguous().view(B, nh, H * W, D)
    out = torch.empty((B, nh, H * W, D), dtype=x.dtype, device=x.device)
    if blocked is None:
        src, dst = x.permute(0, 3, 1, 2, 4), out.view(B, nh, H, W, D)
    else:  # map row = position * d + residue
        d, Lh, Lw = blocked
        src = x.view(B, Lh, d, Lw, d, nh, D).permute(0, 5, 2, 4, 1, 3, 6)
        dst = out.view(B, nh, d, d, Lh, Lw, D)
    if scale is None:
        dst.copy_(src)
    else:
        torch.mul(src, scale, out=dst)
    return out


def _to_map(x: torch.Tensor, H: int, W: int, blocked: Blocked = None) -> torch.Tensor:
    """Inverse of :func:`_heads_first`: (B, heads, H*W, D) -> contiguous (B, H, W, heads, D)."""
    B, nh, _, D = x.shape
    if blocked is None:
        return x.view(B, nh, H, W, D).permute(0, 2, 3, 1, 4).contiguous()
    d, Lh, Lw = blocked
    return x.view(B, nh, d, d, Lh, Lw, D).permute(0, 4, 2, 5, 3, 1, 6).contiguous().view(B, H, W, nh, D)


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    """Scores, softmax and gradient sums in fp32 (fp64 for fp64 inputs)."""
    return torch.promote_types(x.dtype, torch.float32)


def _gather(x: torch.Tensor, tok: torch.Tensor, T: int, span: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """(b, heads, H*W, D) at tok (T*n,) -> (b, heads, T, n, D); a view of the token range ``span`` if given."""
    b, nh, _, D = x.shape
    if span is not None:
        return x[:, :, span[0]:span[1]].view(b, nh, T, -1, D)
    return x.index_select(2, tok).view(b, nh, T, -1, D)


def _write(dst: torch.Tensor, tok: torch.Tensor, src: torch.Tensor, c: _Chunk, accumulate: bool):
    """dst[:, :, tok] (+)= src (b, heads, T*n, D): a slice copy in the blocked layout, else index_copy_/index_add_."""
    if c.span is not None:
        dst[:, :, c.span[0]:c.span[1]].copy_(src)
    elif accumulate:
        dst.index_add_(2, tok, src)
    else:
        dst.index_copy_(2, tok, src)


def _probs(qt, kt, bias):
    """Softmax probabilities (b, heads, T, M, N) in the bias dtype from pre-scaled queries (the scale applied
    to the queries, as NATTEN 0.14 did), keys in the input dtype, and the bias (-inf outside each query's
    window). Every row has k*k finite scores."""
    s = torch.matmul(qt, kt.transpose(-1, -2)).to(bias.dtype).add_(bias)
    return torch.softmax(s, dim=-1)


def _attend(qt, kt, vt, bias):
    """softmax(qt kt^T + bias) vt for one chunk of tiles, (b, heads, T, M, D). Where the inputs have the bias dtype
    (fp32), one SDPA call over the (b, heads * T) tile batch: its fused kernel never holds the (M, N) probabilities
    and measured 2.3x faster than matmul + softmax + matmul on CPU (DiNAT-T stage 1 tiles, 1 thread). fp16 / bf16
    inputs keep the explicit form, whose scores and softmax are in fp32. Every row has k*k finite scores."""
    if qt.dtype != bias.dtype:
        return torch.matmul(_probs(qt, kt, bias).to(vt.dtype), vt)
    b, nh, T, M, D = qt.shape
    N = kt.shape[3]
    mask = bias.expand(nh, T, M, N).reshape(1, nh * T, M, N)  # a view unless the bias is shared by the heads
    out = torch.nn.functional.scaled_dot_product_attention(
        qt.reshape(b, nh * T, M, D), kt.reshape(b, nh * T, N, D), vt.reshape(b, nh * T, N, D), attn_mask=mask,
        scale=1.0)  # the queries are pre-scaled
    return out.view(b, nh, T, M, D)


def _bias(table: torch.Tensor, c: _Chunk) -> torch.Tensor:
    return table.index_select(1, c.bias_index).view(table.shape[0], *c.shape)  # (heads or 1, T, M, N)


def _forward(qh, kh, vh, H, W, kernel_size, dilation, rpb, tile):
    """qh (pre-scaled), kh, vh: (B, heads, H*W, D) from :func:`_heads_first` in the plan's layout.
    Returns (B, H, W, heads, D)."""
    B, nh, _, D = qh.shape
    q = qh
    chunks, image_ranges, blocked = _get_plan(B, H, W, nh, kernel_size, dilation, tile, q.device)
    table = _bias_table(rpb, nh, kernel_size, _acc_dtype(q), q.device)
    # every query is in exactly one tile unless tiles hold clamped duplicates: then accumulate, masked
    duplicates = chunks[0].duplicates
    out = (torch.zeros if duplicates else torch.empty)((B, nh, H * W, D), dtype=q.dtype, device=q.device)
    for c in chunks:
        T = c.shape[0]
        bias = _bias(table, c)
        for b0, b1 in image_ranges:
            qt, kt, vt = (_gather(qh[b0:b1], c.qtok, T, c.span), _gather(kh[b0:b1], c.ktok, T, c.span),
                          _gather(vh[b0:b1], c.ktok, T, c.span))
            o = _attend(qt, kt, vt, bias)
            if duplicates:
                o = o.mul_(c.qvalid)
            _write(out[b0:b1], c.qtok, o.flatten(2, 3), c, accumulate=duplicates)
    return _to_map(out, H, W, blocked)


def _backward(do, qh, kh, vh, out, kernel_size, dilation, rpb, scale, tile, need_rpb_grad):
    """do, out: (B, H, W, heads, D); qh (pre-scaled), kh, vh: the forward's heads-first copies."""
    B, H, W, nh, D = do.shape
    q = qh
    chunks, image_ranges, blocked = _get_plan(B, H, W, nh, kernel_size, dilation, tile, q.device)
    acc = _acc_dtype(q)
    table = _bias_table(rpb, nh, kernel_size, acc, q.device)
    doh = _heads_first(do, blocked=blocked)
    # Delta = rowsum(dO * O), computed in the map layout (no heads-first copy of O), then (B, heads, HW, 1)
    delta = _heads_first((do.to(acc) * out.to(acc)).sum(-1, keepdim=True), blocked=blocked)
    duplicates, disjoint = chunks[0].duplicates, chunks[0].disjoint
    # every query (key) is written by exactly one tile (halo) unless duplicates (overlapping halos): then accumulate
    dq = (torch.zeros if duplicates else torch.empty)((B, nh, H * W, D), dtype=acc, device=q.device)
    dk = (torch.empty if disjoint else torch.zeros)((B, nh, H * W, D), dtype=acc, device=q.device)
    dv = torch.empty_like(dk) if disjoint else torch.zeros_like(dk)
    # one extra bin collects the pairs outside the windows (their dS is 0 anyway) and is dropped
    drpb = torch.zeros((nh, table.shape[1]), dtype=acc, device=q.device) if need_rpb_grad else None
    for c in chunks:
        T = c.shape[0]
        bias = _bias(table, c)
        for b0, b1 in image_ranges:
            qt, kt, vt = (_gather(qh[b0:b1], c.qtok, T, c.span), _gather(kh[b0:b1], c.ktok, T, c.span),
                          _gather(vh[b0:b1], c.ktok, T, c.span))
            dot = _gather(doh[b0:b1], c.qtok, T, c.span)
            delta_t = _gather(delta[b0:b1], c.qtok, T, c.span)
            if duplicates:  # clamped duplicate queries get dO = 0 and Delta = 0, hence dS = 0: they add nothing
                dot = dot * c.qvalid
                delta_t = delta_t * c.qvalid
            p = _probs(qt, kt, bias)  # recomputed exactly as in the forward
            dp = torch.matmul(dot, vt.transpose(-1, -2)).to(acc)
            _write(dv[b0:b1], c.ktok, torch.matmul(p.transpose(-1, -2).to(do.dtype), dot).flatten(2, 3).to(acc), c,
                   accumulate=not disjoint)
            ds = p.mul_(dp.sub_(delta_t))  # dL/d(score) = P (dP - Delta), in place of P
            # the queries were pre-scaled: dS^T (scale q) is already dK
            _write(dk[b0:b1], c.ktok, torch.matmul(ds.transpose(-1, -2).to(q.dtype), qt).flatten(2, 3).to(acc), c,
                   accumulate=not disjoint)
            _write(dq[b0:b1], c.qtok, torch.matmul(ds.to(kh.dtype), kt).flatten(2, 3).to(acc), c,
                   accumulate=duplicates)
            if drpb is not None:
                # pairs outside the windows have dS = 0 exactly and land in the extra -inf bin
                drpb.index_add_(1, c.bias_index, ds.sum(0).flatten(1))
    dq = _to_map(dq.mul_(scale), H, W, blocked).to(do.dtype)
    dk = _to_map(dk, H, W, blocked).to(do.dtype)
    dv = _to_map(dv, H, W, blocked).to(do.dtype)
    if drpb is not None:
        drpb = drpb[:, :-1].reshape(rpb.shape).to(rpb.dtype)
    return dq, dk, dv, drpb


class _NeighborhoodAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel_size, dilation, scale, tile):
        B, H, W, nh, _ = q.shape
        # The heads-first copies are saved instead of q, k, v (the same memory when q, k, v are views of one
        # fused qkv, which saving them keeps alive), so the backward does not copy them again.
        blocked = _get_plan(B, H, W, nh, kernel_size, dilation, tile, q.device)[2]
        qh, kh, vh = _heads_first(q, scale, blocked), _heads_first(k, None, blocked), _heads_first(v, None, blocked)
        out = _forward(qh, kh, vh, H, W, kernel_size, dilation, rpb, tile)
        ctx.save_for_backward(qh, kh, vh, rpb, out)
        ctx.args = (kernel_size, dilation, scale, tile)
        ctx.dtypes = (q.dtype, k.dtype, v.dtype)
        return out

    @staticmethod
    def backward(ctx, do):
        qh, kh, vh, rpb, out = ctx.saved_tensors
        kernel_size, dilation, scale, tile = ctx.args
        need_rpb_grad = rpb is not None and ctx.needs_input_grad[3]
        dq, dk, dv, drpb = _backward(do, qh, kh, vh, out, kernel_size, dilation, rpb, scale, tile, need_rpb_grad)
        return dq.to(ctx.dtypes[0]), dk.to(ctx.dtypes[1]), dv.to(ctx.dtypes[2]), drpb, None, None, None, None


def dense_is_cheaper(H: int, W: int, kernel_size: int, dilation: int, tile: int = TILE) -> bool:
    """Whether dense attention over the whole map (H*W x H*W scores, masked to the windows) computes no more
    scores than the tiles do (tiles x queries per tile x halo keys). True on small maps whose tiles' halos cover
    most of the map, e.g. DiNAT's 14x14 stage at d = 1 (38,416 vs 50,176 scores per image and head: 2x2 tiles of
    64 queries, clamped, each scoring the whole 14x14 halo) and 7x7 at d = 1 (one tile = the map); never where a
    class-major layout applies (14x14 at d = 2: 9,604 scores in four 7x7 classes)."""
    tr, hr, nr = tiles_per_class(H, kernel_size, dilation, tile)
    tc, hc, nc = tiles_per_class(W, kernel_size, dilation, tile)
    return (H * W) ** 2 <= (dilation * nr) * (dilation * nc) * (tr * tc) * (hr * hc)


def _dense_bias_index(H: int, W: int, kernel_size: int, dilation: int, device) -> torch.Tensor:
    """(H*W * H*W,) index into the bias table of :func:`_bias_table` for every (query, key) pair of the map: the
    pair's relative-position entry inside the query's window, the -inf entry elsewhere."""
    N, nb = H * W, (2 * kernel_size - 1) ** 2
    index = torch.full((N, N), nb, dtype=torch.long, device=device)
    index.scatter_(1, neighbor_index(H, W, kernel_size, dilation, device), rpb_index(H, W, kernel_size, dilation, device))
    return index.flatten()


_cached_dense_bias_index = functools.lru_cache(maxsize=16)(_dense_bias_index)


def neighborhood_attention_dense(q, k, v, kernel_size: int, dilation: int, rpb: Optional[torch.Tensor],
                                 scale: float) -> torch.Tensor:
    """The small-map route of the torch path: one ``scaled_dot_product_attention`` over the whole map with an
    additive (heads, N, N) mask holding the relative-position bias inside each query's window and -inf outside,
    so each query still sees exactly its k*k keys. Computed in fp32 at least (fp16/bf16 inputs are upcast, as the
    tiled path accumulates in fp32); autograd gives the gradients (rpb's through the index), so it is correct under
    autograd too, but :func:`neighborhood_attention_torch` routes here only when nothing needs a gradient."""
    B, H, W, nh, D = q.shape
    N = H * W
    dtype = _acc_dtype(q)
    index = (_dense_bias_index if torch.compiler.is_compiling() else _cached_dense_bias_index)(
        H, W, kernel_size, dilation, q.device)
    mask = _bias_table(rpb, nh, kernel_size, dtype, q.device).index_select(1, index).view(1, -1, N, N)
    qh, kh, vh = (t.reshape(B, N, nh, D).transpose(1, 2).to(dtype).contiguous() for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).to(q.dtype).contiguous().view(B, H, W, nh, D)


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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

    ``tile``: sub-lattice positions per tile side (default ``TILE``). Without an explicit ``tile``, when nothing
    needs a gradient (inference), maps where dense attention scores no more pairs than the tiles
    (:func:`dense_is_cheaper`) take the dense route (:func:`neighborhood_attention_dense`) while ``DENSE`` is on:
    about 5-9x faster there on CPU (8 x 14x14 x 8 heads: ~16-28 ms against ~140-210 ms). With autograd the tiled
    path is kept: SDPA with a mask that needs a gradient (the rpb's) falls back to its math path, whose backward
    measured 2-4x slower than the tiled backward on 14x14."""
    if DENSE and tile is None and not _needs_grad(q, k, v, rpb) and dense_is_cheaper(q.shape[1], q.shape[2],
                                                                                  kernel_size, dilation):
        return neighborhood_attention_dense(q, k, v, kernel_size, dilation, rpb, scale)
    return _NeighborhoodAttention.apply(q, k, v, rpb, kernel_size, dilation, float(scale), tile or TILE)
