"""The official implementations as anchors: ``visionzoo bench MODEL --anchor official=PATH`` and the benchmarks.

The official code is never shipped or copied: the user fetches the family's repository (``OfficialCode.repo``) and
passes the path of the checkout. A family whose official code runs here declares ``official=OfficialCode(...)`` in
its ``FAMILY``, with a ``build(checkout, zoo_name, img_size)`` function that imports the official model file from the
checkout and calls the official constructor of that variant. :func:`official_pair` builds it (the official random
initialisation), loads the same weights into the zoo model through the family's ``checkpoint_filter_fn``, and
returns both: the pair computes the same function, so a benchmark can report the output difference too.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn

__all__ = ["OfficialCode", "import_from_checkout", "official_pair", "stub_missing"]


@dataclass(frozen=True)
class OfficialCode:
    """Args:
        repo: the official repository, ``owner/name`` on GitHub (what the user fetches).
        variants: the zoo models that have an official constructor.
        build: ``(checkout, zoo_name, img_size) -> nn.Module``: the official model, its forward returning logits (a
            train-mode dict of logits is reduced to its main entry by ``logits_key``).
        logits_key: the main logits' key where the official forward returns a dict.
        zoo_kwargs: ``img_size -> kwargs`` of the zoo model that matches the official one built for that size (e.g.
            the same padding mode, or the training size where the official model is built for one size).
    """

    repo: str
    variants: Tuple[str, ...]
    build: Callable[[str, str, int], nn.Module]
    logits_key: Optional[str] = None
    zoo_kwargs: Callable[[int], Dict] = lambda img_size: {}


class DictLogits(nn.Module):
    """An official model whose forward returns a dict: its ``key`` entry (the main logits)."""

    def __init__(self, model: nn.Module, key: str):
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x):
        out = self.model(x)
        return out[self.key] if isinstance(out, dict) else out


def stub_missing(name: str, **attributes) -> None:
    """Make ``import name`` succeed with a module holding ``attributes`` when the package is not installed: for
    imports the official file makes at module level but the benchmarked path never uses (fairscale's checkpoint
    wrapper, mmengine's checkpoint loader). An installed package is left alone."""
    parts = name.split(".")
    try:
        if importlib.util.find_spec(parts[0]) is not None:
            return
    except ValueError:  # already a stub
        return
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for key, value in attributes.items():
        setattr(sys.modules[name], key, value)


def import_from_checkout(checkout: str, relative_path: str, repo: str, package: Optional[str] = None):
    """The official file ``relative_path`` of a ``repo`` checkout as a module.

    ``package``: the file is a module of that top-level package of the checkout (it imports its siblings
    relatively), imported with the checkout first on ``sys.path``; a package of the same name that another
    checkout put in ``sys.modules`` is forgotten first. Otherwise the file is loaded on its own, its folder first on
    ``sys.path`` while it imports."""
    path = os.path.join(checkout, relative_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: pass the path of a checkout of github.com/{repo} "
                                f"(it holds {relative_path})")
    if package is not None:
        for loaded in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
            del sys.modules[loaded]
        sys.path.insert(0, os.path.abspath(checkout))
        try:
            return importlib.import_module(relative_path[:-3].replace("/", "."))
        finally:
            sys.path.pop(0)
    name = f"official_{repo.replace('/', '_').replace('-', '_')}_{os.path.basename(path)[:-3]}"
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # timm's @register_model looks the module up
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


def _no_drop_path(model: nn.Module) -> None:
    """Stochastic depth off (timm's DropPath and copies of it keep ``drop_prob``): the zoo model is built without it,
    so that both compute the same function in train mode too."""
    for m in model.modules():
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0


def official_pair(name: str, checkout: str, img_size: int = 224,
                  extra_paths: Sequence[str] = ()) -> Tuple[nn.Module, nn.Module]:
    """(zoo model, official model) for the registered ``name``, holding the same weights (the official model's own
    initialisation, with BatchNorm statistics drawn at random so that they matter)."""
    from . import family_of

    official_code = family_of(name).official
    if official_code is None:
        raise ValueError(f"{name}: its family declares no runnable official code (timm anchors: pass a timm name)")
    if name not in official_code.variants:
        raise ValueError(f"{name} has no official constructor; official variants: {', '.join(official_code.variants)}")
    sys.path.extend(p for p in extra_paths if p not in sys.path)
    torch.manual_seed(0)
    official = official_code.build(checkout, name, img_size)
    _no_drop_path(official)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in official.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    ours = timm.create_model(name, **official_code.zoo_kwargs(img_size))
    ours.load_state_dict(sys.modules[type(ours).__module__].checkpoint_filter_fn(official.state_dict(), ours))
    if official_code.logits_key is not None:
        official = DictLogits(official, official_code.logits_key)
    return ours, official
