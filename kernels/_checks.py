"""Input checks shared by every op's public function: what was wrong and what is allowed."""
from __future__ import annotations

from typing import Optional

import torch


def check_tensors(layout: str, **tensors: Optional[torch.Tensor]) -> None:
    """Each named tensor (None ones are skipped) must be a non-empty floating-point ``torch.Tensor`` with as many
    dimensions as ``layout`` names (e.g. ``"(B, H, W, heads, head_dim)"``), and all must share the first one's dtype
    and device. Shapes beyond the number of dimensions are the op's to check."""
    ndim = layout.count(",") + 1
    named = [(name, t) for name, t in tensors.items() if t is not None]
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != ndim:
            raise ValueError(f"{name} must be {layout}, got a {t.dim()}-D tensor of shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating point tensor, got {t.dtype}")
        if t.numel() == 0:
            raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.dtype != first.dtype or t.device != first.device:
            raise ValueError(f"{', '.join(n for n, _ in named)} must share dtype and device; {first_name} is "
                             f"{first.dtype} on {first.device}, {name} is {t.dtype} on {t.device}")
