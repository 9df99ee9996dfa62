"""Every mmdet / mmseg config under configs/ builds from disk, and its wiring is consistent."""
from __future__ import annotations

import copy
import re

import pytest
import timm
import torch

from .conftest import ALL_CONFIGS, DET_CONFIGS, REPO, build_model, load_config, require_mm, scope_of

require_mm()


def _id(path):
    return str(path.relative_to(REPO / "configs"))


def test_every_family_has_configs():
    families = sorted({m for m in timm.list_modules() if timm.list_models("vz_*", module=m)})
    for family in families:
        for task, pattern in [("mmdet", "mask-rcnn_*_fpn_1x_coco.py"), ("mmdet", "retinanet_*_fpn_1x_coco.py"),
                              ("mmseg", "upernet_*_160k_ade20k-512x512.py")]:
            names = [p.name for p in (REPO / "configs" / task / family).glob(pattern)]
            variants = {re.sub(r"_(384|512)$", "", m) for m in timm.list_models("vz_*", module=family)}
            assert len(names) == len(variants), (family, pattern, names)


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_id)
def test_config_builds_and_channels_match(path):
    cfg = load_config(path)
    backbone_cfg = cfg.model.backbone
    assert backbone_cfg.type == "VisionZooBackbone"
    assert cfg.custom_imports == dict(imports=["visionzoo.mm"], allow_failed_imports=False)
    # the checkpoint is the model's default pretrained weights; the file is named after the model
    pretrained = timm.get_pretrained_cfg(backbone_cfg.model_name)
    expected = f"huggingface.co/{pretrained.hf_hub_id}/" if pretrained.hf_hub_id else pretrained.url
    assert expected in backbone_cfg.init_cfg.checkpoint
    if path.parent.name != "_base_":
        assert f"_{backbone_cfg.model_name[len('vz_'):].replace('_', '-')}_" in path.name

    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None  # nothing is downloaded here
    with torch.device("meta"):  # the wiring is the question here, not the weights (xlarge has 475M of them)
        model = build_model(model_cfg, scope_of(path))
    channels = model.backbone.out_channels
    if path in DET_CONFIGS:
        assert model.neck.in_channels == channels
        assert model.neck.num_ins == len(channels)
    else:
        head = model.decode_head
        assert head.in_channels == [channels[i] for i in head.in_index]
        assert model.auxiliary_head.in_channels == channels[model.auxiliary_head.in_index]

    # the optimizer recipe: no weight decay on norms and relative-position tables, the base decay elsewhere
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope_of(path)):
        optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    base_wd = cfg.optim_wrapper.optimizer.weight_decay
    assert type(optimizer).__name__ == "AdamW"
    wd_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.backbone.named_parameters():
        no_decay = "norm" in name or "relative_position_bias_table" in name
        assert wd_of[id(p)] == (0.0 if no_decay else base_wd), name


@pytest.mark.parametrize("path", [p for p in ALL_CONFIGS if p.parent.name != "_base_"], ids=_id)
def test_variant_configs_are_thin(path):
    """Per-variant files only name the model, its drop path, its checkpoint and the channels of what follows."""
    text = path.read_text()
    assert re.search(r"_base_ = \['\./_base_/", text)
    for forbidden in ("optim_wrapper", "param_scheduler", "train_dataloader", "type="):
        assert forbidden not in text, forbidden
