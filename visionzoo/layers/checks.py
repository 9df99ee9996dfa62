"""Input validation shared by every model: clear errors instead of shape errors deep inside."""
from __future__ import annotations

import torch


def check_image_input(x: torch.Tensor, in_chans: int, min_size: int, dtype: torch.dtype, model: str) -> None:
    """Raise a clear error unless ``x`` is a (B, in_chans, H, W) floating image batch the model can run."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{model}: expected a 4-D (batch, channels, height, width) tensor, got {x.dim()}-D "
                         f"shape {tuple(x.shape)}; add a batch dimension with x.unsqueeze(0)")
    if x.shape[1] != in_chans:
        raise ValueError(f"{model}: expected {in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)}); "
                         f"create the model with in_chans={x.shape[1]} for such inputs")
    if not x.is_floating_point():
        raise TypeError(f"{model}: expected a floating point image tensor, got {x.dtype}; "
                        "convert and normalise it first (e.g. x.float() / 255 then the model's mean/std)")
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{model}: input dtype {x.dtype} does not match the model's parameters ({dtype}); "
                        f"use x.to({dtype}) or convert the model, e.g. model.to({x.dtype})")
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(f"{model}: input {x.shape[2]}x{x.shape[3]} is smaller than the minimum "
                         f"{min_size}x{min_size} this model accepts")
