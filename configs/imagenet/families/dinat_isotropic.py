"""Isotropic NAT / DiNAT and ViT-rpb ImageNet recipes (written by configs/imagenet/generate.py): the official
``classification/configs/{nat,dinat}_isotropic_*.yml`` and ``vit_rpb_*.yml`` on top of ``train.py``'s defaults; the
text comes from the NAT / DiNAT section (dinat.py), which documents every field's source."""
from __future__ import annotations

import importlib.util
import os
from typing import Dict

import timm

_spec = importlib.util.spec_from_file_location("visionzoo_recipes_dinat_shared",
                                               os.path.join(os.path.dirname(os.path.abspath(__file__)), "dinat.py"))
_dinat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_dinat)

# drop path per factory (classification/isotropic.py); the base configs add model_ema and 50 warmup epochs
_DP = dict(small=0.1, base=0.4)


def recipe(name: str) -> str:
    model = name[len("vz_"):]
    size = model.rsplit("_", 1)[1]
    cfg = model.replace("vitrpb", "vit_rpb")
    base = size == "base"
    return _dinat.recipe_text(name, cfg, "isotropic", _DP[size], f"[model] {model} drop_path_rate={_DP[size]}",
                              warmup=50 if base else 20, ema=base)


def recipes() -> Dict[str, str]:
    return {name: recipe(name) for name in timm.list_models("vz_*", module="dinat_isotropic")}
