"""OverLoCK against the official code (LMMMEng/OverLoCK @ 2c8ab3b29e3a11fb4a2510d98e4d9ed8b33cf091).

Fixtures (generated in /tmp by running the official code, never committed; recipe below):

* ``tests/fixtures/overlock_official_keys.json.gz``: the official ``state_dict`` key names and shapes of every variant
  (``overlock_{xt,t,s,b}(deploy=False|True)`` = the plain and ``*_reparam`` layouts), for the key-map tests.
* ``tests/fixtures/overlock_official_reduced.safetensors``: the official ``OverLoCK`` class in a reduced configuration
  (``depth=[1,1,1,1], sub_depth=[2,1], embed_dim=[8,16,32,48], kernel_size=[17,15,13,7], sub_num_heads=[1,2],
  sub_mlp_ratio=[3,3], projection=32, num_classes=10`` = ``REDUCED``), every parameter and buffer randomised
  (running variances in [0.5, 1.5), means/biases/biases tables N(0, 0.1), norm/LayerScale/GRN-gamma weights
  1 + N(0, 0.1), other weights N(0, 0.65^2 / fan_in), ``num_batches_tracked`` random ints), rounded to fp16 and
  stored as such (``plain.*``, official names). Inputs are bilinear upsamplings of stored seeds (``out.seed_*``, see
  ``_x``). Stored outputs: eval logits at 224x224, 200x120 (the small-map path in both Focus stages) and 64x64; the
  train-mode ``dict(main, aux)`` at 2x64x96 (batch statistics, the auxiliary head); after the official ``reparam()``:
  the merged kernels (``reparam.*lk_origin*``) and the logits at 224 and 200x120. Then the official detection and
  segmentation backbones (``detection/models/overlock.py``, ``segmentation/models/overlock.py``) with the same
  weights plus their own randomised modules (``det.extra_norm.{0-4}``, ``det.h_proj.*``, ``seg.extra_norm.{0-3}``),
  outputs at 128x96 (``out.det.{i}``, ``out.seg.{i}``).

The official files import ``natten.functional.na2d_av`` (natten 0.17, not installable here) unconditionally; the
fixture run put a stand-in ``natten`` package first on ``sys.path`` whose ``na2d_av`` is an independent
implementation of ContMix's fallback maths (``models/contmix.py``: valid unfold, replicate-padded window grid, einsum),
and stand-ins for the mmdet 2 / mmseg 0.x registries and loggers the det/seg files import. No official file was edited.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from visionzoo.models.overlock import (DRB_BRANCHES, FAMILY, ContMixBlock, DilatedReparamConv, checkpoint_filter_fn,
                                       merge_dilated_branches, official_to_ours)

from ..conftest import meta_model, meta_param_count

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# the reduced official configuration of the parity fixture (FAMILY.reduced is smaller still)
REDUCED = dict(depths=(1, 1, 1, 1), sub_depths=(2, 1), embed_dims=(8, 16, 32, 48), kernel_sizes=(17, 15, 13, 7),
               sub_num_heads=(1, 2), projection=32, num_classes=10)

# param-counts.md (official code built at 1000 classes; the training forms include the auxiliary head)
OFFICIAL_PARAMS = {
    "vz_overlock_xt": 17_307_272, "vz_overlock_xt_reparam": 16_791_384,
    "vz_overlock_t": 34_990_472, "vz_overlock_t_reparam": 33_981_064,
    "vz_overlock_s": 58_309_772, "vz_overlock_s_reparam": 56_670_476,
    "vz_overlock_b": 98_012_968, "vz_overlock_b_reparam": 95_520_680,
}
# the README's 16/33/56/95M: the re-parameterised totals without the auxiliary head
OFFICIAL_WITHOUT_AUX = {"vz_overlock_xt_reparam": 16_453_712, "vz_overlock_t_reparam": 33_467_040,
                        "vz_overlock_s_reparam": 56_156_452, "vz_overlock_b_reparam": 94_942_528}


@pytest.fixture(scope="module")
def fixture():
    return load_file(str(FIXTURES / "overlock_official_reduced.safetensors"))


def _group(tensors, prefix):
    return {k[len(prefix):]: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()
            if k.startswith(prefix)}


def _x(fixture, seed, size):
    return F.interpolate(fixture[f"out.seed_{seed}"], size=size, mode="bilinear", align_corners=False)


def _official_reparam_state(fixture):
    """The official ``reparam()`` state dict: the plain one without the dilated branches and the origin BNs, with
    the merged kernels (``lk_origin.weight`` and its new bias) stored by the fixture."""
    plain, merged = _group(fixture, "plain."), _group(fixture, "reparam.")
    kept = {k: v for k, v in plain.items() if ".dil_conv_" not in k and ".dil_bn_" not in k and ".origin_bn." not in k
            and ".lk_origin." not in k}
    return {**kept, **merged}


def _load(name, state, tmp_path, **kwargs):
    """``name`` (reduced, 10 classes) loaded strictly from a file holding ``state`` through timm's pretrained path."""
    path = tmp_path / "official.pth"
    torch.save(state, path)
    overlay = dict(file=str(path), num_classes=10)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **REDUCED, **kwargs).eval()


