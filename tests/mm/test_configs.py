"""Every mmdet / mmseg config under configs/ builds from disk, its wiring is consistent, and each family has the
configs its declaration (FAMILY.pending, FAMILY.smoke_configs) says it has."""
from __future__ import annotations

import copy
import re

import pytest
import timm
import torch

from visionzoo.models import FAMILIES

from ..conftest import FAMILY_NAMES
from .conftest import (ALL_CONFIGS, REPO, build_model, config_id, family_of_config, has_mask_head, load_config,
                       require_mm, scope_of)

require_mm()


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_family_configs_match_the_declaration(family_name):
    family = FAMILIES[family_name]
    variants = timm.list_models("vz_*", module=family.name)
    for task in ("mmdet", "mmseg"):
        configs = [p for p in (REPO / "configs" / task / family.name).glob("*.py")]
        if task not in family.tasks:
            assert not configs, f"{family.name} has no {task} by design (FAMILY.tasks) but has configs"
            continue
        if task in family.pending:
            assert not configs, f"{family.name} declares {task} pending but has configs: drop it from FAMILY.pending"
            continue
        assert configs, f"{family.name}: no configs under configs/{task}/{family.name} (or declare {task} pending)"
        for path in configs:
            names = re.findall(r"model_name='([^']+)'", path.read_text())
            assert names and set(names) <= set(variants), f"{config_id(path)} uses {names}, not {family.name} models"
    for smoke in family.smoke_configs:
        assert (REPO / "configs" / smoke).is_file(), f"{family.name}: smoke config {smoke} does not exist"
    tasks = {smoke.split("/")[0] for smoke in family.smoke_configs}
    assert tasks == set(family.tasks) - set(family.pending), f"{family.name}: one smoke config per task it has"


def _smoke_paths():
    return {REPO / "configs" / smoke for family in FAMILIES.values() for smoke in family.smoke_configs}


# built in full: each family's base configs (the recipes) and smoke configs; the other variant files (a model name,
# a drop path, a checkpoint, channels) are checked against their backbone only
FULL = [p for p in ALL_CONFIGS if p.parent.name == "_base_" or p in _smoke_paths()]
VARIANTS = [p for p in ALL_CONFIGS if p not in FULL]


def _check_backbone_cfg(path, cfg) -> None:
    backbone_cfg = cfg.model.backbone
    assert backbone_cfg.type == "VisionZooBackbone"
    assert cfg.custom_imports == dict(imports=["visionzoo.mm"], allow_failed_imports=False)
    # the checkpoint is the model's default pretrained weights (hub or the official URL)
    pretrained = timm.get_pretrained_cfg(backbone_cfg.model_name)
    expected = f"huggingface.co/{pretrained.hf_hub_id}/" if pretrained.hf_hub_id else pretrained.url
    assert expected and expected in backbone_cfg.init_cfg.checkpoint
    if path.parent.name != "_base_":
        assert f"_{backbone_cfg.model_name[len('vz_'):].replace('_', '-')}_" in path.name


@pytest.mark.parametrize("path", VARIANTS, ids=config_id)
def test_variant_config_wiring(path):
    cfg = load_config(path)
    _check_backbone_cfg(path, cfg)
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg.init_cfg = None
    with torch.device("meta"):
        channels = build_model(backbone_cfg, scope_of(path)).out_channels
    neck = cfg.model.get("neck")
    if neck is not None and "in_channels" in neck:
        assert list(neck.in_channels) == channels
    elif neck is None:
        for head in (cfg.model.get("decode_head"), cfg.model.get("auxiliary_head")):
            if head is not None:
                index = head.get("in_index", -1)
                assert head.in_channels == ([channels[i] for i in index] if isinstance(index, (list, tuple))
                                            else channels[index])


@pytest.mark.parametrize("path", FULL, ids=config_id)
def test_config_builds_and_channels_match(path):
    cfg = load_config(path)
    family = family_of_config(path)
    _check_backbone_cfg(path, cfg)

    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None  # nothing is downloaded here
    with torch.device("meta"):  # the wiring is the question here, not the weights
        model = build_model(model_cfg, scope_of(path))
    channels = model.backbone.out_channels
    neck = getattr(model, "neck", None)
    if neck is not None and hasattr(neck, "in_channels"):
        assert list(neck.in_channels) == channels
    for head_name in ("decode_head", "auxiliary_head"):
        head = getattr(model, head_name, None)
        if head is None or neck is not None:
            continue
        index = head.in_index
        assert head.in_channels == ([channels[i] for i in index] if isinstance(index, (list, tuple)) else channels[index])
    if has_mask_head(cfg.model):
        assert model.roi_head.with_mask

    # the optimizer recipe: the family's no-decay keys get no weight decay, every other parameter the base decay
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    logger = MMLogger.get_current_instance()
    level, logger.level = logger.level, 30  # the constructor logs every parameter at INFO
    try:
        with DefaultScope.overwrite_default_scope(scope_of(path)):
            optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    finally:
        logger.level = level
    base_wd = cfg.optim_wrapper.optimizer.weight_decay
    wd_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.backbone.named_parameters():
        no_decay = any(key in name for key in family.det_seg_no_decay)
        assert wd_of[id(p)] == (0.0 if no_decay else base_wd), name


@pytest.mark.parametrize("path", [p for p in ALL_CONFIGS if p.parent.name != "_base_"], ids=config_id)
def test_variant_configs_are_thin(path):
    """Per-variant files only name the model, its drop path, its checkpoint and the channels of what follows."""
    text = path.read_text()
    assert re.search(r"_base_ = \['\./_base_/", text)
    for forbidden in ("optim_wrapper", "param_scheduler", "train_dataloader", "type="):
        assert forbidden not in text, forbidden
