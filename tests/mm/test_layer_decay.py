"""VisionZooLayerDecayOptimizerConstructor: learning rates from the zoo model's group_matcher."""
from __future__ import annotations

import copy

import pytest

from visionzoo.models import FAMILIES

from .conftest import REPO, build_model, load_config, require_mm

require_mm()

from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

LR, WD = 1e-4, 0.05
DEPTHS = (1, 2, 1, 1)
# the constructor is generic; its arithmetic is checked here on a concrete model with known parameter names
NARROW = FAMILIES["maxvit"].reduced_kwargs()
NARROW_CHANNELS = list(NARROW["embed_dims"])


@pytest.fixture(scope="module")
def retinanet():
    """A real RetinaNet from the config file, with a narrow backbone (stem + 5 blocks) and stage 0 frozen."""
    cfg = load_config(REPO / "configs/mmdet/maxvit/retinanet_maxvit-tiny_fpn_1x_coco.py")
    cfg.model.backbone.update(NARROW, depths=DEPTHS, init_cfg=None, frozen_stages=1)
    cfg.model.neck.in_channels = NARROW_CHANNELS[1:]
    return build_model(cfg.model, "mmdet")


def _optimizer(model, scope="mmdet", **paramwise):
    cfg = dict(optimizer=dict(type="AdamW", lr=LR, weight_decay=WD),
               constructor="VisionZooLayerDecayOptimizerConstructor", paramwise_cfg=paramwise)
    with DefaultScope.overwrite_default_scope(scope):
        return build_optim_wrapper(model, copy.deepcopy(cfg)).optimizer


def _by_name(model, optimizer):
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    return {n: group_of.get(id(p)) for n, p in model.named_parameters()}


def test_layer_wise(retinanet):
    groups = _by_name(retinanet, _optimizer(retinanet, decay_rate=0.5))
    # layers: stem 0, blocks 1..5 (stages 0, 1, 1, 2, 3), everything else 6
    n = 1 + sum(DEPTHS)
    assert groups["backbone.model.stem.conv1.weight"] is None  # frozen (frozen_stages=1): not optimized
    assert groups["backbone.model.stages.0.blocks.0.conv.conv1_1x1.weight"] is None
    lr = {k: g["lr"] for k, g in groups.items() if g is not None}
    assert lr["backbone.model.stages.1.blocks.0.conv.conv1_1x1.weight"] == pytest.approx(LR * 0.5 ** (n - 2))
    assert lr["backbone.model.stages.1.blocks.1.conv.conv1_1x1.weight"] == pytest.approx(LR * 0.5 ** (n - 3))
    assert lr["backbone.model.stages.3.blocks.0.attn_grid.mlp.fc1.weight"] == pytest.approx(LR * 0.5)
    assert lr["backbone.out_norms.3.weight"] == LR
    assert lr["neck.lateral_convs.0.conv.weight"] == LR
    assert lr["bbox_head.retina_cls.weight"] == LR


def test_weight_decay_exclusions(retinanet):
    groups = _by_name(retinanet, _optimizer(retinanet, decay_rate=0.9))
    wd = {k: g["weight_decay"] for k, g in groups.items() if g is not None}
    block = "backbone.model.stages.2.blocks.0."
    assert wd[block + "attn_block.attn.rel_pos.relative_position_bias_table"] == 0.0  # model.no_weight_decay()
    assert wd[block + "conv.norm1.weight"] == 0.0 and wd[block + "conv.conv3_1x1.bias"] == 0.0  # 1-d
    assert wd[block + "conv.conv1_1x1.weight"] == WD and wd[block + "attn_block.attn.qkv.weight"] == WD
    assert wd["neck.fpn_convs.0.conv.weight"] == WD
    groups = _by_name(retinanet, _optimizer(retinanet, decay_rate=0.9, no_decay_keys=["qkv"]))
    assert groups[block + "attn_block.attn.qkv.weight"]["weight_decay"] == 0.0


def test_stage_wise(retinanet):
    groups = _by_name(retinanet, _optimizer(retinanet, decay_rate=0.5, decay_type="stage_wise"))
    lr = {k: g["lr"] for k, g in groups.items() if g is not None}
    # layers: stem 0, stages 1..4, everything else 5
    assert lr["backbone.model.stages.1.blocks.0.conv.conv1_1x1.weight"] == pytest.approx(LR * 0.5 ** 3)
    assert lr["backbone.model.stages.1.blocks.1.conv.conv1_1x1.weight"] == pytest.approx(LR * 0.5 ** 3)
    assert lr["backbone.model.stages.3.blocks.0.conv.conv1_1x1.weight"] == pytest.approx(LR * 0.5)


def test_registered_for_mmseg_too():
    cfg = load_config(REPO / "configs/mmseg/maxvit/upernet_maxvit-tiny_160k_ade20k-512x512.py")
    cfg.model.backbone.update(NARROW, init_cfg=None)
    cfg.model.decode_head.in_channels = NARROW_CHANNELS
    cfg.model.auxiliary_head.in_channels = NARROW_CHANNELS[2]
    model = build_model(cfg.model, "mmseg")
    groups = _by_name(model, _optimizer(model, scope="mmseg", decay_rate=0.5))
    assert groups["backbone.model.stem.conv1.weight"]["lr"] == pytest.approx(LR * 0.5 ** 5)
    assert groups["decode_head.conv_seg.weight"]["lr"] == LR


@pytest.mark.parametrize("paramwise, error, match", [
    (dict(decay_rate=1.5), ValueError, r"decay_rate must be a number in \(0, 1\], got 1.5"),
    (dict(), ValueError, r"decay_rate must be"),
    (dict(decay_rate=0.9, decay_type="block_wise"), ValueError, r"decay_type must be one of .*'block_wise'"),
    (dict(decay_rate=0.9, num_layers=12), ValueError, r"unsupported paramwise_cfg keys \['num_layers'\]"),
])
def test_bad_paramwise_cfg(retinanet, paramwise, error, match):
    with pytest.raises(error, match=match):
        _optimizer(retinanet, **paramwise)


def test_needs_a_zoo_backbone():
    cfg = load_config(REPO / "configs/mmdet/maxvit/retinanet_maxvit-tiny_fpn_1x_coco.py")
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone = dict(type="ResNet", depth=18, out_indices=(1, 2, 3), init_cfg=None)
    model_cfg.neck.in_channels = [128, 256, 512]
    model = build_model(model_cfg, "mmdet")
    with pytest.raises(TypeError, match="backbone is a VisionZooBackbone, got ResNet"):
        _optimizer(model, decay_rate=0.9)
