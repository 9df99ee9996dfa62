"""RAVLT against the official code (qhfan/RALA@a86314f62103c21a1c7e6d826fe4cb0f5586e7b0).

Parity fixtures (``tests/fixtures/ravlt_reduced_checkpoint.pth`` and ``ravlt_official_io.safetensors``) were made by
running the official ``classfication/RALA.py`` (and the official detection backbone ``GLTA`` of
``detection/mmdet/models/backbones/RALA.py``, its mm imports stubbed; SyncBatchNorm in eval mode) in a throwaway venv
(timm 1.0.31, einops, fvcore, torch 2.14.1, CPU, fp32), never committed. Recipe:

* ``RAVLT(num_classes=10, embed_dims=[8, 16, 16, 32], depths=[1, 1, 2, 1], num_heads=[1, 1, 1, 2],
  mlp_ratios=[3.5] * 4, projection=64, layerscales=[True] * 4, layer_init_values=[1.0] * 4, drop_path_rate=0.0)``
  with the official per-stage flags (linear, linear, softmax, softmax; head dims 8, 16, 16, 16); every parameter and
  buffer redrawn (generator seed 1) except the RoPE ``angle`` buffers (the formula's, never trained): running
  variances U(0.5, 1.5), layer scales 0.5 + 0.2 N(0, 1), 1-D weights 1 + 0.2 N(0, 1), other 1-D tensors 0.2 N(0, 1),
  the rest N(0, 1 / fan_in).
* inputs ``torch.randn`` (seed 0) rounded to fp16 (stored as fp16, used as fp32): 1x3x224x224 and 1x3x150x230; eval
  logits at both, train-mode logits (BatchNorm batch statistics) of the non-square input and its mirror image.
* the detection backbone (``out_indices=(0, 1, 2, 3)``) with the same weights minus ``proj``/``norm``/``head`` plus
  redrawn ``extra_norms.{i}`` (seed 2): its four outputs at 150x230.
* the checkpoint is saved as the official main.py saves it (DeiT style): ``model`` (the weights the outputs came from,
  after one AdamW step was taken and undone), ``optimizer``, ``lr_scheduler``, ``epoch``, ``model_ema`` (made
  different: the weights plus 0.05 N(0, 1)), ``scaler``, ``args`` (an ``argparse.Namespace`` with a ``PosixPath``) and
  ``max_accuracy`` (a numpy float64).
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from visionzoo.models._checkpoint import read_checkpoint
from visionzoo.models.ravlt import FAMILY, apply_rope, checkpoint_filter_fn, rope_tables

from ..conftest import meta_model, meta_param_count

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CHECKPOINT = FIXTURES / "ravlt_reduced_checkpoint.pth"
FIXTURE_CFG = dict(embed_dims=(8, 16, 16, 32), depths=(1, 1, 2, 1), num_heads=(1, 1, 1, 2), projection=64,
                   num_classes=10)

# classfication/RALA.py factories (param-counts.md); (dims, depths, heads) of each
OFFICIAL_PARAMS = {"vz_ravlt_t": 14_897_768, "vz_ravlt_s": 25_591_208, "vz_ravlt_b": 48_241_288,
                   "vz_ravlt_l": 95_242_440}
OFFICIAL_ARCHS = {
    "vz_ravlt_t": ((64, 128, 256, 512), (2, 2, 6, 2), (1, 2, 4, 8)),
    "vz_ravlt_s": ((64, 128, 320, 512), (3, 5, 9, 3), (1, 2, 5, 8)),
    "vz_ravlt_b": ((96, 192, 384, 512), (4, 6, 12, 6), (1, 2, 6, 8)),
    "vz_ravlt_l": ((96, 192, 448, 640), (4, 7, 19, 8), (1, 2, 7, 10)),
}


def official_layout(dims, depths, heads, num_classes=1000, projection=1024, det=False):
    """{key: shape} of the official state dict, written from the official module definitions (``RAVLT`` with
    mlp ratio 3.5 and layer scales; ``det``: the ``GLTA`` backbone, with ``extra_norms`` instead of the head).
    Checked against the real official state dict of the fixture."""
    def bn(prefix, c):
        return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}

    def conv(prefix, out, inp, k, groups=1):
        return {f"{prefix}.weight": (out, inp // groups, k, k), f"{prefix}.bias": (out,)}

    c0, h0 = dims[0], dims[0] // 2
    keys = {**conv("patch_embed.proj.0", h0, 3, 3), **bn("patch_embed.proj.1", h0),
            **conv("patch_embed.proj.3", h0, h0, 3), **bn("patch_embed.proj.4", h0),
            **conv("patch_embed.proj.6", h0, h0, 3), **bn("patch_embed.proj.7", h0),
            **conv("patch_embed.proj.9", c0, h0, 3), **bn("patch_embed.proj.10", c0)}
    for i, (c, depth, h) in enumerate(zip(dims, depths, heads)):
        f = int(3.5 * c)
        keys[f"layers.{i}.RoPE.angle"] = (c // h // 2,)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}"
            keys.update({**conv(f"{p}.pos", c, c, 3, groups=c), f"{p}.norm1.norm.weight": (c,),
                         f"{p}.norm1.norm.bias": (c,), **conv(f"{p}.attn.qkvo", 4 * c, c, 1),
                         **conv(f"{p}.attn.lepe", c, c, 5, groups=c), **conv(f"{p}.attn.proj", c, c, 1),
                         f"{p}.norm2.norm.weight": (c,), f"{p}.norm2.norm.bias": (c,),
                         **conv(f"{p}.ffn.fc1", f, c, 1), **conv(f"{p}.ffn.fc2", c, f, 1),
                         **conv(f"{p}.ffn.dwconv", f, f, 3, groups=f),
                         f"{p}.gamma_1": (1, c, 1, 1), f"{p}.gamma_2": (1, c, 1, 1)})
        if i < len(dims) - 1:
            keys.update({**conv(f"layers.{i}.downsample.reduction", dims[i + 1], c, 3),
                         **bn(f"layers.{i}.downsample.norm", dims[i + 1])})
    if det:
        for i, c in enumerate(dims):
            keys.update({f"extra_norms.{i}.norm.weight": (c,), f"extra_norms.{i}.norm.bias": (c,)})
    else:
        keys.update({**conv("proj", projection, dims[-1], 1), **bn("norm", projection),
                     **conv("head", num_classes, projection, 1)})
    return keys


@pytest.fixture(scope="module")
def io():
    return {k: v.float() for k, v in load_file(str(FIXTURES / "ravlt_official_io.safetensors")).items()}


@pytest.fixture(scope="module")
def official_checkpoint():
    return read_checkpoint(str(CHECKPOINT))


def _from_fixture(**kwargs):
    overlay = dict(file=str(CHECKPOINT), num_classes=FIXTURE_CFG["num_classes"])
    return timm.create_model("vz_ravlt_t", pretrained=True, pretrained_cfg_overlay=overlay,
                             **dict(FIXTURE_CFG, **kwargs))


def _meta_state(layout):
    return {k: torch.empty(s, device="meta") for k, s in layout.items()}


# ------------------------------------------------------------------------------------------- registry, counts, keys

def test_variants_and_tags_registered():
    assert set(timm.list_models("vz_ravlt_*")) == set(OFFICIAL_PARAMS)
    assert set(timm.list_pretrained("vz_ravlt_*")) == {f"{n}.in1k" for n in OFFICIAL_PARAMS}
    cfg = timm.get_pretrained_cfg("vz_ravlt_s.in1k")
    assert cfg.url == "https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth"
    assert cfg.crop_pct == 0.875 and cfg.interpolation == "bicubic"


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_is_official(name):
    assert meta_param_count(name) == OFFICIAL_PARAMS[name]


def test_factories_take_num_classes_and_drop_path():
    """The official factories take only ``args`` and fix both; ours pass them on."""
    model = timm.create_model("vz_ravlt_t", num_classes=7, drop_path_rate=0.2, **{
        k: v for k, v in FAMILY.reduced.items()})
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert model.num_classes == 7 and max(rates) == pytest.approx(0.2)


def test_the_official_models_are_hybrids():
    """Stages 1-2 RALA linear attention, stages 3-4 softmax attention (qhfan/RALA#9); the choice is declared."""
    for name in OFFICIAL_PARAMS:
        kinds = [[b.attn.kind for b in stage.blocks] for stage in meta_model(name).stages]
        assert [set(k) for k in kinds] == [{"linear"}, {"linear"}, {"softmax"}, {"softmax"}], name
    pure = timm.create_model("vz_ravlt_t", stage_attention="linear", **FAMILY.reduced_kwargs()).eval()
    assert {b.attn.kind for s in pure.stages for b in s.blocks} == {"linear"}
    with torch.no_grad():
        assert pure(torch.randn(1, 3, 64, 96)).shape == (1, 1000)


def test_official_layout_generator_is_the_real_one(official_checkpoint):
    real = {k: tuple(v.shape) for k, v in official_checkpoint["model"].items()}
    dims, depths, heads = (8, 16, 16, 32), (1, 1, 2, 1), (1, 1, 1, 2)
    assert official_layout(dims, depths, heads, num_classes=10, projection=64) == real


@pytest.mark.parametrize("name", sorted(OFFICIAL_ARCHS))
def test_official_checkpoint_maps_onto_every_variant(name):
    """Every official key lands on a parameter/buffer of the same shape (the RoPE angle buffers are dropped,
    one per stage), none left over (meta device)."""
    ours = meta_model(name)
    layout = official_layout(*OFFICIAL_ARCHS[name])
    mapped = checkpoint_filter_fn(_meta_state(layout), ours)
    ours_state = ours.state_dict()
    assert set(mapped) == set(ours_state)
    assert all(mapped[k].shape == ours_state[k].shape for k in mapped)
    assert len(mapped) == len(layout) - 4


# ------------------------------------------------------------------------------------------------------ parity

@pytest.mark.parametrize("size", ["224", "ns"])
def test_logits_match_official(size, io, caplog):
    """fp32; the eval model folds its BatchNorms and computes in another order: ~2e-6 measured (logits up to 12)."""
    with caplog.at_level(logging.INFO, logger="visionzoo"):
        model = _from_fixture().eval()
    assert "weights from 'model'" in caplog.text  # the official eval reads `model`, not the EMA copy
    with torch.no_grad():
        got = model(io[f"input_{size}"])
    expected = io[f"logits_{size}"]
    assert expected.abs().max() > 1
    assert (got - expected).abs().max() < 1e-4


def test_train_mode_matches_official(io):
    model = _from_fixture().train()
    x = torch.cat([io["input_ns"], io["input_ns"].flip(-1)])
    with torch.no_grad():
        got = model(x)
    assert (got - io["logits_train"]).abs().max() < 1e-4


def _rotate_every_two(x):
    """The official helper, re-derived: pairs (a, b) -> (-b, a)."""
    return torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).flatten(-2)


