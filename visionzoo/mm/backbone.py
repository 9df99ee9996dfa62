"""``VisionZooBackbone``: any zoo model as an mmdet / mmseg backbone, built on its ``features_only`` path."""
from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from visionzoo.models._checkpoint import check_keys, unwrap_state_dict
from visionzoo.models._dense import DenseHook

from ._checkpoint import read_checkpoint, select_state_dict

def _template(model_name: str, model_kwargs: Dict[str, Any]) -> nn.Module:
    """The full classification model on the meta device: its feature_info and its checkpoint layout, no memory."""
    with torch.device("meta"):
        return timm.create_model(model_name, pretrained=False, **model_kwargs)


def dense_hook(model: nn.Module) -> DenseHook:
    """The model class's det/seg hook (``dense_hook`` class attribute), else the default 4-level pyramid."""
    hook = getattr(type(model), "dense_hook", None)
    return hook if hook is not None else DenseHook()


class VisionZooBackbone(BaseModule):
    """A ``vz_*`` model as a detection / segmentation backbone (mmdet 3.x and mmseg 1.x).

    What a family's det/seg backbone looks like (its outputs, output norms, extra modules, the key names of its
    official det/seg checkpoints) comes from the model class's hook (``visionzoo.models._dense``); this class is the
    same for every family.

    Args:
        model_name: registered timm name, e.g. ``"vz_maxvit_tiny"``.
        out_indices: outputs to return, counted as mmdet's Swin / ConvNeXt do: for a pyramid, stages 0..3 at strides
            4, 8, 16, 32; for a plain ViT, the hook's chosen blocks.
        frozen_stages: -1 freezes nothing, 0 the stem, k the stem and the first k stages (no gradients, eval mode).
        norm_eval: keep every BatchNorm (any kind, SyncBatchNorm included) in eval mode during training.
        drop_path_rate: stochastic depth of the model's last block (the model's own schedule below it).
        out_norm: a norm on each returned level (the hook's: LayerNorm2d with the official eps), as the official
            det/seg backbones add.
        with_cp: gradient checkpointing (the model's ``set_grad_checkpointing``).
        init_cfg: ``dict(type="Pretrained", checkpoint=path_or_url, prefix=None)`` loads weights through the
            model's ``checkpoint_filter_fn`` with safe loading (safetensors / ``weights_only``); other init types
            go to mmengine.
        **model_kwargs: passed to ``timm.create_model`` (e.g. a narrower model for experiments).
    """

    def __init__(
            self,
            model_name: str,
            out_indices: Sequence[int] = (0, 1, 2, 3),
            frozen_stages: int = -1,
            norm_eval: bool = False,
            drop_path_rate: float = 0.0,
            out_norm: bool = True,
            with_cp: bool = False,
            init_cfg: Optional[dict] = None,
            **model_kwargs,
    ):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(model_name, str) or not timm.is_model(model_name):
            zoo = ", ".join(timm.list_models("vz_*"))
            raise ValueError(f"unknown model_name {model_name!r}; registered zoo models: {zoo}")
        self._model_kwargs = dict(model_kwargs, drop_path_rate=drop_path_rate)
        template = _template(model_name, self._model_kwargs)
        self.hook = dense_hook(template)
        full_info = template.feature_info  # before any pruning
        levels = self.hook.levels(model_name, full_info)
        n = len(levels)
        out_indices = tuple(out_indices) if isinstance(out_indices, (list, tuple)) else (out_indices,)
        bad = [i for i in out_indices if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n]
        if not out_indices or bad or len(set(out_indices)) != len(out_indices):
            raise ValueError(f"out_indices must be distinct output indices in 0..{n - 1} (strides "
                             f"{self.hook.out_strides(full_info, levels)}), got {out_indices}")
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= n:
            raise ValueError(f"frozen_stages must be -1 (none), 0 (stem) ... {n} (stem and all stages) "
                             f"for {model_name}, got {frozen_stages!r}")
        self.model_name = model_name
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        # the model itself (keys as in a classification checkpoint), without what the requested outputs never use
        self.model = timm.create_model(model_name, pretrained=False, **self._model_kwargs)
        self._levels = [levels[i] for i in out_indices]
        self.hook.prune(self.model, self._levels)
        self._stage_modules = [full_info[level]["module"] for level in levels]
        self._drop_unused_tail()
        self.out_channels = [self.hook.out_channels(full_info, levels)[i] for i in out_indices]
        self.extras = self.hook.extra_modules(self.model, out_indices)
        self.out_norms = nn.ModuleDict(
            {str(i): self.hook.out_norm(c) for i, c in zip(out_indices, self.out_channels)} if out_norm else {})
        if with_cp:
            self.model.set_grad_checkpointing(True)
        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.hook.outputs(self.model, self.extras, self.out_norms, x, self._levels, self.out_indices))

    # ---- freezing -------------------------------------------------------------------------------------------

    def _units(self) -> List[Tuple[str, nn.Module, Optional[int]]]:
        """The model split into (name, module, stage index or None) in registration (= forward) order: the stage
        modules named by feature_info, and the largest modules around them (stem, downsamplers)."""
        stages = {name: i for i, name in enumerate(self._stage_modules)}
        units = []

        def walk(module: nn.Module, prefix: str) -> None:
            for name, child in module.named_children():
                full = prefix + name
                if full in stages:
                    units.append((full, child, stages[full]))
                elif any(s.startswith(full + ".") for s in stages):
                    walk(child, full + ".")
                else:
                    units.append((full, child, None))

        walk(self.model, "")
        return units

    def _drop_unused_tail(self) -> None:
        """Replace what comes after the last returned stage (classifier head, final norm) with nn.Identity:
        the features never use it, and parameters without gradients break DDP and waste optimizer state."""
        units = self._units()
        last = max(i for i, (_, _, stage) in enumerate(units) if stage is not None)
        for name, _, _ in units[last + 1:]:
            parent, _, attr = name.rpartition(".")
            setattr(self.model.get_submodule(parent) if parent else self.model, attr, nn.Identity())

    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        frozen = []
        for _, module, stage in self._units():
            if stage is not None and stage >= self.frozen_stages:
                break
            frozen.append(module)
        frozen += [self.out_norms[str(i)] for i in range(self.frozen_stages) if str(i) in self.out_norms]
        return frozen

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for p in self.model.parameters(recurse=False):  # e.g. a position embedding on the model itself
            p.requires_grad = False
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> "VisionZooBackbone":
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # ---- pretrained weights ---------------------------------------------------------------------------------

    def init_weights(self) -> None:
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg] if self.init_cfg else []
        pretrained = [c for c in cfgs if c.get("type") == "Pretrained"]
        others = [c for c in cfgs if c.get("type") != "Pretrained"]
        if len(pretrained) > 1:
            raise ValueError(f"VisionZooBackbone takes one Pretrained init_cfg, got {len(pretrained)}")
        init_cfg, self.init_cfg = self.init_cfg, others or None
        try:
            super().init_weights()  # mmengine's other init types; the zoo model keeps its own initialisation
        finally:
            self.init_cfg = init_cfg
        if pretrained:
            cfg = pretrained[0]
            unknown = set(cfg) - {"type", "checkpoint", "prefix", "map_location"}
            if unknown or "checkpoint" not in cfg:
                raise ValueError(f"Pretrained init_cfg takes checkpoint= and optionally prefix=, got {cfg}")
            self.load_pretrained(cfg["checkpoint"], prefix=cfg.get("prefix") or "")

    def load_pretrained(self, checkpoint: str, prefix: str = "") -> Dict[str, List[str]]:
        """Load a classification checkpoint of this model (official layout, timm's, ours, Lightning ...) or a
        detector / segmentor state dict (with ``prefix="backbone."``: ours, or an official det/seg checkpoint whose
        backbone keys the hook maps) through the model's ``checkpoint_filter_fn``.

        Returns and logs what happened: ``loaded`` (backbone keys set from the file), ``new`` (backbone keys the
        file lacks, e.g. the output norms) and ``unused`` (file keys with no place here, e.g. the classifier).
        """
        template = _template(self.model_name, self._model_kwargs)
        prefer = template.checkpoint_prefer_for(checkpoint) if hasattr(template, "checkpoint_prefer_for") else None
        state = select_state_dict(read_checkpoint(checkpoint), prefix, f"checkpoint {checkpoint!r}",
                                  *([prefer] if prefer else []))
        own_keys = ("out_norms.", "extras.")
        if any(k.startswith(own_keys) for k in state):  # our own layout (a detector's backbone): model.* + own keys
            own_norms = {k: v for k, v in state.items() if k.startswith(own_keys)}
            state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()
                     if not k.startswith(own_keys)}
        else:  # an official det/seg backbone's own modules (output norms ...) under their official names
            state, own_norms = self.hook.official_keys(unwrap_state_dict(state))
        state = unwrap_state_dict(state)
        target = self.state_dict()
        # what the backbone dropped (classifier head, stages after the last output) may be absent, e.g. from a
        # detector's checkpoint: stand-ins let the filter check everything else, and are discarded afterwards
        fillers = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in template.state_dict().items()
                   if k not in state and "model." + k not in target}
        state.update(fillers)
        filter_fn = getattr(importlib.import_module(type(template).__module__), "checkpoint_filter_fn", None)
        try:
            if filter_fn is not None:
                state = filter_fn(state, template)
            else:
                check_keys(state, template, self.model_name)
        except ValueError as e:
            raise ValueError(f"checkpoint {checkpoint!r} does not fit {self.model_name}: {e}") from None
        state = {k: v for k, v in state.items() if k not in fillers}

        mapped = {"model." + k: v for k, v in state.items()}
        mapped.update(own_norms)
        to_load = {k: v for k, v in mapped.items() if k in target}
        wrong = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in to_load.items()
                 if v.shape != target[k].shape]
        if wrong:
            raise ValueError(f"checkpoint {checkpoint!r} does not fit {self.model_name}: shape mismatch "
                             f"(checkpoint vs backbone): {wrong[:8]}")
        self.load_state_dict(to_load, strict=False)
        report = dict(loaded=sorted(to_load), new=sorted(set(target) - set(to_load)),
                      unused=sorted(set(mapped) - set(to_load)))
        print_log(f"VisionZooBackbone({self.model_name}): loaded {len(report['loaded'])} keys from {checkpoint}; "
                  f"new (not in the checkpoint, left at init): {report['new']}; "
                  f"unused checkpoint keys: {_summary(report['unused'])}", logger="current")
        self._is_init = True
        self.init_report = report
        return report


def _summary(keys: List[str], limit: int = 6) -> str:
    return str(keys) if len(keys) <= limit else f"{keys[:limit]} ... ({len(keys)} in all)"