# ------------------------------------------------------------------------------------------------ registry

def test_variants_registered():
    assert set(timm.list_models("vz_overlock_*")) == set(OFFICIAL_PARAMS)
    assert set(FAMILY.deploy_only) == {n for n in OFFICIAL_PARAMS if n.endswith("_reparam")}


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_is_official(name):
    assert meta_param_count(name) == OFFICIAL_PARAMS[name]
    if name in OFFICIAL_WITHOUT_AUX:
        assert meta_param_count(name, aux_head=False) == OFFICIAL_WITHOUT_AUX[name]


def test_pretrained_cfgs_are_the_official_files_and_transforms():
    for name, crop in (("xt", 0.925), ("t", 0.95), ("s", 0.95), ("b", 0.975)):
        for suffix in ("", "_reparam"):
            cfg = timm.get_pretrained_cfg(f"vz_overlock_{name}{suffix}")
            assert cfg.url == f"https://github.com/LMMMEng/OverLoCK/releases/download/v1/overlock_{name}_in1k_224{suffix}.pth"
            assert cfg.crop_pct == crop and cfg.interpolation == "bicubic" and cfg.license == "apache-2.0"


@pytest.fixture(scope="module")
def official_keys():
    with gzip.open(FIXTURES / "overlock_official_keys.json.gz", "rt") as f:
        return json.load(f)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_official_key_layout_maps_onto_every_variant(name, official_keys):
    """Every official key (plain layout for the training forms, the deploy layout for ``*_reparam``) lands on a
    parameter or buffer of the same shape; none is left over."""
    layout = official_keys[name[len("vz_"):]]
    state = {k: torch.empty(shape, device="meta") for k, shape in layout}
    ours = meta_model(name)
    mapped = checkpoint_filter_fn(state, ours)
    expected = ours.state_dict()
    assert set(mapped) == set(expected)
    assert all(mapped[k].shape == expected[k].shape for k in mapped)
    assert len({official_to_ours(k) for k, _ in layout}) == len(layout)  # the renaming is one-to-one


# ------------------------------------------------------------------------------------------------ parity

def test_logits_match_the_official_model(fixture, tmp_path):
    """224 (the training size), 200x120 (non-square; stage maps 13x8 and 7x4 are upsampled to 21x13 and 12x7 for
    ContMix and pooled back) and 64x64 (4x4 and 2x2 maps)."""
    model = _load("vz_overlock_xt", _group(fixture, "plain."), tmp_path)
    with torch.no_grad():
        for key, size in (("224", (224, 224)), ("ns", (200, 120)), ("64", (64, 64))):
            expected = fixture[f"out.logits_{key}"]
            got = model(_x(fixture, "224" if key != "ns" else "ns", size))
            assert expected.abs().max() > 0.5  # the randomised weights give non-trivial logits
            # fp32, the same maths in another order (folded BNs, merged branches, fused affinity projection)
            assert (got - expected).abs().max() < 1e-4, key


