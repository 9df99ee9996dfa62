"""Convolutions and pooling with TensorFlow's ``padding='same'``.

TF pads ``max((ceil(L / s) - 1) * s + (k - 1) * d + 1 - L, 0)`` in total per axis, the odd pixel
at the end (bottom/right). Weights trained in TF (MaxViT) depend on that asymmetry.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def tf_same_pad(length: int, kernel: int, stride: int, dilation: int = 1) -> Tuple[int, int]:
    """(before, after) padding of one axis for TF 'same'."""
    total = max((-(-length // stride) - 1) * stride + (kernel - 1) * dilation + 1 - length, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TF 'same' padding computed from each input's size (any resolution).

    Symmetric padding is passed to the convolution itself; only asymmetric cases (even sizes with
    stride 2) pay for an explicit ``F.pad``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.pop("padding", None)
        super().__init__(*args, padding=0, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def avg_pool2x2_same(x: torch.Tensor) -> torch.Tensor:
    """2x2 stride-2 average pool with TF 'same' padding: padded cells are left out of the mean,
    which is what ``ceil_mode`` with ``count_include_pad=False`` computes."""
    return F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
