"""L²ViT against the official code (ChuanyangZheng/L2ViT@fad0341cf0c31464482d0550fb3127001b4b921b).

Parity fixtures (``tests/fixtures/l2vit-reduced-checkpoint-best-ema.pth`` and ``l2vit_official_io.safetensors``) were
made by running the official ``classification/models/l2vit.py`` (and the official detection backbone
``object_detection/mmdet/models/backbones/l2vit.py``, its mm imports stubbed) in a throwaway venv (timm 1.0.31,
torch 2.14.1, CPU, fp32), never committed. Recipe:

* ``L2ViT(num_classes=10, dims=[8, 16, 16, 24], depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 3], mlp_ratio=[4.] * 4,
  block_type='mix_local_enhanced_vit', conv_stem=True)``: every block kind in every stage; every parameter and
  buffer redrawn (generator seed 1): running variances U(0.5, 1.5), temperatures U(0.1, 0.4), 1-D weights
  1 + 0.2 N(0, 1), other 1-D tensors 0.3 N(0, 1), the rest 0.25 N(0, 1). With these the linear layers' denominators
  are clamped at 100 for 0 %, 0 %, 2 % and 64 % of the queries of stages 1-4: both sides of the clamp are exercised.
* inputs ``torch.randn`` (seed 0) rounded to fp16 (stored as fp16, used as fp32): 1x3x224x224 and 1x3x150x230 (not a
  multiple of 4: the stem, downsampling and window padding all act); eval logits at both, and train-mode logits
  (BatchNorm batch statistics) of the non-square input and its mirror image as a batch of 2.
* the detection backbone (``out_indices=[0, 1, 2, 3]``) with the same weights minus ``head``/``norm`` plus redrawn
  ``norm0..3`` (seed 2): its four outputs at 150x230.
* the checkpoint is saved as the release files are (ConvNeXt's ``utils.save_model`` at ``epoch="best-ema"``): ``model``
  (here: the weights plus 0.05 N(0, 1), then one AdamW step), ``optimizer`` (AdamW state), ``epoch``, ``scaler``,
  ``args`` (an ``argparse.Namespace`` with a ``PosixPath``) and ``model_ema`` (the weights the outputs came from).
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from visionzoo.kernels import use_backend
from visionzoo.models._checkpoint import read_checkpoint
from visionzoo.models.l2vit import FAMILY, checkpoint_filter_fn

from ..conftest import meta_model, meta_param_count

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CHECKPOINT = FIXTURES / "l2vit-reduced-checkpoint-best-ema.pth"
FIXTURE_CFG = dict(embed_dims=(8, 16, 16, 24), depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 3), num_classes=10)

# classification/models/l2vit.py factories at 1000 classes (param-counts.md), and the 22k head (21841 classes)
OFFICIAL_PARAMS = {
    "vz_l2vit_tiny": 28_596_781, "vz_l2vit_small": 50_199_157, "vz_l2vit_base": 88_577_188,
    "vz_l2vit_base_384": 88_577_188,
}
OFFICIAL_BASE_22K_PARAMS = 109_939_213
OFFICIAL_ARCHS = {  # (dims, depths, heads) of L2ViT_Tiny / _Small / _Base / _Base_384
    "vz_l2vit_tiny": ((96, 192, 384, 768), (2, 2, 6, 2), (3, 6, 12, 24)),
    "vz_l2vit_small": ((96, 192, 384, 768), (2, 2, 18, 2), (3, 6, 12, 24)),
    "vz_l2vit_base": ((128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32)),
    "vz_l2vit_base_384": ((128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32)),
}


def official_layout(dims, depths, heads, num_classes=1000, det=False):
    """{key: shape} of the official state dict, written from the official module definitions (``L2ViT`` with
    ``conv_stem=True``, ``block_type='mix_local_enhanced_vit'``; ``det``: the mmdet backbone, with ``norm0..3``
    instead of ``norm`` and ``head``). Checked against the real official state dict of the fixture."""
    def bn(prefix, c):
        return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}

    def lin(prefix, out, inp):
        return {f"{prefix}.weight": (out, inp), f"{prefix}.bias": (out,)}

    def ln(prefix, c):
        return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,)}

    def dw(prefix, c, k):
        return {f"{prefix}.weight": (c, 1, k, k), f"{prefix}.bias": (c,)}

    c0 = dims[0]
    stem = "downsample_layers.0.proj.proj"
    keys = {f"{stem}.0.weight": (c0 // 2, 3, 3, 3), f"{stem}.0.bias": (c0 // 2,), **bn(f"{stem}.1", c0 // 2),
            f"{stem}.3.weight": (c0, c0 // 2, 3, 3), f"{stem}.3.bias": (c0,), **bn(f"{stem}.4", c0),
            **ln("downsample_layers.0.norm", c0)}
    for i in range(1, 4):
        keys.update(ln(f"downsample_layers.{i}.norm", dims[i - 1]))
        keys.update({f"downsample_layers.{i}.proj.weight": (dims[i], dims[i - 1], 2, 2),
                     f"downsample_layers.{i}.proj.bias": (dims[i],)})
    for s, (c, depth, h) in enumerate(zip(dims, depths, heads)):
        for j in range(depth):
            p = f"stages.{s}.{j}"
            keys.update({**ln(f"{p}.norm1", c), **lin(f"{p}.attn.qkv", 3 * c, c), **lin(f"{p}.attn.proj", c, c),
                         **ln(f"{p}.norm2", c), **lin(f"{p}.mlp.fc1", 4 * c, c), **lin(f"{p}.mlp.fc2", c, 4 * c),
                         **dw(f"{p}.cpe.0.proj", c, 3)})
            if j % 2 == 0:  # LWABlock
                keys.update(dw(f"{p}.cpe.1.proj", c, 3))
            else:  # LGABlock(enhanced=True)
                keys.update({f"{p}.attn.temperature": (h, 1, 1), **ln(f"{p}.norm3", c),
                             **dw(f"{p}.local_mp.conv1", c, 7), **bn(f"{p}.local_mp.bn", c),
                             **dw(f"{p}.local_mp.conv2", c, 7)})
    if det:
        for i in range(4):
            keys.update(ln(f"norm{i}", dims[i]))
    else:
        keys.update({**ln("norm", dims[-1]), **lin("head", num_classes, dims[-1])})
    return keys


@pytest.fixture(scope="module")
def io():
    return {k: v.float() for k, v in load_file(str(FIXTURES / "l2vit_official_io.safetensors")).items()}


@pytest.fixture(scope="module")
def official_checkpoint():
    return read_checkpoint(str(CHECKPOINT))


def _from_fixture(**kwargs):
    """The reduced model, loaded from the official-format file through timm's pretrained path."""
    overlay = dict(file=str(CHECKPOINT), num_classes=FIXTURE_CFG["num_classes"])
    return timm.create_model("vz_l2vit_tiny", pretrained=True, pretrained_cfg_overlay=overlay,
                             **dict(FIXTURE_CFG, **kwargs))


