"""Configs by name: the ImageNet recipes, the quickstart and the mmdet / mmseg configs that ship with the package.

The top-level ``configs/`` folder installs as the package ``visionzoo.configs`` (pyproject's package-dir mapping,
the files as package data), so a pip install has the same files as a checkout, and an editable install reads the
checkout's own. Names:

- a training recipe: its file name without ``.yaml``, ``vz_maxvit_tiny`` (``configs/imagenet/vz_maxvit_tiny.yaml``),
  or ``quickstart`` (``configs/quickstart.yaml``);
- a det/seg config: its path under ``configs/``, ``mmdet/davit/mask-rcnn_davit-tiny_fpn_ms-crop-1x_coco.py``, or
  just its file name; ``.py`` may be left out.

``train.py`` / ``visionzoo train`` accept a recipe name as ``--config``, ``python -m visionzoo.mm.run`` a det/seg
config name, and ``visionzoo config NAME`` prints the file's path. A name that is none of these raises
:class:`UnknownConfig` with the closest names. Nothing here imports the config files: they are read as files.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Dict, List

__all__ = ["UnknownConfig", "configs_dir", "recipe_names", "recipe_path", "mm_config_names", "mm_config_path",
           "config_path", "resolve_config_args"]

MM_TASKS = ("mmdet", "mmseg")


class UnknownConfig(ValueError):
    """A config name that names no shipped config (the message lists the closest names)."""


def configs_dir() -> Path:
    """The folder the shipped configs are in: ``site-packages/visionzoo/configs`` for a wheel, the checkout's
    ``configs/`` for an editable install."""
    try:
        import visionzoo.configs
    except ModuleNotFoundError:  # an editable install's import hook maps packages it knew when it was installed
        raise ModuleNotFoundError("visionzoo.configs is not installed (most likely an editable install made before the "
                                  "configs shipped with the package): run `pip install -e .` (or tools/setup.sh) again") from None
    return Path(visionzoo.configs.__file__).resolve().parent


def recipe_names() -> List[str]:
    """Every training recipe name: ``quickstart`` and one per ``configs/imagenet/*.yaml``."""
    return sorted(["quickstart"] + [p.name[: -len(".yaml")] for p in (configs_dir() / "imagenet").glob("*.yaml")])


def _recipe_file(name: str) -> Path:
    root = configs_dir()
    return root / "quickstart.yaml" if name == "quickstart" else root / "imagenet" / f"{name}.yaml"


def _unknown(kind: str, name: str, names: Dict[str, str], listing: str) -> UnknownConfig:
    """The error for ``name``, with the closest of ``names`` ({accepted name: the name shown})."""
    close = difflib.get_close_matches(name, names, n=10, cutoff=0.6)
    shown = list(dict.fromkeys(names[c] for c in close))[:5]
    hint = f"; closest: {', '.join(shown)}" if shown else ""
    return UnknownConfig(f"unknown {kind} {name!r} (not a file, and no shipped {kind} of that name){hint}. "
                         f"`{listing}` lists them all")


def recipe_path(name: str) -> Path:
    """The file of the recipe ``name`` (``vz_maxvit_tiny``, ``quickstart``; a ``.yaml`` suffix is allowed)."""
    key = name[: -len(".yaml")] if name.endswith(".yaml") else name
    names = recipe_names()
    if key not in names:
        raise _unknown("recipe", key, {n: n for n in names}, "visionzoo config --list")
    return _recipe_file(key)


def _mm_index() -> Dict[str, str]:
    """{accepted name: path under configs/} for every det/seg config (``_base_`` files are not named)."""
    root = configs_dir()
    index: Dict[str, str] = {}
    for task in MM_TASKS:
        for path in sorted((root / task).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if "_base_" in rel.split("/"):
                continue
            for key in (rel, rel[:-3], path.name, path.stem):
                index.setdefault(key, rel)  # file names are unique across families and tasks
    return index


def mm_config_names() -> List[str]:
    """Every det/seg config, as its path under ``configs/`` (``mmdet/<family>/<file>.py``)."""
    return sorted(set(_mm_index().values()))


def mm_config_path(name: str) -> Path:
    """The file of the det/seg config ``name``: ``mmdet/davit/mask-rcnn_davit-tiny_fpn_ms-crop-1x_coco.py``, or its
    file name, with or without ``.py``."""
    index = _mm_index()
    if name not in index:
        raise _unknown("det/seg config", name, index, "visionzoo config --list mm")
    return configs_dir() / index[name]


def config_path(name: str) -> Path:
    """A recipe or a det/seg config by name (see the module docstring)."""
    try:
        return recipe_path(name)
    except UnknownConfig:
        pass
    try:
        return mm_config_path(name)
    except UnknownConfig:
        names = {**{n: n for n in recipe_names()}, **_mm_index()}
        raise _unknown("config", name, names, "visionzoo config --list") from None


# a --config value that is meant as a name rather than a path or inline YAML
_NAME = re.compile(r"[\w.+-]+")


def resolve_config_args(argv: List[str]) -> List[str]:
    """``argv`` for Lightning's CLI with every ``--config`` / ``-c`` value that is a recipe name replaced by its
    file. Values that are existing paths, or not a bare name (a path with a folder, inline YAML), stay as they are;
    a bare name that is neither a file nor a recipe raises :class:`UnknownConfig`."""
    out = list(argv)
    for i, arg in enumerate(out):
        option, eq, value = arg.partition("=")
        if option not in ("--config", "-c"):
            continue
        if eq:
            out[i] = f"{option}={_resolve_recipe(value)}"
        elif i + 1 < len(out):
            out[i + 1] = _resolve_recipe(out[i + 1])
    return out


def _resolve_recipe(value: str) -> str:
    if os.path.exists(value) or not _NAME.fullmatch(value):
        return value
    return str(recipe_path(value))
