"""Routing attention, the fast PyTorch path (and the region geometry shared with the Triton path).

Routing: region sums by one view + reduction of the zero-padded map, a (regions x regions) matmul, topk.

Attention: q, k, v are partitioned once into (heads, B*regions, tokens, D) (one copy each, the size of the
input). Query regions are then processed in chunks: for a chunk of ``c`` query regions the K/V of their
routed regions are gathered by region index (``c * topk * tokens`` rows), and scores, softmax and P @ V run
as batched matmuls. The chunk is sized so that the gathered K/V plus the scores stay under
``CHUNK_BYTES``: the whole gathered copy (B, regions, topk, tokens, C) of the official implementation is
never built, only one chunk of it at a time.

Autograd goes through :class:`_RoutedAttention`, which saves q, k, v and the output (no gathered tensor,
no probabilities) and recomputes each chunk's gather and softmax in the backward. dK and dV are
summed into their regions with ``index_add_`` (the routed regions of a chunk are scattered back by index;
on CPU this is deterministic). Everything is shape-driven Python control flow, so ``torch.compile`` traces
it without graph breaks.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

# Budget for one chunk's gathered K/V and score-sized temporaries (forward and backward).
CHUNK_BYTES = 32 * 2 ** 20
# Small maps whose query regions are routed to a large share of all regions (BiFormer's stage 3: 16 of 49 regions
# of 2x2 tokens at 224) take one dense SDPA call with the non-routed regions masked instead (see ``_dense``).
DENSE_MIN_SHARE = 0.25  # kk / regions
DENSE_MAX_TOKENS = 1024  # padded map positions (the boolean mask is tokens x tokens per image)


class RegionGrid(NamedTuple):
    """Region geometry of an H x W map split into nh x nw regions (see the package docstring)."""

    H: int
    W: int
    nh: int  # regions along H
    nw: int  # regions along W
    rh: int  # rows per region, ceil(H / nh)
    rw: int  # columns per region, ceil(W / nw)

    @property
    def Hp(self) -> int:  # padded map height
        return self.nh * self.rh

    @property
    def Wp(self) -> int:
        return self.nw * self.rw

    @property
    def num_regions(self) -> int:
        return self.nh * self.nw

    @property
    def tokens(self) -> int:  # positions per region, padding included
        return self.rh * self.rw

    @property
    def live_h(self) -> int:  # region rows holding at least one real row
        return -(-self.H // self.rh)

    @property
    def live_w(self) -> int:
        return -(-self.W // self.rw)

    @property
    def padded(self) -> bool:
        return (self.Hp, self.Wp) != (self.H, self.W)

    def routable(self, padding: str) -> int:
        """Number of regions a query region may be routed to: with ``mask``, those holding a real token."""
        return self.live_h * self.live_w if padding == "mask" else self.num_regions

    def live_regions(self, device=None) -> torch.Tensor:
        """(regions,) bool: the region holds at least one real token."""
        rows = torch.arange(self.nh, device=device) < self.live_h
        cols = torch.arange(self.nw, device=device) < self.live_w
        return (rows[:, None] & cols[None, :]).reshape(-1)


def region_grid(H: int, W: int, num_regions: Tuple[int, int]) -> RegionGrid:
    nh, nw = num_regions
    return RegionGrid(H, W, nh, nw, -(-H // nh), -(-W // nw))


def _pad_map(x: torch.Tensor, grid: RegionGrid) -> torch.Tensor:
    if not grid.padded:
        return x
    return F.pad(x, (0,) * (2 * (x.dim() - 3)) + (0, grid.Wp - grid.W, 0, grid.Hp - grid.H))


# ------------------------------------------------------------------------------------------------ routing

def region_means(x: torch.Tensor, grid: RegionGrid, padding: str) -> torch.Tensor:
    """(B, H, W, heads, D) -> (B, regions, heads*D) in fp32 (fp64 for fp64 input), detached.

    ``mask``: mean over the region's real tokens (0 for a region without any); ``zeros``: mean over all
    rh*rw positions, padding counted as zeros.
    """
    B = x.shape[0]
    dtype = torch.promote_types(x.dtype, torch.float32)
    x = _pad_map(x.detach().to(dtype).flatten(3), grid)  # (B, Hp, Wp, C)
    # Two reductions over a middle dim with the channels innermost: ~4x faster on CPU than one over (2, 4).
    x = x.reshape(B, grid.Hp, grid.nw, grid.rw, -1).sum(3)
    x = x.reshape(B, grid.nh, grid.rh, grid.nw, -1).sum(2)  # (B, nh, nw, C) region sums
    if padding == "zeros" or not grid.padded:
        return x.flatten(1, 2) / grid.tokens
    rows = (grid.H - torch.arange(grid.nh, device=x.device) * grid.rh).clamp(0, grid.rh)  # real rows per region row
    cols = (grid.W - torch.arange(grid.nw, device=x.device) * grid.rw).clamp(0, grid.rw)
    counts = (rows[:, None] * cols[None, :]).clamp(min=1).to(dtype)
    return (x / counts[None, :, :, None]).flatten(1, 2)


def region_routing_torch(
        q: torch.Tensor,
        k: torch.Tensor,
        grid: RegionGrid,
        topk: int,
        scale: float,
        padding: str,
) -> torch.Tensor:
    """(B, regions, min(topk, routable)) int64: the key regions of every query region, by decreasing affinity."""
    q_r, k_r = region_means(q, grid, padding), region_means(k, grid, padding)
    logits = (q_r * scale) @ k_r.transpose(-1, -2)  # (B, R, R)
    if padding == "mask" and grid.routable("mask") < grid.num_regions:
        logits = logits.masked_fill(~grid.live_regions(q.device), float("-inf"))
    return torch.topk(logits, min(topk, grid.routable(padding)), dim=-1).indices


# ---------------------------------------------------------------------------------------------- attention

def partition(x: torch.Tensor, grid: RegionGrid) -> torch.Tensor:
    """(B, H, W, heads, D) -> (heads, B*regions, tokens, D), zero-padded; token t of a region is (t // rw, t % rw)."""
    B, _, _, nh, D = x.shape
    x = _pad_map(x, grid).reshape(B, grid.nh, grid.rh, grid.nw, grid.rw, nh, D)
    return x.permute(5, 0, 1, 3, 2, 4, 6).reshape(nh, B * grid.num_regions, grid.tokens, D)


def unpartition(x: torch.Tensor, grid: RegionGrid, batch: int) -> torch.Tensor:
    """Inverse of :func:`partition`, cropped to the real map: -> (B, H, W, heads, D), contiguous."""
    nh, _, _, D = x.shape
    x = x.view(nh, batch, grid.nh, grid.nw, grid.rh, grid.rw, D).permute(1, 2, 4, 3, 5, 0, 6)
    x = x.reshape(batch, grid.Hp, grid.Wp, nh, D)
    return x[:, :grid.H, :grid.W].contiguous()


def key_bias(grid: RegionGrid, padding: str, device) -> Optional[torch.Tensor]:
    """(regions, tokens) additive bias, -inf on padded positions (``mask`` only); None when nothing is masked."""
    if padding != "mask" or not grid.padded:
        return None
    real = partition(torch.ones(1, grid.H, grid.W, 1, 1, device=device), grid)[0, :, :, 0]  # 0 on padding
    return torch.zeros(real.shape, device=device).masked_fill_(real == 0, float("-inf"))


def chunk_size(n_query_regions: int, heads: int, kk: int, tokens: int, dqk: int, dv: int, elem: int) -> int:
    """Query regions per chunk: gathered K/V plus three score-sized fp32 temporaries within CHUNK_BYTES."""
    keys = kk * tokens
    per_region = heads * (keys * (dqk + dv) * elem + 3 * tokens * keys * 4)
    return max(1, min(n_query_regions, CHUNK_BYTES // max(1, per_region)))


def _gather(xp: torch.Tensor, fi: torch.Tensor) -> torch.Tensor:
    """(heads, n, T, D) regions picked by fi (c, kk) -> (heads, c, kk*T, D); index_select is ~4x faster on
    CPU than advanced indexing."""
    nh, _, T, D = xp.shape
    return xp.index_select(1, fi.reshape(-1)).view(nh, fi.shape[0], fi.shape[1] * T, D)


def _chunk_probs(qc, kc, bias_c, scale):
    """Attention probabilities (heads, c, T, kk*T) of a chunk, in fp32 (fp64 for fp64 input).

    The scale is applied to q (T*D products per region instead of T*kk*T), as the official code does; the
    mask bias (fp32, -inf on padded keys) is added in place when the dtypes allow; one fused softmax."""
    s = (qc * scale) @ kc.transpose(-1, -2)
    if bias_c is not None:
        bias_c = bias_c[None, :, None, :]
        s = s.add_(bias_c) if s.dtype == torch.promote_types(s.dtype, bias_c.dtype) else s + bias_c
    return torch.softmax(s, dim=-1, dtype=torch.promote_types(s.dtype, torch.float32))


class _RoutedAttention(torch.autograd.Function):
    """Saves q, k, v and the output only; each chunk's gather and probabilities are recomputed in backward."""

    @staticmethod
    def forward(ctx, q, k, v, index, grid, scale, padding):
        B, _, _, nh, _ = q.shape
        R, T, kk = grid.num_regions, grid.tokens, index.shape[-1]
        qp, kp, vp = partition(q, grid), partition(k, grid), partition(v, grid)
        flat = (index + torch.arange(B, device=q.device)[:, None, None] * R).reshape(B * R, kk)
        bias = key_bias(grid, padding, q.device)
        n = B * R
        step = chunk_size(n, nh, kk, T, qp.shape[-1], vp.shape[-1], q.element_size())
        out = vp.new_empty(vp.shape)  # (heads, n, T, Dv)
        for c0 in range(0, n, step):
            c1 = min(n, c0 + step)
            fi = flat[c0:c1]
            kc = _gather(kp, fi)  # (heads, c, kk*T, Dqk): the only gathered copy, one chunk of it
            vc = _gather(vp, fi)
            bias_c = None if bias is None else bias[index.reshape(n, kk)[c0:c1]].flatten(1)
            p = _chunk_probs(qp[:, c0:c1], kc, bias_c, scale)
            out[:, c0:c1] = p.to(vc.dtype) @ vc
        ctx.save_for_backward(q, k, v, index, out)
        ctx.grid, ctx.scale, ctx.padding = grid, scale, padding
        return unpartition(out, grid, B)

    @staticmethod
    def backward(ctx, do):
        q, k, v, index, out = ctx.saved_tensors
        grid, scale = ctx.grid, ctx.scale
        B, _, _, nh, _ = q.shape
        R, T, kk = grid.num_regions, grid.tokens, index.shape[-1]
        qp, kp, vp, dop = partition(q, grid), partition(k, grid), partition(v, grid), partition(do, grid)
        flat = (index + torch.arange(B, device=q.device)[:, None, None] * R).reshape(B * R, kk)
        bias = key_bias(grid, ctx.padding, q.device)
        n = B * R
        acc = torch.promote_types(q.dtype, torch.float32)  # fp32 sums for fp16/bf16 gradients
        dqp = torch.empty(qp.shape, dtype=acc, device=q.device)
        dkp = torch.zeros(kp.shape, dtype=acc, device=q.device)
        dvp = torch.zeros(vp.shape, dtype=acc, device=q.device)
        delta = (dop.to(acc) * out.to(acc)).sum(-1, keepdim=True)  # (heads, n, T, 1): rowsum(dO * O)
        step = chunk_size(n, nh, kk, T, qp.shape[-1], vp.shape[-1], q.element_size())
        for c0 in range(0, n, step):
            c1 = min(n, c0 + step)
            fi = flat[c0:c1]
            # Contiguous chunk copies: bmm on CPU runs batch by batch (and slowly) on a sliced batch dim.
            qc, doc = qp[:, c0:c1].contiguous(), dop[:, c0:c1].contiguous()
            kc = _gather(kp, fi)
            vc = _gather(vp, fi)
            bias_c = None if bias is None else bias[index.reshape(n, kk)[c0:c1]].flatten(1)
            p = _chunk_probs(qc, kc, bias_c, scale)  # (heads, c, T, kk*T)
            dv_c = p.to(doc.dtype).transpose(-1, -2) @ doc  # (heads, c, kk*T, Dv)
            ds = (doc @ vc.transpose(-1, -2)).to(acc).sub_(delta[:, c0:c1]).mul_(p)  # dL/d(scale * q.k)
            dqp[:, c0:c1] = ds.to(kc.dtype) @ kc
            dk_c = ds.to(qc.dtype).transpose(-1, -2) @ qc  # (heads, c, kk*T, Dqk)
            c = c1 - c0
            dkp.index_add_(1, fi.reshape(-1), dk_c.reshape(nh, c * kk, T, -1).to(acc), alpha=scale)
            dvp.index_add_(1, fi.reshape(-1), dv_c.reshape(nh, c * kk, T, -1).to(acc))
        dqp.mul_(scale)
        grads = (unpartition(t.to(q.dtype), grid, B) for t in (dqp, dkp, dvp))
        return (*grads, None, None, None, None)


def use_dense(grid: RegionGrid, kk: int) -> bool:
    """The dense route: at least ``DENSE_MIN_SHARE`` of the regions routed, at most ``DENSE_MAX_TOKENS`` positions."""
    return kk >= DENSE_MIN_SHARE * grid.num_regions and grid.Hp * grid.Wp <= DENSE_MAX_TOKENS


def _dense(q, k, v, grid: RegionGrid, index, scale: float, padding: str) -> torch.Tensor:
    """Every query attends the whole zero-padded map, with the keys outside its region's routed regions (and, with
    ``mask``, the padded keys) masked out: one ``scaled_dot_product_attention`` call (autograd, compile and every
    dtype come with it). The same result as the chunked gather; it computes regions/kk times the score FLOPs, which
    pays on CPU where the routed share is large and the map small: measured on 1 thread at BiFormer-S stage 3
    (14x14 and 28x28 maps, 16 of 49 regions), 1.0-1.7x faster in forward and 1.5-2.6x in forward + backward than
    the gathered chunks, whose many tiny matmuls and 16x gathered K/V dominate there."""
    B, _, _, nh, _ = q.shape
    R, T = grid.num_regions, grid.tokens

    def regions_major(x):  # (B, H, W, heads, D) -> (B, heads, R*T, D), zero-padded, region-major
        x = _pad_map(x, grid).reshape(B, grid.nh, grid.rh, grid.nw, grid.rw, nh, x.shape[-1])
        return x.permute(0, 5, 1, 3, 2, 4, 6).reshape(B, nh, R * T, x.shape[-1])

    routed = torch.zeros(B, R, R, dtype=torch.bool, device=q.device).scatter_(2, index, True)
    allowed = routed[:, :, None, :, None].expand(B, R, T, R, T)
    bias = key_bias(grid, padding, q.device)  # (R, T), -inf on padded keys (mask only)
    if bias is not None:
        allowed = allowed & (bias == 0)[None, None, None]
    mask = allowed.reshape(B, 1, R * T, R * T)
    out = F.scaled_dot_product_attention(regions_major(q), regions_major(k), regions_major(v), attn_mask=mask,
                                         scale=scale)
    out = out.view(B, nh, grid.nh, grid.nw, grid.rh, grid.rw, -1).permute(0, 2, 4, 3, 5, 1, 6)
    return out.reshape(B, grid.Hp, grid.Wp, nh, -1)[:, :grid.H, :grid.W].contiguous()


def routing_attention_torch(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        grid: RegionGrid,
        index: torch.Tensor,
        scale: float,
        padding: str,
) -> torch.Tensor:
    """Inputs validated by :func:`visionzoo.kernels.routing_attention`; index (B, regions, kk) int64."""
    if use_dense(grid, index.shape[-1]):
        return _dense(q, k, v, grid, index, float(scale), padding)
    return _RoutedAttention.apply(q, k, v, index, grid, float(scale), padding)
