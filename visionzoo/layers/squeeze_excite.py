from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn


class SqueezeExcite(nn.Module):
    """Channel gating: mean over H, W -> 1x1 conv -> act -> 1x1 conv -> sigmoid -> scale (NCHW)."""

    def __init__(self, channels: int, reduced: int, act_layer: Callable[[], nn.Module] = nn.SiLU):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * gate.sigmoid()