# ------------------------------------------------------------------------------------------- registry, counts, keys

def test_variants_and_tags_registered():
    assert set(timm.list_models("vz_l2vit_*")) == set(OFFICIAL_PARAMS)
    assert set(timm.list_pretrained("vz_l2vit_*")) == {
        "vz_l2vit_tiny.in1k", "vz_l2vit_small.in1k", "vz_l2vit_base.in1k", "vz_l2vit_base.in22k",
        "vz_l2vit_base.in22k_ft_in1k", "vz_l2vit_base_384.in22k_ft_in1k"}
    cfg = timm.get_pretrained_cfg("vz_l2vit_base.in22k")
    assert cfg.num_classes == 21841 and cfg.url.endswith("L2ViT-Base-22k-pretrain-checkpoint-best.pth")
    cfg384 = timm.get_pretrained_cfg("vz_l2vit_base_384.in22k_ft_in1k")
    assert cfg384.input_size == (3, 384, 384) and cfg384.crop_pct == 1.0 and cfg384.crop_mode == "squash"
    assert timm.get_pretrained_cfg("vz_l2vit_tiny.in1k").crop_pct == 0.875


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_is_official(name):
    assert meta_param_count(name) == OFFICIAL_PARAMS[name]


def test_in22k_parameter_count_is_official():
    with torch.device("meta"):
        model = timm.create_model("vz_l2vit_base", pretrained_cfg="in22k")
    assert model.num_classes == 21841
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_BASE_22K_PARAMS