@pytest.mark.parametrize("height,width,head_dim", [(5, 7, 16), (1, 3, 8), (6, 4, 64)])
def test_rope_is_the_official_formula(height, width, head_dim):
    """x * cos + rotate_every_two(x) * sin with the official (h, w, d) tables: angle repeated per pair, rows on the
    first half of the channels, columns on the second."""
    angle = (1.0 / (10000 ** torch.linspace(0, 1, head_dim // 4))).unsqueeze(-1).repeat(1, 2).flatten()
    ih, iw = torch.arange(height).float(), torch.arange(width).float()
    sin = torch.cat([torch.sin(ih[:, None] * angle)[:, None].expand(height, width, -1),
                     torch.sin(iw[:, None] * angle)[None].expand(height, width, -1)], -1)
    cos = torch.cat([torch.cos(ih[:, None] * angle)[:, None].expand(height, width, -1),
                     torch.cos(iw[:, None] * angle)[None].expand(height, width, -1)], -1)
    x = torch.randn(2, 3, height, width, head_dim)
    expected = x * cos + _rotate_every_two(x) * sin
    c, s = rope_tables(height, width, head_dim)
    torch.testing.assert_close(apply_rope(x, c, s), expected, atol=1e-6, rtol=1e-6)


def test_wrong_rope_angles_are_refused(official_checkpoint):
    state = dict(official_checkpoint["model"])
    state["layers.0.RoPE.angle"] = state["layers.0.RoPE.angle"] * 2
    model = timm.create_model("vz_ravlt_t", **FIXTURE_CFG)
    with pytest.raises(ValueError, match="RoPE frequency table"):
        checkpoint_filter_fn(state, model)


def test_bf16_autocast_logit_difference_is_small(io):
    """bf16 autocast against fp32 on the fixture (the linear attention accumulates in fp32 either way)."""
    model = _from_fixture().eval()
    with torch.no_grad():
        ref = model(io["input_224"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(io["input_224"]).float()
    assert (low - ref).abs().max() < 0.05 * ref.abs().max()


# ----------------------------------------------------------------------------------------------- det / seg

def test_official_detection_backbone_checkpoint_loads(io, official_checkpoint, tmp_path):
    """The backbone part of an official mmdet checkpoint (``backbone.*`` with ``extra_norms.{i}.norm`` and the RoPE
    angle buffers, no head) loads through the det/seg hook; the outputs are the official GLTA backbone's."""
    pytest.importorskip("mmdet", reason="the mm stack is not installed (bash tools/setup.sh --mm)")
    from visionzoo.mm import VisionZooBackbone

    weights = official_checkpoint["model"]
    state = {f"backbone.{k}": v for k, v in weights.items() if not k.startswith(("head.", "norm.", "proj."))}
    state.update({f"backbone.{k[len('det.'):]}": v for k, v in io.items() if k.startswith("det.")})
    state["neck.lateral_convs.0.conv.weight"] = torch.zeros(4, 8, 1, 1)
    path = tmp_path / "maskrcnn_t_1x_12_epoch.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": state}, path)
    kwargs = {k: v for k, v in FIXTURE_CFG.items() if k != "num_classes"}
    backbone = VisionZooBackbone("vz_ravlt_t", init_cfg=dict(type="Pretrained", checkpoint=str(path),
                                                             prefix="backbone."), **kwargs)
    backbone.init_weights()
    assert not backbone.init_report["new"]  # the output norms came from extra_norms.{i}.norm
    backbone.eval()
    with torch.no_grad():
        outs = backbone(io["input_ns"])
    for i, out in enumerate(outs):
        assert (out - io[f"det_out{i}"]).abs().max() < 1e-4, i


def test_classification_checkpoint_into_the_backbone_reads_model(official_checkpoint, tmp_path):
    """The det/seg backbone takes ``model`` from an official classification file too (as the official mm loader
    does), not the EMA copy."""
    pytest.importorskip("mmdet", reason="the mm stack is not installed (bash tools/setup.sh --mm)")
    from visionzoo.mm import VisionZooBackbone

    path = tmp_path / "RAVLT_T.pth"
    torch.save(dict(official_checkpoint), path)
    kwargs = {k: v for k, v in FIXTURE_CFG.items() if k != "num_classes"}
    backbone = VisionZooBackbone("vz_ravlt_t", init_cfg=dict(type="Pretrained", checkpoint=str(path)), **kwargs)
    backbone.init_weights()
    got = backbone.state_dict()["model.stages.0.blocks.0.attn.qkvo.weight"]
    assert torch.equal(got, official_checkpoint["model"]["layers.0.blocks.0.attn.qkvo.weight"].flatten(1))


def test_norm_eval_freezes_sync_batchnorm():
    """The official GLTA backbone builds SyncBatchNorm and its norm_eval only looks for nn.BatchNorm2d, so it
    silently trains them; ours keeps every BatchNorm kind in eval mode (stem, downsamplers)."""
    pytest.importorskip("mmdet", reason="the mm stack is not installed (bash tools/setup.sh --mm)")
    from visionzoo.mm import VisionZooBackbone

    backbone = VisionZooBackbone("vz_ravlt_t", norm_eval=True, **FAMILY.reduced_kwargs())
    backbone = torch.nn.SyncBatchNorm.convert_sync_batchnorm(backbone)  # what a distributed det config does
    syncs = [m for m in backbone.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert len(syncs) == 4 + 3  # the stem's four, one per downsampler
    backbone.train()
    assert backbone.training and not any(m.training for m in syncs)
    before = [m.running_mean.clone() for m in syncs]
    backbone(torch.randn(2, 3, 64, 64))  # SyncBatchNorm in eval mode runs without a process group
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, syncs))


# ----------------------------------------------------------------------------------------------- inputs, errors

def test_minimum_input_and_odd_sizes():
    model = timm.create_model("vz_ravlt_t", **FAMILY.reduced_kwargs()).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 128, 1, 1)
        assert model.forward_features(torch.randn(1, 3, 33, 97)).shape == (1, 128, 2, 4)
    with pytest.raises(ValueError, match="smaller than the minimum 32x32"):
        model(torch.randn(1, 3, 31, 64))


@pytest.mark.parametrize("kwargs,message", [
    (dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 5, 2)), "head count times a multiple of 4"),
    (dict(embed_dims=(16, 32, 24, 24), num_heads=(1, 1, 1, 4)), "head count times a multiple of 4"),  # head dim 6
    (dict(stage_attention=("linear", "softmax", "full", "softmax")), "stage_attention entries"),
    (dict(depths=(2, 2, 2)), "one value per stage"),
])
def test_bad_configurations_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        timm.create_model("vz_ravlt_t", **kwargs)


def test_eval_ffn_in_row_bands_equals_the_whole_map():
    """Eval FFN on large maps runs in bands of rows with a one-row halo for its 3x3 conv: same outputs, every band
    size (including bands of one row and a last band shorter than the others)."""
    from visionzoo.models.ravlt import FeedForward
    torch.manual_seed(0)
    ffn = FeedForward(8, 28).eval()
    for p in ffn.parameters():
        p.data.normal_()
    x = torch.randn(2, 13, 6, 8)
    with torch.no_grad():
        ref = ffn.fc2(ffn.dwconv(ffn.act(ffn.fc1(x))))
        for rows in (1, 4, 12):
            torch.testing.assert_close(ffn._forward_bands(x, rows), ref, rtol=1e-6, atol=1e-5)
