"""Relative position bias over a window, TF-MaxViT style: one learnable table of shape
(heads, 2*wh-1, 2*ww-1); the bias between query (i, j) and key (x, y) is
``table[:, x - i + wh - 1, y - j + ww - 1]``."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def relative_position_index(window: Tuple[int, int]) -> torch.Tensor:
    """(N, N) indices into the flattened (2*wh-1) x (2*ww-1) table, N = wh*ww, row-major tokens."""
    wh, ww = window
    rows = torch.arange(wh).repeat_interleave(ww)
    cols = torch.arange(ww).repeat(wh)
    d_row = rows[None, :] - rows[:, None] + wh - 1  # key minus query
    d_col = cols[None, :] - cols[:, None] + ww - 1
    return d_row * (2 * ww - 1) + d_col


def resize_rel_pos_table(table: torch.Tensor, window: Tuple[int, int]) -> torch.Tensor:
    """Resize a (heads, h, w) table to the (heads, 2*wh-1, 2*ww-1) vocabulary of ``window``.

    Bilinear, half-pixel centres: what the official TF MaxViT does when a checkpoint's table was
    trained for another window (its 384/512 fine-tunes start from 13x13 tables).
    """
    size = (2 * window[0] - 1, 2 * window[1] - 1)
    if tuple(table.shape[-2:]) == size:
        return table
    resized = F.interpolate(table[None].float(), size=size, mode="bilinear", align_corners=False)
    return resized[0].to(table.dtype)


class RelPosBias2d(nn.Module):
    def __init__(self, window: Tuple[int, int], num_heads: int):
        super().__init__()
        self.window = tuple(window)
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(num_heads, 2 * self.window[0] - 1, 2 * self.window[1] - 1))
        nn.init.normal_(self.relative_position_bias_table, std=0.02)
        # rebuilt on construction, never saved: checkpoints carry only the table
        self.register_buffer("index", relative_position_index(self.window), persistent=False)

    def forward(self) -> torch.Tensor:
        """The dense (heads, N, N) bias."""
        return self.relative_position_bias_table.flatten(1)[:, self.index]

    def extra_repr(self) -> str:
        return f"window={self.window}, num_heads={self.num_heads}"
