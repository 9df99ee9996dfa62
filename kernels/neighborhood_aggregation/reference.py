"""Neighbourhood aggregation, the specification.

``out[b, h, i, j] = sum over (ti, tj) of attn[b, h, i, j, ti * k + tj] * value[b, h, rows[i][ti], cols[j][tj]]``

where ``rows[i]`` / ``cols[j]`` are the k neighbours of row i / column j in slot order, as the neighbourhood
attention reference writes them out from the definition (``axis_windows``: plain Python integers, independent
of ``kernels/_neighborhood.py``, which the fast paths use). Written as a dense aggregation matrix: one-hot
matrices say which map row (column) each row slot (column slot) of each pixel is, the weights are spread onto
the whole map with them, and the output is that (H*W x H*W) matrix times the values. Autograd through these
plain einsums gives both gradients.

Memory is O((H*W)^2) per image and head: use it on small maps (tests, the oracle).
"""
from __future__ import annotations

import torch

from ..neighborhood_attention.reference import axis_windows


def _one_hot_windows(length: int, kernel_size: int, dilation: int, dtype, device) -> torch.Tensor:
    """(length, k, length): entry [i, t, i2] is 1 where i2 is the map index of slot t of i's window."""
    windows = axis_windows(length, kernel_size, dilation)
    one_hot = torch.zeros(length, kernel_size, length, dtype=dtype)
    for i, window in enumerate(windows):
        for t, i2 in enumerate(window):
            one_hot[i, t, i2] = 1
    return one_hot.to(device)


def neighborhood_aggregation_reference(attn: torch.Tensor, value: torch.Tensor, kernel_size: int,
                                       dilation: int) -> torch.Tensor:
    """attn: (B, heads, H, W, k*k), any float dtype; value: (B, heads, H, W, D). Returns (B, heads, H, W, D) in
    value's dtype."""
    B, heads, H, W, D = value.shape
    k = kernel_size
    compute_dtype = torch.promote_types(value.dtype, torch.float32)  # fp16/bf16 in, fp32 sums
    rows = _one_hot_windows(H, k, dilation, compute_dtype, value.device)  # rows[i, ti, i2]
    cols = _one_hot_windows(W, k, dilation, compute_dtype, value.device)  # cols[j, tj, j2]
    # the weights are used in value's dtype (NATTEN 0.17 casts them so), then everything is summed in fp32 or wider
    a = attn.to(value.dtype).to(compute_dtype).reshape(B, heads, H, W, k, k)  # [..., ti, tj] = slot ti * k + tj
    # dense[b, h, i, j, i2, j2]: the weight pixel (i, j) gives to pixel (i2, j2), zero outside its window
    dense = torch.einsum("bhijst,ism,jtn->bhijmn", a, rows, cols)
    out = torch.einsum("bhijmn,bhmnd->bhijd", dense, value.to(compute_dtype))
    return out.to(value.dtype)
