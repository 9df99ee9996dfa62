"""mmdet / mmseg support: import this from a config to use zoo backbones there.

    custom_imports = dict(imports=["visionzoo.mm"], allow_failed_imports=False)
    model = dict(backbone=dict(_delete_=True, type="VisionZooBackbone", model_name="vz_maxvit_tiny", ...))

Registers ``VisionZooBackbone`` in the ``MODELS`` registry and ``VisionZooLayerDecayOptimizerConstructor`` in the
``OPTIM_WRAPPER_CONSTRUCTORS`` registry of mmdet and of mmseg, whichever of the two is installed (at least one
must be). Nothing else in visionzoo imports the mm stack.
"""
from __future__ import annotations

import importlib

try:
    import mmengine  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("visionzoo.mm needs the OpenMMLab stack (mmengine, mmcv, mmdet and/or mmseg); "
                      "install it with `bash tools/setup.sh --mm`") from e

from .backbone import VisionZooBackbone
from .layer_decay import VisionZooLayerDecayOptimizerConstructor

__all__ = ["VisionZooBackbone", "VisionZooLayerDecayOptimizerConstructor", "REGISTERED_IN"]

REGISTERED_IN = []  # the scopes ("mmdet", "mmseg") this import registered into
_errors = []

for _scope in ("mmdet", "mmseg"):
    try:
        _registry = importlib.import_module(f"{_scope}.registry")
    except ImportError as e:
        _errors.append(f"{_scope}: {e}")
        continue
    _registry.MODELS.register_module(module=VisionZooBackbone, force=True)
    _registry.OPTIM_WRAPPER_CONSTRUCTORS.register_module(module=VisionZooLayerDecayOptimizerConstructor, force=True)
    REGISTERED_IN.append(_scope)

if not REGISTERED_IN:
    raise ImportError("visionzoo.mm could import neither mmdet nor mmseg (" + "; ".join(_errors)
                      + "); install the mm stack with `bash tools/setup.sh --mm`")
