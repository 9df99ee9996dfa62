from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from visionzoo.kernels import window_attention

from .rel_pos import RelPosBias2d
from .linear import Linear


class PartitionAttention(nn.Module):
    """Multi-head self-attention inside the windows (``block``) or grid groups (``grid``) of a
    channels-last (B, H, W, C) map: fused qkv projection -> shared ``window_attention`` kernel -> proj.

    The qkv projection is laid out [q | k | v], each heads x head_dim (TF MaxViT's order).
    Any H, W: the kernel pads to whole windows and masks the padded keys.
    """

    def __init__(self, dim: int, num_heads: int, window: Tuple[int, int], partition: str,
                 qkv_bias: bool = True, rel_pos: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window = tuple(window)
        self.partition = partition
        self.scale = self.head_dim ** -0.5
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.rel_pos = RelPosBias2d(self.window, num_heads) if rel_pos else None
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).view(B, H, W, 3, self.num_heads, self.head_dim).unbind(3)
        bias = self.rel_pos() if self.rel_pos is not None else None
        x = window_attention(q, k, v, self.window, self.partition, bias=bias, scale=self.scale)
        return self.proj(x.reshape(B, H, W, C))
