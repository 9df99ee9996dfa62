"""Helpers for the mmdet / mmseg tests: config files, scoped model building, fake batches.

These tests need the mm stack (`bash tools/setup.sh --dev` installs it); each module skips when it is missing.
Models are always built inside an explicit default scope, so mmdet and mmseg tests can run in one process in any
order (after ``mmseg.utils.register_all_modules()`` the global default scope would otherwise be mmseg).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DET_CONFIGS = sorted((REPO / "configs" / "mmdet").rglob("*.py"))
SEG_CONFIGS = sorted((REPO / "configs" / "mmseg").rglob("*.py"))
ALL_CONFIGS = DET_CONFIGS + SEG_CONFIGS



def config_id(path: Path) -> str:
    return str(path.relative_to(REPO / "configs"))


def family_of_config(path: Path):
    """The family whose folder holds a config (configs/<task>/<family>/...)."""
    from visionzoo.models import FAMILIES
    folder = path.relative_to(REPO / "configs").parts[1]
    return FAMILIES[folder]


def has_mask_head(model_cfg) -> bool:
    return bool(model_cfg.get("roi_head") and model_cfg.roi_head.get("mask_head"))


def set_backbone_channels(model_cfg, channels: List[int]) -> None:
    """Point the neck / decode heads of a detector or segmentor config at a backbone with ``channels``."""
    neck = model_cfg.get("neck")
    if neck is not None and "in_channels" in neck:
        neck.in_channels = list(channels) if isinstance(neck.in_channels, (list, tuple)) else channels[-1]
    for name in ("decode_head", "auxiliary_head"):
        head = model_cfg.get(name)
        if head is None:
            continue
        # after a neck (FPN, MultiLevelNeck) the heads see the neck's width on every level
        widths = [neck.out_channels] * len(channels) if neck is not None and neck.get("out_channels") else channels
        index = head.get("in_index", -1)
        head.in_channels = [widths[i] for i in index] if isinstance(index, (list, tuple)) else widths[index]


def scope_of(path: Path) -> str:
    return "mmdet" if "mmdet" in path.parts else "mmseg"


@functools.lru_cache(maxsize=None)
def _register(scope: str) -> None:
    import importlib
    importlib.import_module(f"{scope}.utils").register_all_modules(init_default_scope=False)
    import visionzoo.mm  # noqa: F401


def load_config(path: Path):
    from mmengine.config import Config
    _register(scope_of(path))
    return Config.fromfile(str(path))  # resolves mmdet:: / mmseg:: bases, runs custom_imports


def build_model(model_cfg, scope: str):
    """Build a detector / segmentor (or any registered model) with ``scope`` as the default scope."""
    import importlib
    from mmengine.registry import DefaultScope
    _register(scope)
    registry = importlib.import_module(f"{scope}.registry").MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(model_cfg)


def det_batch(model, sizes: List[Tuple[int, int]], with_masks: bool, training: bool = True):
    """A preprocessed mmdet batch: uint8 images of the given sizes, 3 random boxes each (masks: the boxes)."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for H, W in sizes:
        inputs.append(torch.randint(0, 256, (3, H, W), dtype=torch.uint8, generator=gen))
        xy = torch.rand(3, 2, generator=gen) * torch.tensor([W * 0.6, H * 0.6])
        wh = 8 + torch.rand(3, 2, generator=gen) * torch.tensor([W * 0.35, H * 0.35])
        boxes = torch.cat([xy, xy + wh], 1).clamp(max=torch.tensor([W - 1, H - 1] * 2))
        sample = DetDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), scale_factor=(1.0, 1.0)))
        gt = InstanceData(bboxes=boxes, labels=torch.randint(0, 80, (3,), generator=gen))
        if with_masks:
            masks = np.zeros((3, H, W), dtype=np.uint8)
            for m, (x0, y0, x1, y1) in zip(masks, boxes.round().long().tolist()):
                m[y0:y1, x0:x1] = 1
            gt.masks = BitmapMasks(masks, H, W)
        sample.gt_instances = gt
        sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=training)


def seg_batch(model, size: Tuple[int, int], n: int = 2, num_classes: int = 150, training: bool = True):
    """A preprocessed mmseg batch of ``n`` uint8 images with random label maps (some pixels ignored: 255)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    gen = torch.Generator().manual_seed(0)
    H, W = size
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 256, (3, H, W), dtype=torch.uint8, generator=gen))
        labels = torch.randint(0, num_classes, (1, H, W), generator=gen)
        labels[:, : H // 8] = 255
        sample = SegDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
        sample.gt_sem_seg = PixelData(data=labels)
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=training)


def require_mm() -> None:
    """Skip the calling test module when the mm stack is not installed."""
    for name in ("mmengine", "mmcv", "mmdet", "mmseg"):
        pytest.importorskip(name, reason="the mm stack is not installed (bash tools/setup.sh --mm)")