def test_official_layout_generator_is_the_real_one(official_checkpoint):
    """The key/shape generator used for the full-size maps below reproduces the official state dict exactly."""
    real = {k: tuple(v.shape) for k, v in official_checkpoint["model_ema"].items()}
    dims, depths, heads = (8, 16, 16, 24), (2, 2, 2, 2), (1, 2, 2, 3)
    assert official_layout(dims, depths, heads, num_classes=10) == real


@pytest.mark.parametrize("name", sorted(OFFICIAL_ARCHS))
def test_official_checkpoint_maps_onto_every_variant(name):
    """Every official key lands on a parameter/buffer of the same shape, none left over (meta device)."""
    ours = meta_model(name)
    official = {k: torch.empty(s, device="meta") for k, s in official_layout(*OFFICIAL_ARCHS[name]).items()}
    mapped = checkpoint_filter_fn(official, ours)
    ours_state = ours.state_dict()
    assert set(mapped) == set(ours_state)
    assert all(mapped[k].shape == ours_state[k].shape for k in mapped)
    assert len(mapped) == len(official)


# ------------------------------------------------------------------------------------------------------ parity

@pytest.mark.parametrize("size", ["224", "ns"])
def test_logits_match_official(size, io, caplog):
    """fp32, the same maths in another order (channels-last maps, two-phase linear attention): <5e-7 measured."""
    with caplog.at_level(logging.INFO, logger="visionzoo"):
        model = _from_fixture().eval()
    assert "weights from 'model_ema'" in caplog.text  # a *-best-ema.pth file: the EMA weights
    with torch.no_grad():
        got = model(io[f"input_{size}"])
    expected = io[f"logits_{size}"]
    assert expected.abs().max() > 0.5
    assert (got - expected).abs().max() < 1e-4


def test_train_mode_matches_official(io):
    """Batch statistics in the stem's and the LCMs' BatchNorms (no BN folding in training)."""
    model = _from_fixture().train()
    x = torch.cat([io["input_ns"], io["input_ns"].flip(-1)])
    with torch.no_grad():
        got = model(x)
    assert (got - io["logits_train"]).abs().max() < 1e-4


def test_reference_kernels_agree_at_the_official_padding(io):
    """The zero tokens padded in by the model are real inputs of the kernels: every backend sees the same map."""
    model = _from_fixture().eval()
    with torch.no_grad():
        fast = model(io["input_ns"])
        with use_backend("reference"):
            ref = model(io["input_ns"])
    assert (fast - ref).abs().max() < 1e-5


