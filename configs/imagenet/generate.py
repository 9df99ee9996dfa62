"""Writes configs/imagenet/<recipe>.yaml from each family's section in configs/imagenet/families/<family>.py
(tests check that the files are in sync).

    python configs/imagenet/generate.py

A family section is a module with ``recipes() -> {recipe name: yaml text}``: every hyper-parameter with its source
in a comment, its own sources and data block. A recipe is named after its model (``vz_maxvit_tiny``), or
``<model>.<phase>`` when a recipe has several phases (``vz_x_small.phase1``); deploy-only variants have none.
Families add recipes in their own file, never in another family's.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import sys
from typing import Dict

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES_DIR = os.path.join(HERE, "families")


def family_sections() -> Dict[str, object]:
    """{family name: its section module}, from configs/imagenet/families/*.py."""
    sections = {}
    for path in sorted(glob.glob(os.path.join(FAMILIES_DIR, "[!_]*.py"))):
        name = os.path.basename(path)[:-3]
        spec = importlib.util.spec_from_file_location(f"visionzoo_recipes_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sections[name] = module
    return sections


def recipes() -> Dict[str, str]:
    """{recipe name: yaml text} for every family that has a section."""
    import visionzoo  # noqa: F401  (registers the models the sections list)

    out = {}
    for family, section in family_sections().items():
        for name, text in section.recipes().items():
            if name in out:
                raise KeyError(f"recipe {name} is written by two family sections ({family} and another)")
            out[name] = text
    return out


def main() -> int:
    written = recipes()
    for name, text in written.items():
        with open(os.path.join(HERE, f"{name}.yaml"), "w") as f:
            f.write(text)
    print(f"wrote {len(written)} recipes to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
