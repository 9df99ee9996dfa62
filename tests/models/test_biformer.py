"""BiFormer against the official code (rayleizhu/BiFormer@1697bbbeafb8680524898f1dcaac10defd0604be, legacy BRA).

Parity fixtures (``tests/fixtures/biformer_reduced.safetensors``, ``biformer_stl_reduced.safetensors``) were made by
running the official code locally (fetched into /tmp, never committed; torch 2.14.1, einops, fairscale):

* models: ``models.biformer.BiFormer(depth=[1, 1, 1, 1], embed_dim=[32, 64, 64, 64], qk_dims=[32, 64, 64, 64],
  mlp_ratios=[3] * 4, n_win=7, kv_downsample_mode='identity', kv_per_wins=[-1] * 4, topks=[1, 4, 16, -2],
  side_dwconv=5, before_attn_dwconv=3, layer_scale_init_value=-1, head_dim=32, param_routing=False,
  diff_routing=False, soft_routing=False, pre_norm=True, pe=None, num_classes=10)``, the same with
  ``auto_pad=True``, and ``models.biformer_stl.BiFormerSTL(depth=[1, 1, 1, 1], embed_dim=[32, 64, 64, 64],
  mlp_ratios=[4] * 4, head_dim=32, norm_layer=nn.BatchNorm2d, n_wins=(7,) * 4, topks=(1, 4, 16, -2),
  side_dwconv=5, num_classes=10)``, in eval mode;
* every state-dict tensor redrawn (seed 0 / 1): weights N(0, 1/fan_in), biases N(0, 0.1²), BN/LN weights
  1 + N(0, 0.2²), running means N(0, 0.2²), running variances U(0.5, 1.5), num_batches_tracked random ints;
  floats rounded to fp16 before the run and stored as fp16 (so the stored values are exact), under ``model.*``
  as the official files wrap them (``{"model": state_dict}``);
* inputs: :func:`image` (integer hashing, no RNG), normalised with the ImageNet mean/std in fp32; 224x224 (seed 1,
  STL 11) and 224x448 (seed 2, STL 12), which the official code runs unpadded (multiples of 112), plus
  136x200 (seed 7) with ``auto_pad=True``, which is not whole regions at any stage;
* stored: ``forward_features`` (after the final BatchNorm) and the logits;
* the official det/seg backbone ``BiFormer_mm`` (object_detection/models_mm/biformer_mm.py, run without its mmdet
  imports: the same ``BiFormer`` with ``n_win=16, auto_pad=True``, each stage output through a timm
  ``LayerNorm2d`` ``extra_norms[i]``, weights 1 + N(0, 0.2²), biases N(0, 0.1²), seed 3): its four outputs at
  128x160 (seed 5), where 16 regions per side exceed the stage-3 and stage-4 maps (8x10, 4x5).
"""
from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_file

from visionzoo.layers import BiLevelRoutingAttention
from visionzoo.models.biformer import FAMILY, checkpoint_filter_fn, n_win_for_size

from ..conftest import REPO, meta_param_count

FIXTURES = REPO / "tests" / "fixtures"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

# official models/biformer.py and models/biformer_stl.py at 1000 classes (shared/anchors/param-counts.md)
OFFICIAL_PARAMS = {
    "vz_biformer_tiny": 13_142_760,
    "vz_biformer_small": 25_536_232,
    "vz_biformer_base": 56_804_968,
    "vz_biformer_stl": 28_372_552,
}
OFFICIAL_STATE_KEYS = {"vz_biformer_tiny": 264, "vz_biformer_small": 518, "vz_biformer_base": 518, "vz_biformer_stl": 201}
REDUCED = dict(depths=(1, 1, 1, 1), embed_dims=(32, 64, 64, 64), num_classes=10)


def image(seed: int, h: int, w: int) -> torch.Tensor:
    """A pseudo-random uint8 image from integer hashing (exact, independent of any RNG implementation)."""
    i = torch.arange(3 * h * w, dtype=torch.int64) + seed * 1_000_003
    i = (i * 2654435761 + 97) % 4294967296
    i = ((i ^ (i >> 15)) * 2246822519) % 4294967296
    return ((i >> 13) % 256).to(torch.uint8).view(1, 3, h, w)


def normalised(seed: int, h: int, w: int) -> torch.Tensor:
    return (image(seed, h, w).float() / 255 - MEAN) / STD


def official_fixture(name: str):
    """(official checkpoint {"model": state_dict} in fp32, stored outputs)."""
    data = load_file(str(FIXTURES / name))
    state = {k[len("model."):]: v.float() if v.is_floating_point() else v for k, v in data.items()
             if k.startswith("model.")}
    return {"model": state}, {k: v for k, v in data.items() if not k.startswith("model.")}


