"""Checkpoint handling shared by every family's ``checkpoint_filter_fn``."""
from __future__ import annotations

from typing import Dict, Iterable, Mapping

import torch
import torch.nn as nn

# timm's own order: an EMA copy wins over the raw weights
WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
# DDP, torch.compile, Lightning (our LightningModule keeps the network in `model`), mm configs
PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.")


def checkpoint_tensors(checkpoint: Mapping) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint, unwrapped from ``state_dict_ema`` / ``model_ema`` / ``state_dict`` / ``model``
    (the first present, in that order); keys unchanged."""
    for key in WRAPPER_KEYS:
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def unwrap_state_dict(checkpoint: Mapping) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint (``checkpoint_tensors``) with the prefixes that every key carries stripped
    (``module.``, ``_orig_mod.``, ``model.``, ``backbone.``)."""
    state = checkpoint_tensors(checkpoint)
    changed = True
    while changed and state:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _preview(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def check_keys(state: Mapping[str, torch.Tensor], model: nn.Module, source: str,
               classifier: str = "head.fc", first_conv: str = "stem.conv1") -> None:
    """Raise a ValueError naming the keys a converted checkpoint lacks or has in excess, and the
    tensors whose shapes differ.

    timm adapts two layers after the filter runs, so they are let through: the classifier (dropped
    when ``num_classes`` differs: may be missing, in excess or differ in shape) and the first conv (adapted to
    ``in_chans``: may differ in shape).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.startswith(classifier + ".")]
    unexpected = [k for k in state if k not in expected and not k.startswith(classifier + ".")]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape and not k.startswith((classifier + ".", first_conv + "."))]
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch (checkpoint vs model): {_preview(mismatched)}")
    if problems:
        raise ValueError(f"checkpoint does not fit {source}: " + "; ".join(problems))