def test_train_mode_and_auxiliary_head_match_the_official_model(fixture, tmp_path):
    """Training mode: batch statistics in every BatchNorm and the official ``dict(main, aux)`` as forward_train's
    ``logits`` / ``aux_logits``."""
    model = _load("vz_overlock_xt", _group(fixture, "plain."), tmp_path).train()
    with torch.no_grad():
        out = model.forward_train(_x(fixture, "train", (64, 96)))
    assert set(out) == {"logits", *FAMILY.aux_outputs}
    assert (out["logits"] - fixture["out.train_main"]).abs().max() < 1e-4
    assert (out["aux_logits"] - fixture["out.train_aux"]).abs().max() < 1e-4


def test_reparam_checkpoint_loads_strictly_into_the_reparam_form(fixture, tmp_path):
    model = _load("vz_overlock_xt_reparam", _official_reparam_state(fixture), tmp_path)
    with torch.no_grad():
        for key, seed, size in (("224", "224", (224, 224)), ("ns", "ns", (200, 120))):
            assert (model(_x(fixture, seed, size)) - fixture[f"out.reparam_logits_{key}"]).abs().max() < 1e-4


def test_plain_checkpoint_loads_into_the_reparam_form(fixture, tmp_path):
    """A training-form checkpoint is merged on load (the official reparam variants need their own files)."""
    model = _load("vz_overlock_xt_reparam", _group(fixture, "plain."), tmp_path)
    with torch.no_grad():
        assert (model(_x(fixture, "224", (224, 224))) - fixture["out.reparam_logits_224"]).abs().max() < 1e-4


def test_reparam_checkpoint_is_refused_by_the_training_form(fixture, tmp_path):
    with pytest.raises(ValueError, match="re-parameterised OverLoCK checkpoint.*_reparam"):
        _load("vz_overlock_xt", _official_reparam_state(fixture), tmp_path)


def test_reparam_keeps_outputs_and_gives_the_reparam_layout(fixture, tmp_path):
    """``model.reparam()`` and ``timm.utils.reparameterize_model`` merge the branches in place: outputs unchanged
    (fp32, 1e-4), state dict = the ``*_reparam`` variant's, which the official reparam layout maps onto."""
    from timm.utils import reparameterize_model

    model = _load("vz_overlock_xt", _group(fixture, "plain."), tmp_path)
    x = _x(fixture, "ns", (200, 120))
    with torch.no_grad():
        before = model(x)
        merged = reparameterize_model(model)  # a copy
        in_place = model.reparam()
        for m in (merged, in_place):
            assert (m(x) - before).abs().max() < 1e-4
    assert not any(isinstance(m, DilatedReparamConv) and not m.deploy for m in merged.modules())
    deploy = timm.create_model("vz_overlock_xt_reparam", **REDUCED)
    shapes = {k: v.shape for k, v in deploy.state_dict().items()}
    assert {k: v.shape for k, v in in_place.state_dict().items()} == shapes
    assert {k: v.shape for k, v in checkpoint_filter_fn(_official_reparam_state(fixture), deploy).items()} == shapes


def test_reparam_variants_take_model_kwargs():
    """The official ``*_reparam`` factories ignore their kwargs; ours build what is asked."""
    model = timm.create_model("vz_overlock_xt_reparam", num_classes=7, **{k: v for k, v in REDUCED.items()
                                                                         if k != "num_classes"})
    assert model.deploy and model.head.fc.out_features == 7 and model.aux_head.fc.out_features == 7


