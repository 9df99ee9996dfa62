"""Reading checkpoints for the mm backbone through the zoo's safe reader; URLs are downloaded once into torch's hub
cache."""
from __future__ import annotations

import hashlib
import os
from typing import Dict, Mapping, Sequence
from urllib.parse import urlparse

import torch

from visionzoo.models._checkpoint import WRAPPER_KEYS, checkpoint_tensors
from visionzoo.models._checkpoint import read_checkpoint as read_checkpoint_file


def _local_file(checkpoint: str) -> str:
    if checkpoint.startswith(("http://", "https://")):
        # the URL's hash in the name: hf-hub files are all called model.safetensors
        name = os.path.basename(urlparse(checkpoint).path) or "checkpoint"
        digest = hashlib.sha256(checkpoint.encode()).hexdigest()[:12]
        path = os.path.join(torch.hub.get_dir(), "checkpoints", "visionzoo", f"{digest}-{name}")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.hub.download_url_to_file(checkpoint, path)
        return path
    path = os.path.expanduser(checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_cfg checkpoint not found: {checkpoint!r} (a file path or an http(s) URL)")
    return path


def read_checkpoint(checkpoint: str) -> Mapping:
    """The checkpoint at a path or URL as a mapping (``visionzoo.models._checkpoint.read_checkpoint``: safetensors,
    or torch's weights-only unpickler plus the inert types official training scripts save)."""
    path = _local_file(checkpoint)
    try:
        return read_checkpoint_file(path)
    except ValueError as e:
        raise ValueError(
            f"init_cfg {e}. An mmengine Runner checkpoint stores its message hub this way: save the weights and "
            f"point init_cfg at them with prefix='backbone.'") from None


def select_state_dict(checkpoint: Mapping, prefix: str = "", source: str = "checkpoint",
                      prefer: Sequence[str] = WRAPPER_KEYS) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint (unwrapping ``state_dict`` / ``model`` ..., in the order ``prefer``), restricted
    to keys under ``prefix`` with the prefix removed (how mmengine's ``Pretrained`` init reads ``prefix``)."""
    state = checkpoint_tensors(checkpoint, prefer, source=source)
    if not state:
        raise ValueError(f"{source} holds no tensors (top-level keys: {sorted(checkpoint)[:10]})")
    if prefix:
        selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not selected:
            tops = sorted({k.split(".", 1)[0] + "." for k in state})
            raise ValueError(f"no key of {source} starts with prefix {prefix!r}; its keys start with {tops[:10]}")
        state = selected
    return state
