from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional

import torch
import torch.nn as nn
from .linear import Linear

POOL_TYPES = ("avg", "max", "")


def _check_pool(pool_type: str) -> str:
    if pool_type not in POOL_TYPES:
        raise ValueError(f"global_pool must be one of 'avg', 'max' or '' (no pooling), got {pool_type!r}")
    return pool_type


class ClassifierHead(nn.Module):
    """Global pool -> norm -> optional pre-logits (Linear + act) -> dropout -> fc, on NCHW features.

    With ``pool_type=''`` nothing is pooled: norm, pre-logits and fc run at every position and the
    output stays a (B, K, H, W) map. ``num_features`` is the width of the pre-logits output
    (the model's ``head_hidden_size``).
    """

    def __init__(
            self,
            in_features: int,
            num_classes: int,
            pool_type: str = "avg",
            norm_layer: Optional[Callable[[int], nn.Module]] = None,
            hidden_size: Optional[int] = None,
            act_layer: Callable[[], nn.Module] = nn.Tanh,
            drop_rate: float = 0.0,
    ):
        super().__init__()
        self.in_features = in_features
        self.pool_type = _check_pool(pool_type)
        self.norm = norm_layer(in_features) if norm_layer is not None else nn.Identity()
        if hidden_size:
            self.pre_logits = nn.Sequential(OrderedDict(fc=Linear(in_features, hidden_size), act=act_layer()))
        else:
            self.pre_logits = nn.Identity()
        self.num_features = hidden_size or in_features
        self.drop = nn.Dropout(drop_rate)
        self.fc = Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        if pool_type is not None:
            self.pool_type = _check_pool(pool_type)
        device = self.norm.weight.device if isinstance(self.norm, nn.LayerNorm) else None
        self.fc = Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool_type == "avg":
            x = x.mean((2, 3))
        elif self.pool_type == "max":
            x = x.amax((2, 3))
        else:
            x = x.permute(0, 2, 3, 1)  # per-position head on (B, H, W, C)
        x = self.drop(self.pre_logits(self.norm(x)))
        if not pre_logits:
            x = self.fc(x)
        return x if self.pool_type else x.permute(0, 3, 1, 2)