def test_masked_window_padding_is_an_option(io):
    """``masked_window_padding=True`` masks the padded tokens (kernel rule): the same at whole windows, different
    where the map is padded; every backend agrees on it."""
    official = _from_fixture().eval()
    masked = _from_fixture(masked_window_padding=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(masked(io["input_224"]), official(io["input_224"]))
        got = masked(io["input_ns"])
        assert (got - official(io["input_ns"])).abs().max() > 1e-3
        with use_backend("reference"):
            torch.testing.assert_close(masked(io["input_ns"]), got, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ which weights load

def _save_release_style(path, checkpoint):
    torch.save(checkpoint, path)
    return str(path)


@pytest.mark.parametrize("file_name,expected_key", [
    ("L2ViT-Tiny-checkpoint-best-ema.pth", "model_ema"),   # saved when the EMA evaluated best
    ("L2ViT-Base-22k21k-finetune-224-checkpoint-best.pth", "model"),  # saved when the raw weights evaluated best
    ("weights.pth", "model_ema"),  # anything else: timm's order, the EMA copy first
])
def test_wrapper_key_follows_the_file_name(file_name, expected_key, official_checkpoint, tmp_path, caplog):
    path = _save_release_style(tmp_path / file_name, dict(official_checkpoint))
    model = timm.create_model("vz_l2vit_tiny", **FIXTURE_CFG)
    with caplog.at_level(logging.INFO, logger="visionzoo"):
        model.load_pretrained(path)
    assert f"weights from {expected_key!r}" in caplog.text
    for k, v in model.state_dict().items():
        if k.startswith("stages.1.blocks.1.attn."):
            key = k.replace("stages.1.blocks.1.", "stages.1.1.")
            assert torch.equal(v, official_checkpoint[expected_key][key]), k


def test_in22k_checkpoint_loads_with_its_head(official_checkpoint, tmp_path):
    """A 21841-class file loads into the in22k model; the 1000-class models drop its head (timm's rule)."""
    state = dict(official_checkpoint["model"])
    state["head.weight"] = torch.randn(21841, 24)
    state["head.bias"] = torch.randn(21841)
    path = _save_release_style(tmp_path / "L2ViT-Base-22k-pretrain-checkpoint-best.pth", {"model": state})
    kwargs = {k: v for k, v in FIXTURE_CFG.items() if k != "num_classes"}
    model = timm.create_model("vz_l2vit_base", pretrained=True, pretrained_cfg="in22k",
                              pretrained_cfg_overlay=dict(file=path), **kwargs)
    assert model.num_classes == 21841 and torch.equal(model.head.fc.bias, state["head.bias"])
    small = timm.create_model("vz_l2vit_base", pretrained=True, pretrained_cfg="in22k", num_classes=5,
                              pretrained_cfg_overlay=dict(file=path), **kwargs)
    assert small.head.fc.out_features == 5


# ----------------------------------------------------------------------------------------------- det / seg

def test_official_detection_backbone_checkpoint_loads(io, official_checkpoint, tmp_path):
    """The backbone part of an official mmdet checkpoint (``backbone.*`` with ``norm0..3``, no head or final norm)
    loads through the det/seg hook, and the backbone gives the official detection backbone's outputs."""
    pytest.importorskip("mmdet", reason="the mm stack is not installed (bash tools/setup.sh --mm)")
    from visionzoo.mm import VisionZooBackbone

    weights = official_checkpoint["model_ema"]
    state = {f"backbone.{k}": v for k, v in weights.items() if not k.startswith(("head.", "norm."))}
    state.update({f"backbone.{k[len('det.'):]}": v for k, v in io.items() if k.startswith("det.")})
    state["neck.lateral_convs.0.conv.weight"] = torch.zeros(4, 8, 1, 1)  # the rest of a detector
    path = tmp_path / "mask_rcnn_l2vit.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": state}, path)
    kwargs = {k: v for k, v in FIXTURE_CFG.items() if k != "num_classes"}
    backbone = VisionZooBackbone("vz_l2vit_tiny", init_cfg=dict(type="Pretrained", checkpoint=str(path),
                                                                prefix="backbone."), **kwargs)
    backbone.init_weights()
    assert not backbone.init_report["new"]  # the output norms came from norm0..3
    backbone.eval()
    with torch.no_grad():
        outs = backbone(io["input_ns"])
    for i, out in enumerate(outs):
        assert (out - io[f"det_out{i}"]).abs().max() < 1e-4, i


def test_detection_backbone_honours_window_size():
    """The official mm backbone never passes window_size on (always 7); ours builds what it is given."""
    pytest.importorskip("mmdet", reason="the mm stack is not installed (bash tools/setup.sh --mm)")
    from visionzoo.mm import VisionZooBackbone

    backbone = VisionZooBackbone("vz_l2vit_tiny", window_size=12, **FAMILY.reduced_kwargs())
    windows = {m.window_size for m in backbone.modules() if type(m).__name__ == "WindowAttention"}
    assert windows == {12}


# ----------------------------------------------------------------------------------------------- inputs, errors

def test_minimum_input_and_odd_sizes():
    model = timm.create_model("vz_l2vit_tiny", **FAMILY.reduced_kwargs()).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 64, 1, 1)
        assert model.forward_features(torch.randn(1, 3, 33, 97)).shape == (1, 64, 2, 4)
    with pytest.raises(ValueError, match="smaller than the minimum 32x32"):
        model(torch.randn(1, 3, 31, 64))


@pytest.mark.parametrize("kwargs,message", [
    (dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 5, 4)), "multiple of its head count"),
    (dict(depths=(2, 2, 2)), "one value per stage"),
    (dict(window_size=0), "window_size must be a positive int"),
    (dict(mlp_ratio=(4.0, 4.0)), "one value per stage"),
])
def test_bad_configurations_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        timm.create_model("vz_l2vit_tiny", **kwargs)


def test_checkpoint_of_another_architecture_is_named(official_checkpoint):
    model = timm.create_model("vz_l2vit_tiny", **FAMILY.reduced_kwargs())
    with pytest.raises(ValueError, match="shape mismatch"):
        checkpoint_filter_fn(official_checkpoint["model"], model)