def test_merged_branches_equal_the_branch_sum():
    """The eval-mode merge (also what reparam() stores) against the branches run separately, with eval BNs."""
    torch.manual_seed(0)
    block = DilatedReparamConv(6, 13)
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
            m.weight.data.normal_()
            m.bias.data.normal_()
    block.eval()
    x = torch.randn(2, 6, 15, 11)
    with torch.no_grad():
        expected = block.bn(block.conv(x)) + sum(branch(x) for branch in block.branches.values())
        assert (block(x) - expected).abs().max() < 1e-5
        weight, bias = merge_dilated_branches(block.conv.weight, None, block.bn,
                                              [(b.conv.weight, b.bn, b.dilation) for b in block.branches.values()])
        assert weight.shape == (6, 1, 13, 13)
    assert [tuple(map(int, k[1:].split("_"))) for k in block.branches] == list(DRB_BRANCHES[13])


# ------------------------------------------------------------------------------------------------ det / seg

@pytest.mark.parametrize("task", ["det", "seg"])
def test_official_dense_backbones_load_and_match(task, fixture, tmp_path):
    """The backbone part of an official Mask R-CNN (extra_norm.0-4, h_proj: the context added back at stride 32)
    or UperNet checkpoint (extra_norm.0-3, dense_context=False) loads, every key, and gives the official outputs."""
    pytest.importorskip("mmdet", reason="the mm stack is not installed (bash tools/setup.sh --mm)")
    from visionzoo.mm import VisionZooBackbone

    plain = {k: v for k, v in _group(fixture, "plain.").items() if not k.startswith(("head.", "aux_head."))}
    state = {f"backbone.{k}": v for k, v in {**plain, **_group(fixture, f"{task}.")}.items()}
    state["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)
    path = tmp_path / f"official_{task}.pth"
    torch.save({"meta": {}, "state_dict": state}, path)
    backbone = VisionZooBackbone("vz_overlock_xt", init_cfg=dict(type="Pretrained", checkpoint=str(path),
                                                                 prefix="backbone."),
                                 dense_context=task == "det", **REDUCED).eval()
    backbone.init_weights()
    assert backbone.init_report["new"] == []
    assert backbone.out_channels == [8, 16, 32 + 12, 48 + 12]
    x = F.interpolate(fixture["out.seed_det"], size=(128, 96), mode="bilinear", align_corners=False)
    with torch.no_grad():
        outs = backbone(x)
    for i, out in enumerate(outs):
        assert (out - fixture[f"out.{task}.{i}"]).abs().max() < 1e-4, i


# ------------------------------------------------------------------------------------------------ behaviour

def test_key_is_pooled_to_7x7_and_small_maps_are_restored():
    """The key has 49 region tokens at any size (the weights' 49 -> K^2 + S^2 projection); maps with a side below K
    are processed at the upsampled size and pooled back to their own."""
    torch.manual_seed(0)
    block = ContMixBlock(16, 8, 13, 2, 3, 1.0, 0.0, first=True).eval()
    assert block.weight_proj.in_features == 49 and block.weight_proj.out_features == 13 ** 2 + 5 ** 2
    seen = []
    block.key.register_forward_hook(lambda m, i, o: seen.append(o.shape[-2:]))
    for size in ((5, 9), (40, 28)):
        x, ctx = torch.randn(1, 16, *size), torch.randn(1, 8, *size)
        with torch.no_grad():
            assert block(x, ctx, ctx).shape == (1, 24, *size)
    assert seen == [(7, 7), (7, 7)]


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match="multiple of 4 \\* num_heads"):
        ContMixBlock(20, 8, 13, 2, 3, 1.0, 0.0, first=True)
    with pytest.raises(ValueError, match="kernel sizes"):
        DilatedReparamConv(8, 12)
    with pytest.raises(ValueError, match="sub_depths"):
        timm.create_model("vz_overlock_xt", sub_depths=(2,))


def test_checkpoint_of_another_shape_names_the_tensors(fixture):
    state = _group(fixture, "plain.")
    state["sub_blocks3.0.rpb2"] = torch.zeros(2, 23, 23)  # a table for k = 12: not this model's
    with pytest.raises(ValueError, match=r"shape mismatch.*stages\.4\.blocks\.0\.rpb2 \(2, 23, 23\) vs \(2, 25, 25\)"):
        checkpoint_filter_fn(state, timm.create_model("vz_overlock_xt", **REDUCED))
