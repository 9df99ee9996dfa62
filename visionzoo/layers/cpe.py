"""Convolutional position encoding (CPE): a residual depthwise convolution, ``x + act(dwconv(x))``.

Used by DaViT (``ConvPosEnc``, before the attention and before the MLP of every block), and by the other
families whose blocks start with a depthwise-conv position encoding.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvPosEnc(nn.Module):
    """``x + act(proj(x))`` with ``proj`` a k x k depthwise ``nn.Conv2d`` (bias, zero padding ``k // 2``).

    Args:
        dim: channels.
        kernel_size: odd kernel size (3 in DaViT).
        act_layer: activation applied to the conv's output before the residual add (DaViT's ``cpe_act``); None
            for none (DaViT's default).
        channels_last: the input and output are (B, H, W, C) maps (the default); False: (B, C, H, W).

    Without an activation the residual is folded into the convolution: ``x + w * x + b`` is the depthwise conv
    with weight ``w + delta`` (``delta`` the identity tap: 1 at the kernel centre), so the layer costs one pass
    over the map instead of two (conv, then add) and allocates one tensor instead of two. The parameter stays
    ``proj.weight`` (checkpoints are unchanged); its gradient is the same, as ``delta`` is a constant.
    """

    def __init__(self, dim: int, kernel_size: int = 3, act_layer: Optional[Callable[[], nn.Module]] = None,
                 channels_last: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvPosEnc needs an odd kernel size (same-size output), got {kernel_size}")
        self.channels_last = channels_last
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.act = act_layer() if act_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nchw = x.permute(0, 3, 1, 2) if self.channels_last else x  # a free view of a channels-last map
        if self.act is None:
            out = F.conv2d(nchw, self.folded_weight(), self.proj.bias, padding=self.proj.padding,
                           groups=self.proj.groups)
        else:
            out = nchw + self.act(self.proj(nchw))
        return out.permute(0, 2, 3, 1) if self.channels_last else out

    def folded_weight(self) -> torch.Tensor:
        """``proj.weight + delta``: the depthwise kernel that also adds its input (built per call from the
        parameter, so meta-device / ``to_empty`` initialisation and weight loading need nothing else)."""
        weight = self.proj.weight
        k = weight.shape[-2] * weight.shape[-1]
        delta = torch.zeros(k, dtype=weight.dtype, device=weight.device)
        delta[k // 2] = 1.0
        return weight + delta.view(1, 1, *weight.shape[-2:])