def official_key_layout(name: str) -> dict:
    """Every key and shape of the official full-size model, written out from the official factories' structure
    (the official code is not importable here): ``downsample_layers``, ``stages.{i}.{j}`` (STL:
    ``stages.{i}.blocks.{j}``), ``norm``, ``head``."""
    arch = {
        "vz_biformer_tiny": ((2, 2, 8, 2), (64, 128, 256, 512), 3, False),
        "vz_biformer_small": ((4, 4, 18, 4), (64, 128, 256, 512), 3, False),
        "vz_biformer_base": ((4, 4, 18, 4), (96, 192, 384, 768), 3, False),
        "vz_biformer_stl": ((2, 2, 6, 2), (96, 192, 384, 768), 4, True),
    }[name]
    depths, dims, ratio, stl = arch
    keys = {}

    def bn(prefix, c):
        keys.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                     f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    def conv(prefix, cout, cin, k, groups=1):
        keys.update({f"{prefix}.weight": (cout, cin // groups, k, k), f"{prefix}.bias": (cout,)})

    def linear(prefix, cout, cin, bias=True):
        keys[f"{prefix}.weight"] = (cout, cin)
        if bias:
            keys[f"{prefix}.bias"] = (cout,)

    if stl:
        conv("downsample_layers.0.0", dims[0], 3, 4)
        bn("downsample_layers.0.1", dims[0])
    else:
        conv("downsample_layers.0.0", dims[0] // 2, 3, 3)
        bn("downsample_layers.0.1", dims[0] // 2)
        conv("downsample_layers.0.3", dims[0], dims[0] // 2, 3)
        bn("downsample_layers.0.4", dims[0])
    for i in range(1, 4):
        if stl:
            bn(f"downsample_layers.{i}.0", dims[i - 1])
            conv(f"downsample_layers.{i}.1", dims[i], dims[i - 1], 2)
        else:
            conv(f"downsample_layers.{i}.0", dims[i], dims[i - 1], 3)
            bn(f"downsample_layers.{i}.1", dims[i])
    for i, (depth, c) in enumerate(zip(depths, dims)):
        for j in range(depth):
            p = f"stages.{i}.blocks.{j}" if stl else f"stages.{i}.{j}"
            if not stl:
                conv(f"{p}.pos_embed", c, c, 3, groups=c)
            for n in ("norm1", "norm2"):
                keys.update({f"{p}.{n}.weight": (c,), f"{p}.{n}.bias": (c,)})
            conv(f"{p}.attn.lepe", c, c, 5, groups=c)
            if i < 3:
                linear(f"{p}.attn.qkv.qkv", 3 * c, c)
                linear(f"{p}.attn.wo", c, c)
            else:
                linear(f"{p}.attn.qkv", 3 * c, c, bias=False)
                linear(f"{p}.attn.proj", c, c)
            linear(f"{p}.mlp.0", ratio * c, c)
            linear(f"{p}.mlp.2" if stl else f"{p}.mlp.3", c, ratio * c)
    bn("norm", dims[-1])
    linear("head", 1000, dims[-1])
    return keys


# ---------------------------------------------------------------- registry, counts, key maps

def test_variants_registered():
    assert set(timm.list_models("vz_biformer_*")) == set(OFFICIAL_PARAMS)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_is_official(name):
    assert meta_param_count(name) == OFFICIAL_PARAMS[name]  # default num_classes 1000 (shares the contract tests' cache)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_official_checkpoint_maps_onto_every_variant(name):
    """Every official key lands on a parameter / buffer of the same shape, none is left over (meta device)."""
    layout = official_key_layout(name)
    assert len(layout) == OFFICIAL_STATE_KEYS[name]  # the anchors' key counts of the official state dicts
    with torch.device("meta"):
        ours = timm.create_model(name)
        official = {"model": {k: torch.empty(shape) for k, shape in layout.items()}}
    mapped = checkpoint_filter_fn(official, ours)
    ours_state = ours.state_dict()
    assert set(mapped) == set(ours_state)
    assert all(mapped[k].shape == ours_state[k].shape for k in mapped)


# ---------------------------------------------------------------- parity with the official code

@pytest.fixture(scope="module")
def reduced_official():
    return official_fixture("biformer_reduced.safetensors")


def _load(name: str, checkpoint: dict, tmp_path, **kwargs):
    path = tmp_path / "official.pth"
    torch.save(checkpoint, path)  # the official file layout, loaded through timm's pretrained path
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                             **kwargs).eval()


@pytest.mark.parametrize("size", [(224, 224), (224, 448)])
def test_matches_official_code(size, reduced_official, tmp_path):
    checkpoint, expected = reduced_official
    model = _load("vz_biformer_tiny", checkpoint, tmp_path, **REDUCED)
    tag = "224" if size == (224, 224) else "224x448"
    x = normalised(1 if tag == "224" else 2, *size)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
    assert expected[f"logits_{tag}"].abs().max() > 1  # the randomised weights give non-trivial logits
    # fp32, the same operations in another order (region sums, chunked matmuls, folded stem BN)
    assert (features - expected[f"features_{tag}"]).abs().max() < 1e-4
    assert (logits - expected[f"logits_{tag}"]).abs().max() < 1e-4


def test_auto_pad_matches_official_auto_pad(reduced_official, tmp_path):
    """136x200: no stage is whole regions (34x50, 17x25, 9x13 at n_win 7); ``auto_pad=True`` is the official
    det/seg padding (zeros before the qkv projection), exactly."""
    checkpoint, expected = reduced_official
    model = _load("vz_biformer_tiny", checkpoint, tmp_path, auto_pad=True, **REDUCED)
    x = normalised(7, 136, 200)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
    assert (features - expected["features_autopad_136x200"]).abs().max() < 1e-4
    assert (logits - expected["logits_autopad_136x200"]).abs().max() < 1e-4
    default = _load("vz_biformer_tiny", checkpoint, tmp_path, **REDUCED)
    with torch.no_grad():  # masking (our default) is another function of the padded maps
        assert (default(x) - logits).abs().max() > 1e-3


@pytest.mark.parametrize("size", [(224, 224), (224, 448)])
def test_stl_matches_official_code(size, tmp_path):
    checkpoint, expected = official_fixture("biformer_stl_reduced.safetensors")
    model = _load("vz_biformer_stl", checkpoint, tmp_path, **REDUCED)
    tag = "224" if size == (224, 224) else "224x448"
    x = normalised(11 if tag == "224" else 12, *size)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
    assert (features - expected[f"features_{tag}"]).abs().max() < 1e-4
    assert (logits - expected[f"logits_{tag}"]).abs().max() < 1e-4


def test_quirks_matter(reduced_official, tmp_path):
    """The fixture pins the quirks: the full-qk_dim BRA scale and the 8-head last stage change the output."""
    checkpoint, expected = reduced_official
    x = normalised(1, 224, 224)
    model = _load("vz_biformer_tiny", checkpoint, tmp_path, **REDUCED)
    attn = model.stages[1].blocks[0].attn
    attn.scale = (attn.qk_dim // attn.num_heads) ** -0.5  # head-dim scale, as most ViTs
    with torch.no_grad():
        assert (model(x) - expected["logits_224"]).abs().max() > 1e-3
    four_heads = _load("vz_biformer_tiny", checkpoint, tmp_path, last_stage_heads=4, **REDUCED)  # = width / 32
    with torch.no_grad():  # the heads split no parameter: only the outputs tell
        assert (four_heads(x) - expected["logits_224"]).abs().max() > 1e-3


def test_official_det_checkpoint_backbone_loads_through_the_hook(reduced_official, tmp_path):
    """The backbone part of an official det checkpoint (mmdet 2 layout: ``state_dict`` with ``backbone.*``, no final
    norm or head, ``backbone.extra_norms.{i}``) loads through the det/seg hook, and the backbone then gives the
    official BiFormer_mm outputs (n_win 16, auto_pad) exactly."""
    pytest.importorskip("mmdet", reason="the mm stack is not installed (bash tools/setup.sh --mm)")
    from visionzoo.mm import VisionZooBackbone

    checkpoint, expected = reduced_official
    state = {f"backbone.{k}": v for k, v in checkpoint["model"].items() if not k.startswith(("norm.", "head."))}
    state.update({f"backbone.{k[len('det_'):]}": v.float() for k, v in expected.items()
                  if k.startswith("det_extra_norms.")})
    state["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)
    path = tmp_path / "maskrcnn_official.pth"
    torch.save({"meta": {"epoch": 12, "mmdet_version": "2.25.3"}, "state_dict": state}, path)
    backbone = VisionZooBackbone("vz_biformer_tiny", n_win=16, auto_pad=True, **dict(REDUCED, num_classes=1000),
                                 init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."))
    backbone.init_weights()
    assert backbone.init_report["new"] == []
    outs = backbone.eval()(normalised(5, 128, 160))
    for i, out in enumerate(outs):
        assert (out - expected[f"det_out{i}_128x160"]).abs().max() < 1e-4, i


# ---------------------------------------------------------------- any size, n_win, bad input

def test_n_win_rule_gives_the_official_settings():
    assert n_win_for_size(224, 224) == 7
    assert n_win_for_size(512, 512) == 8
    assert n_win_for_size(800, 1333) == 16
    assert n_win_for_size(32, 32) == 7


def test_small_inputs_and_n_win():
    model = timm.create_model("vz_biformer_tiny", **FAMILY.reduced_kwargs()).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 128, 1, 1)
        model.set_n_win(16)  # more regions than stage-1 rows (8): regions of one row, the surplus empty
        assert model.forward_features(torch.randn(1, 3, 32, 40)).shape == (1, 128, 1, 2)
    with pytest.raises(ValueError, match="smaller than the minimum 32x32"):
        model(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match="n_win"):
        timm.create_model("vz_biformer_tiny", n_win=0)
    with pytest.raises(ValueError, match="topks\\[0\\] must be a positive int"):
        timm.create_model("vz_biformer_tiny", topks=(0, 4, 16, -2))


def test_stl_nchw_checkpoint_is_refused():
    model = timm.create_model("vz_biformer_stl", **FAMILY.reduced_kwargs())
    with pytest.raises(ValueError, match="STL-nchw"):
        checkpoint_filter_fn({"stages.0.blocks.0.attn.qkv_linear.weight": torch.zeros(1)}, model)


# ---------------------------------------------------------------- the standalone layer

def test_layer_is_any_size_nchw_and_matches_its_nhwc_form():
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=3, side_dwconv=5)
    x = torch.randn(2, 64, 13, 18, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in layer.parameters())
    nhwc = BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=3, side_dwconv=5, data_format="nhwc")
    nhwc.load_state_dict(layer.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), layer(x))


def test_layer_topk_beyond_regions_is_full_attention():
    """topk >= the number of regions is clamped: every query attends every key (plain attention + LePE)."""
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention(32, num_heads=2, n_win=3, topk=100, side_dwconv=0).eval()
    x = torch.randn(1, 32, 9, 6)
    with torch.no_grad():
        got = layer(x)
        t = x.flatten(2).transpose(1, 2)  # (1, N, C)
        q, k, v = layer.qkv(t).split([32, 32, 32], -1)
        q, k, v = (z.unflatten(-1, (2, 16)).transpose(1, 2) for z in (q, k, v))
        attn = torch.softmax(q @ k.transpose(-1, -2) * layer.scale, -1) @ v
        expected = layer.proj(attn.transpose(1, 2).flatten(2)).transpose(1, 2).reshape(1, 32, 9, 6)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_layer_bad_arguments():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        BiLevelRoutingAttention(30, num_heads=4)
    with pytest.raises(ValueError, match="topk must be a positive int"):
        BiLevelRoutingAttention(32, num_heads=1, topk=-2)
    with pytest.raises(ValueError, match="n_win"):
        BiLevelRoutingAttention(32, num_heads=1, n_win=(3, 0))
    with pytest.raises(ValueError, match="data_format"):
        BiLevelRoutingAttention(32, num_heads=1, data_format="NCHW")
    layer = BiLevelRoutingAttention(32, num_heads=1)
    with pytest.raises(ValueError, match="got 16 channels"):
        layer(torch.randn(1, 16, 8, 8))
    with pytest.raises(ValueError, match="4-D"):
        layer(torch.randn(32, 8, 8))


def test_official_url_is_cached_under_the_official_file_name(tmp_path, monkeypatch):
    """Every OneDrive link ends in ``/content``: the download is cached as the official code names it, per model."""
    from timm.models import _hub

    checkpoint, _ = official_fixture("biformer_reduced.safetensors")
    path = tmp_path / "biformer_tiny_in1k.pth"
    torch.save(checkpoint, path)
    calls = []

    def fake_download(url, check_hash=True, progress=False, cache_dir=None):
        calls.append(url)
        return str(path)

    monkeypatch.setattr(_hub, "download_cached_file", fake_download)
    model = timm.create_model("vz_biformer_tiny", pretrained=True, pretrained_cfg_overlay=dict(num_classes=10),
                              **REDUCED)
    assert calls == [(timm.get_pretrained_cfg("vz_biformer_tiny").url, "biformer_tiny_in1k.pth")]
    assert torch.equal(model.head.fc.weight, checkpoint["model"]["head.weight"])
