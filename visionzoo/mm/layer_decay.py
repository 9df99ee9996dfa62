"""Layer-wise learning-rate decay for zoo backbones, driven by the model's own ``group_matcher``.

mmdet's / mmseg's ``LearningRateDecayOptimizerConstructor`` only knows ConvNeXt, BEiT and MAE parameter names.
This one asks the zoo model which layer each parameter belongs to (timm's ``group_matcher``, the same grouping
timm's own layer decay uses), so it works for every family.

    optim_wrapper = dict(
        type="OptimWrapper",
        optimizer=dict(type="AdamW", lr=1e-4, weight_decay=0.05),
        constructor="VisionZooLayerDecayOptimizerConstructor",
        paramwise_cfg=dict(decay_rate=0.9, decay_type="layer_wise"))   # or "stage_wise"

Backbone layer i of n (stem = 0) gets ``lr * decay_rate ** (n - i)``; the neck, the heads and the backbone's
output norms get ``lr``. No weight decay on 1-d parameters (norms, biases) and on the model's
``no_weight_decay()`` set (relative-position tables ...), nor on names containing a ``no_decay_keys`` entry.
Frozen parameters (``requires_grad=False``) are left out.
"""
from __future__ import annotations

from typing import Dict, List

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from timm.models import group_parameters

from .backbone import VisionZooBackbone

DECAY_TYPES = ("layer_wise", "stage_wise")
PARAMWISE_KEYS = {"decay_rate", "decay_type", "no_decay_keys"}


class VisionZooLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):

    def _validate_cfg(self) -> None:
        super()._validate_cfg()
        cfg = self.paramwise_cfg
        unknown = set(cfg) - PARAMWISE_KEYS
        if unknown:
            raise ValueError(f"VisionZooLayerDecayOptimizerConstructor: unsupported paramwise_cfg keys "
                             f"{sorted(unknown)}; it takes {sorted(PARAMWISE_KEYS)}")
        rate = cfg.get("decay_rate")
        if not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ValueError(f"paramwise_cfg.decay_rate must be a number in (0, 1], got {rate!r}")
        if cfg.get("decay_type", "layer_wise") not in DECAY_TYPES:
            raise ValueError(f"paramwise_cfg.decay_type must be one of {DECAY_TYPES}, got {cfg.get('decay_type')!r}")
        if self.base_lr is None or self.base_wd is None:
            raise ValueError("VisionZooLayerDecayOptimizerConstructor needs optimizer.lr and optimizer.weight_decay")

    def add_params(self, params: List[dict], module: nn.Module, **kwargs) -> None:
        backbone = getattr(module, "backbone", None)
        if not isinstance(backbone, VisionZooBackbone):
            raise TypeError(f"VisionZooLayerDecayOptimizerConstructor needs a model whose backbone is a "
                            f"VisionZooBackbone, got {type(backbone).__name__} in {type(module).__name__}")
        rate = float(self.paramwise_cfg["decay_rate"])
        coarse = self.paramwise_cfg.get("decay_type", "layer_wise") == "stage_wise"
        no_decay_keys = tuple(self.paramwise_cfg.get("no_decay_keys", ()))

        inner = backbone.model
        layer_of = group_parameters(inner, inner.group_matcher(coarse=coarse), reverse=True)
        num_layers = max(layer_of.values()) + 1  # everything outside the backbone's layers: layer num_layers
        no_wd = set(inner.no_weight_decay()) if hasattr(inner, "no_weight_decay") else set()
        inner_prefix = "backbone.model."

        groups: Dict[str, dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            inner_name = name[len(inner_prefix):] if name.startswith(inner_prefix) else None
            layer = layer_of.get(inner_name, num_layers)
            decay = not (param.ndim <= 1 or inner_name in no_wd or any(k in name for k in no_decay_keys))
            key = f"layer_{layer}_{'decay' if decay else 'no_decay'}"
            if key not in groups:
                scale = rate ** (num_layers - layer)
                groups[key] = dict(params=[], param_names=[], group_name=key, lr_scale=scale,
                                   lr=self.base_lr * scale, weight_decay=self.base_wd if decay else 0.0)
            groups[key]["params"].append(param)
            groups[key]["param_names"].append(name)
        print_log(f"VisionZooLayerDecayOptimizerConstructor: {num_layers} backbone layers, decay_rate {rate}: "
                  + ", ".join(f"{k} ({len(g['params'])} params, lr x{g['lr_scale']:.3g})" for k, g in groups.items()),
                  logger="current")
        params.extend(groups.values())
