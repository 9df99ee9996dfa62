"""Checkpoint reading and handling shared by every family (``checkpoint_filter_fn``, ``load_pretrained``, the mm
backbone).

Official training scripts save more than tensors: ``args`` (an ``argparse.Namespace``, sometimes holding paths and
numpy values), numpy scalars (``max_accuracy``), optimizer and AMP-scaler states. ``torch.load(weights_only=True)``
refuses those, and a plain ``torch.load`` would run whatever the file's pickle says. ``read_checkpoint`` allows
exactly the inert types such files hold (``SAFE_GLOBALS``) on top of torch's weights-only unpickler, and nothing else.
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import pickle
import sys
from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

logger = logging.getLogger("visionzoo")

# timm's own order: an EMA copy wins over the raw weights. A family whose official evaluation reads another key
# sets ``checkpoint_prefer`` on its model class.
WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
# DDP, torch.compile, Lightning (our LightningModule keeps the network in `model`), mm configs
PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.")


def _safe_globals() -> List:
    """Types that official checkpoints pickle besides tensors and that cannot run code when unpickled: argparse's
    Namespace, paths, numpy scalars / arrays / dtypes (under numpy 1's and numpy 2's module names)."""
    core = getattr(np, "_core", None) or np.core
    entries: List = [argparse.Namespace, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath,
                     pathlib.PureWindowsPath, np.ndarray, np.dtype]
    for name in ("scalar", "_reconstruct"):
        fn = getattr(core.multiarray, name)
        entries += [(fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    entries += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return entries


SAFE_GLOBALS = _safe_globals()


def read_checkpoint(path: str) -> Mapping:
    """The checkpoint file at ``path`` as a mapping: safetensors, or a torch file read by torch's weights-only
    unpickler with ``SAFE_GLOBALS`` allowed. Any other pickled object is refused with a ValueError naming it."""
    with open(path, "rb") as f:
        head = f.read(16)
    if str(path).endswith(".safetensors") or (len(head) >= 9 and head[8:9] == b"{"):
        from safetensors.torch import load_file
        return load_file(path, device="cpu")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((line.strip() for line in str(e).splitlines() if "Unsupported global" in line),
                      str(e).splitlines()[0])
        raise ValueError(
            f"checkpoint {path} holds pickled objects besides tensors, which visionzoo does not unpickle "
            f"({detail}). Save its weights first, from a trusted file only: "
            f"torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.pth')") from None


def checkpoint_tensors(checkpoint: Mapping, prefer: Sequence[str] = WRAPPER_KEYS,
                       source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint, taken from the first wrapper key of ``prefer`` that it has (``state_dict_ema``,
    ``model_ema``, ``state_dict``, ``model`` by default; the key used is logged), else from its top level.
    Keys are unchanged; everything that is not a tensor (args, epoch, optimizer state) is left out."""
    for key in prefer:
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            others = [k for k in WRAPPER_KEYS if k != key and isinstance(checkpoint.get(k), Mapping)]
            logger.info("%s: weights from %r%s", source, key, f" (also present: {others})" if others else "")
            checkpoint = checkpoint[key]
            break
    return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def unwrap_state_dict(checkpoint: Mapping, prefer: Sequence[str] = WRAPPER_KEYS) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint (``checkpoint_tensors``) with the prefixes that every key carries stripped
    (``module.``, ``_orig_mod.``, ``model.``, ``backbone.``)."""
    state = checkpoint_tensors(checkpoint, prefer)
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

    Two layers are adapted after the filter runs, so they are let through: the classifier (dropped
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


def build_zoo_model(model_cls, variant: str, pretrained: bool, **kwargs):
    """timm's ``build_model_with_cfg`` for a zoo model, with the family's ``checkpoint_filter_fn`` and the feature
    cfg taken from ``kwargs``. Weight files and URLs, the registry's or a ``pretrained_cfg_overlay``'s, load through
    ``PretrainedFileMixin.load_pretrained`` (``custom_load=True``; timm resets it for an overlay's file unless it is
    given explicitly); hub weights (safetensors) take timm's own path through the same filter."""
    from timm.models import build_model_with_cfg

    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    if overlay.get("file") or overlay.get("url"):
        overlay.setdefault("custom_load", True)
    return build_model_with_cfg(model_cls, variant, pretrained, pretrained_cfg_overlay=overlay or None,
                                pretrained_filter_fn=sys.modules[model_cls.__module__].checkpoint_filter_fn, **kwargs)


class PretrainedFileMixin:
    """``load_pretrained(path)`` for zoo models: timm calls it for weight files and URLs (``custom_load=True`` in
    every zoo pretrained cfg, and ``build_zoo_model`` keeps it for a file overlay); hub weights still go through
    timm's own safetensors path and the filter.

    Unlike timm's generic file path (``weights_only=True``, EMA first), it reads official training checkpoints
    (``read_checkpoint``), takes the weights from the wrapper key the family prefers (``checkpoint_prefer``, or per file
    ``checkpoint_prefer_for``) and logs
    it, runs the family's ``checkpoint_filter_fn`` (found in the model class's module), then adapts the first conv to
    ``in_chans`` and drops the classifier when ``num_classes`` differs from the pretrained cfg's, as timm does.
    """

    checkpoint_prefer: Sequence[str] = WRAPPER_KEYS

    def checkpoint_prefer_for(self, path: str) -> Sequence[str]:
        """The wrapper keys to try, in order, for the file at ``path`` (``checkpoint_prefer`` unless a family
        decides by the file, e.g. by its name); also used by the det/seg backbone."""
        return self.checkpoint_prefer

    def load_pretrained(self, path: str) -> None:
        from timm.models._manipulate import adapt_input_conv

        state = checkpoint_tensors(read_checkpoint(path), self.checkpoint_prefer_for(str(path)), source=str(path))
        state = sys.modules[type(self).__module__].checkpoint_filter_fn(state, self)
        cfg = self.pretrained_cfg
        strict = True
        first = cfg.get("first_conv")
        pretrained_in_chans = (cfg.get("input_size") or (3,))[0]
        if first and f"{first}.weight" in state and self.in_chans != pretrained_in_chans:
            key = f"{first}.weight"
            state[key] = adapt_input_conv(self.in_chans, state[key], base_chans=pretrained_in_chans)
        classifier = cfg.get("classifier")
        if classifier and self.num_classes != cfg.get("num_classes"):
            state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
            strict = False
            logger.info("%s: classifier %s not loaded (num_classes %s, the weights have %s)", path, classifier,
                        self.num_classes, cfg.get("num_classes"))
        self.load_state_dict(state, strict=strict)
