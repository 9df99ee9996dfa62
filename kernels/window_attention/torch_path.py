"""Window attention, the fast PyTorch path.

Pads the map to whole windows, gathers each window's tokens with one view/permute copy per
tensor, runs batched matmul + softmax + matmul, and scatters the result back.

On CPU, explicit matmuls beat ``scaled_dot_product_attention`` *with a float mask* (a bias or padded keys)
for these short sequences (49-256 tokens, measured: 7 ms vs 17 ms forward for MaxViT-T stage 1 at batch 8).
Without any mask (whole windows, no bias: DaViT, L2ViT's local windows) SDPA's CPU flash kernel is, in fp32, the
faster one and, for training, saves only a logsumexp per query instead of the (N, N) probabilities (measured on the
2-core EPYC, one thread, fp32, 49-token windows of 32 channels, DaViT-T stages 1-3 at batch 8: forward
18.7 vs 51-58 ms, 9.0 vs 11.2, 4.1 vs 5.2; forward + backward 54.9 vs 70.1, 28.8 vs 33.7, 14.1 vs 14.9).
On CUDA SDPA is used in every case, where its fused kernels avoid materialising the scores.

Large windows (more than ``LARGE_WINDOW_TOKENS`` = 256 tokens, e.g. a window the size of the map: RAVLT's
softmax stages 3-4 are full attention, 4096 tokens at 1024^2) take SDPA on every device. The explicit path
would materialise (B, groups, heads, N, N) scores, several times over in forward and backward (64 MB per
image and head at N = 4096 in fp32); SDPA's CPU flash kernel keeps only O(N) per query row (measured on 2 cores,
fp32, 4-8 heads, window = map: forward 3.0-4.5x and forward+backward 2.1-4.0x faster than the explicit path at
576-4096 tokens).
The mask is laid out so that it broadcasts over the images: group-independent (a bias alone) with the groups
in the batch axis, per group (padded keys) with groups and heads sharing the head axis. SDPA's CPU flash
kernel does not take a mask that requires a gradient: with a learnable bias SDPA runs its math fallback,
which materialises the scores like the explicit path (no model uses a learnable bias on windows this large).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F


LARGE_WINDOW_TOKENS = 256
# Windows with no mask at all take SDPA on CPU (module docstring). FlopCounterMode does not count SDPA's CPU flash
# kernel, so the FLOP tests switch this off to check the op's formula against the explicit matmuls.
UNMASKED_SDPA = True
# ... in fp32/fp64 only: SDPA's CPU flash backward in bf16 measured 6x slower than the explicit matmuls (2-core EPYC, one
# thread, 512 windows x 3 heads x 49 x 32, forward + backward: 229 vs 39 ms)
SDPA_DTYPES = (torch.float32, torch.float64)


def padded_grid(height: int, width: int, window: Tuple[int, int]) -> Tuple[int, int]:
    """Number of groups along each axis: the map is padded up to whole windows."""
    return -(-height // window[0]), -(-width // window[1])


def partition(x: torch.Tensor, window: Tuple[int, int], mode: str) -> torch.Tensor:
    """(B, Hp, Wp, nh, D) with Hp, Wp multiples of the window -> (B, nGh*nGw, nh, wh*ww, D)."""
    B, Hp, Wp, nh, D = x.shape
    wh, ww = window
    nGh, nGw = Hp // wh, Wp // ww
    if mode == "block":  # row = group * wh + i
        x = x.view(B, nGh, wh, nGw, ww, nh, D).permute(0, 1, 3, 5, 2, 4, 6)
    else:  # grid: row = i * nGh + group
        x = x.view(B, wh, nGh, ww, nGw, nh, D).permute(0, 2, 4, 5, 1, 3, 6)
    return x.reshape(B, nGh * nGw, nh, wh * ww, D)


def unpartition(x: torch.Tensor, window: Tuple[int, int], mode: str, Hp: int, Wp: int) -> torch.Tensor:
    """Inverse of :func:`partition`: (B, nG, nh, wh*ww, D) -> (B, Hp, Wp, nh, D)."""
    B, _, nh, _, D = x.shape
    wh, ww = window
    nGh, nGw = Hp // wh, Wp // ww
    x = x.view(B, nGh, nGw, nh, wh, ww, D)
    if mode == "block":
        x = x.permute(0, 1, 4, 2, 5, 3, 6)
    else:
        x = x.permute(0, 4, 1, 5, 2, 3, 6)
    return x.reshape(B, Hp, Wp, nh, D)


def padded_key_mask(H: int, W: int, window: Tuple[int, int], mode: str, device) -> Optional[torch.Tensor]:
    """Additive (nG, 1, 1, N) mask, -inf on keys that lie in the padding; None when nothing is padded."""
    nGh, nGw = padded_grid(H, W, window)
    Hp, Wp = nGh * window[0], nGw * window[1]
    if (Hp, Wp) == (H, W):
        return None
    real = torch.zeros(1, Hp, Wp, 1, 1, dtype=torch.bool, device=device)
    real[:, :H, :W] = True
    real = partition(real, window, mode)  # (1, nG, 1, N, 1)
    mask = torch.zeros(real.shape, device=device).masked_fill_(~real, float("-inf"))
    return mask.view(nGh * nGw, 1, 1, -1)


def large_window_sdpa(qw, kw, vw, mask: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """SDPA over (B, nG, nh, N, D) windows, as 4-D calls (5-D inputs make SDPA fall back to its math path).

    ``mask``: None, a (nh, N, N) bias shared by every group, or a per-group (nG, 1 | nh, 1 | N, N) additive mask.
    """
    B, nG, nh, N, D = qw.shape
    if mask is None or mask.dim() == 3:  # the same for every group: groups go into the batch axis
        out = F.scaled_dot_product_attention(qw.flatten(0, 1), kw.flatten(0, 1), vw.flatten(0, 1),
                                             attn_mask=None if mask is None else mask[None], scale=scale)
    else:  # per group: groups and heads share the head axis, so one copy of the mask serves every image
        mask = mask.expand(nG, nh, *mask.shape[2:]).reshape(1, nG * nh, *mask.shape[2:])
        out = F.scaled_dot_product_attention(qw.flatten(1, 2), kw.flatten(1, 2), vw.flatten(1, 2),
                                             attn_mask=mask, scale=scale)
    return out.view(qw.shape)


def window_attention_torch(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        window: Tuple[int, int],
        mode: str,
        bias: Optional[torch.Tensor],
        scale: float,
) -> torch.Tensor:
    B, H, W, nh, D = q.shape
    nGh, nGw = padded_grid(H, W, window)
    Hp, Wp = nGh * window[0], nGw * window[1]
    pad = (0, 0, 0, 0, 0, Wp - W, 0, Hp - H)
    qw, kw, vw = (partition(F.pad(t, pad) if pad != (0,) * 8 else t, window, mode) for t in (q, k, v))

    mask = padded_key_mask(H, W, window, mode, q.device)
    if bias is not None:
        bias = bias.to(q.dtype)
        mask = bias if mask is None else mask.to(q.dtype) + bias  # (nG, nh, N, N)
    elif mask is not None:
        mask = mask.to(q.dtype)

    if q.is_cuda:
        if mask is not None and mask.dim() == 4:  # per-group mask: one copy per image
            mask = mask.expand(B, *mask.shape).flatten(0, 1)
        out = F.scaled_dot_product_attention(
            qw.flatten(0, 1), kw.flatten(0, 1), vw.flatten(0, 1), attn_mask=mask, scale=scale).view(qw.shape)
    elif (mask is None and UNMASKED_SDPA and q.dtype in SDPA_DTYPES) or qw.shape[-2] > LARGE_WINDOW_TOKENS:
        out = large_window_sdpa(qw, kw, vw, mask, scale)
    else:
        scores = qw @ kw.transpose(-1, -2)  # (B, nG, nh, N, N)
        scores = scores.mul_(scale) if mask is None else torch.add(mask, scores, alpha=scale)
        out = scores.softmax(dim=-1) @ vw
    out = unpartition(out, window, mode, Hp, Wp)
    if (Hp, Wp) != (H, W):
        out = out[:, :H, :W]
    return out.contiguous()  # documented as contiguous; the reshape above may return a strided view
