"""Model families; importing this package registers every ``vz_*`` model with timm.

Each family module declares itself in ``FAMILY`` (see ``_family.Family``); ``FAMILIES`` collects them.
"""
from __future__ import annotations

from typing import Dict

import timm

from . import biformer, davit, dinat, dinat_isotropic, l2vit, maxvit, overlock, ravlt, sparsifiner
from ._family import Family

__all__ = ["FAMILIES", "Family", "family_of"]

FAMILIES: Dict[str, Family] = {
    module.FAMILY.name: module.FAMILY
    for module in (biformer, davit, dinat, dinat_isotropic, l2vit, maxvit, overlock, ravlt, sparsifiner)
}


def family_of(model_name: str) -> Family:
    """The declarations of the family a registered ``vz_*`` model belongs to."""
    for family in FAMILIES.values():
        if model_name in timm.list_models("vz_*", module=family.name):
            return family
    raise ValueError(f"{model_name!r} is not a model of a visionzoo family ({', '.join(FAMILIES)})")
