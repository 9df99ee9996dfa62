from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
from .linear import Linear


class Mlp(nn.Module):
    """Linear -> activation -> Linear over the last dimension (channels-last tokens)."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: Callable[[], nn.Module] = nn.GELU,
                 out_dim: Optional[int] = None, drop: float = 0.0):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = act_layer()
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.fc2 = Linear(hidden_dim, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
