"""NAT / DiNAT / DiNAT_s against the official code (SHI-Labs/Neighborhood-Attention-Transformer).

Parity fixture ``tests/fixtures/dinat_official.safetensors``: the official models in a reduced configuration (widths
8-64, depths 2-2-2-1, k = 7, dilations [[1, 8], [1, 4], [1, 2], [1]], layer scale for DiNAT, 10 classes; the
configurations are in the file's metadata), run by the official code at
SHI-Labs/Neighborhood-Attention-Transformer@d334f5bb0bd73cad05e5aeaf7c14cce3876a9650 (``classification/dinat.py``,
``dinats.py``; ``detection/dinat.py``, ``dinats.py`` for the det/seg backbones with ``norm0..3``). Recipe (run once,
in /tmp, nothing of it committed):

* the official code imports ``natten`` (the legacy ``NeighborhoodAttention2D``); it ran against a stand-in written
  for this purpose: the module of NATTEN v0.14.6 ``src/natten/natten2d.py`` (qkv / rpb / proj, zero padding of the
  input to k * d at the right / bottom before qkv, crop after) with a brute-force NA computed from a transcription
  of ``get_window_start`` / ``get_pb_start`` in ``src/natten/csrc/cpu/natten_cpu_commons.h`` (a loop over the k * k
  neighbour slots, every index from those formulas). Cross-checked before use: it matches natten 0.21.7's ``na2d``
  (``tests/kernels/fixtures/natten021_na2d.safetensors``, all six cases, < 5e-7) and, with a bias, this repository's
  reference op (float64, < 1e-15). The detection files' ``mmcv.runner`` / ``mmdet`` imports were stubbed.
* every parameter redrawn (``rpb`` N(0, 1), layer scales N(0.5, 0.2), norms 1 + N(0, 0.2), weights N(0, 1/fan_in),
  biases N(0, 0.1)), rounded to fp16-representable values and stored as fp16 (the official model ran in fp32 with
  exactly these values); inputs are uint8 images mapped by ``x / 64 - 2`` (exact in fp32) at 224x224 (the training
  size: k * d equals every map side) and 136x264 (non-square: maps smaller than k * d along one axis, padded by the
  legacy module, and sub-lattices of unequal lengths along the other);
* outputs: logits of both sizes (``{dinat,dinat_s}.logits.*``) and the det/seg backbones' four outputs at 136x264
  (``*.det.x_rect.{i}``) with their random ``norm{i}`` (``*.det_state.*``).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from visionzoo.layers import NeighborhoodAttention2D
from visionzoo.kernels import neighborhood_attention
from visionzoo.models.dinat import FAMILY, checkpoint_filter_fn, imagenet_dilations

from ..conftest import meta_model, meta_param_count

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dinat_official.safetensors"

# parameter counts of the official models at 1000 classes (shared/anchors/param-counts.md, built from the official code)
OFFICIAL_PARAMS = {
    "vz_nat_mini": 19_984_174, "vz_nat_tiny": 27_901_582, "vz_nat_small": 50_743_297, "vz_nat_base": 89_769_652,
    "vz_dinat_mini": 19_984_174, "vz_dinat_tiny": 27_901_582, "vz_dinat_small": 50_719_681,
    "vz_dinat_base": 89_769_652, "vz_dinat_large": 200_943_514, "vz_dinat_large_384": 200_943_514,
    "vz_dinat_large_11x11": 201_144_250, "vz_dinat_large_384_11x11": 201_144_250,
    "vz_dinat_s_tiny": 28_288_354, "vz_dinat_s_small": 49_606_258, "vz_dinat_s_base": 87_768_224,
    "vz_dinat_s_large": 196_532_476, "vz_dinat_s_large_384": 196_532_476,
}
# the in-22k heads (21841 classes): dinat_large_21k, dinat_large_21k_11x11, dinat_s_large_21k
OFFICIAL_PARAMS_21K = {"vz_dinat_large": 232_976_131, "vz_dinat_large_11x11": 233_176_867,
                       "vz_dinat_s_large": 228_565_093}
ALL_VARIANTS = timm.list_models("vz_*", module="dinat")

# the official factories' architectures (classification/nat.py, dinat.py, dinats.py)
_NAT = dict(mini=(64, (3, 4, 6, 5), (2, 4, 8, 16), 3.0), tiny=(64, (3, 4, 18, 5), (2, 4, 8, 16), 3.0),
            small=(96, (3, 4, 18, 5), (3, 6, 12, 24), 2.0), base=(128, (3, 4, 18, 5), (4, 8, 16, 32), 2.0),
            large=(192, (3, 4, 18, 5), (6, 12, 24, 48), 2.0))
_NAT_S = dict(tiny=(96, (2, 2, 6, 2), (3, 6, 12, 24), 4.0), small=(96, (2, 2, 18, 2), (3, 6, 12, 24), 4.0),
              base=(128, (2, 2, 18, 2), (4, 8, 16, 32), 4.0), large=(192, (2, 2, 18, 2), (6, 12, 24, 48), 4.0))
OFFICIAL_ARCH = {
    "vz_nat_mini": ("nat", "mini", 7, None), "vz_nat_tiny": ("nat", "tiny", 7, None),
    "vz_nat_small": ("nat", "small", 7, 1e-5), "vz_nat_base": ("nat", "base", 7, 1e-5),
    "vz_dinat_mini": ("nat", "mini", 7, None), "vz_dinat_tiny": ("nat", "tiny", 7, None),
    "vz_dinat_small": ("nat", "small", 7, None), "vz_dinat_base": ("nat", "base", 7, 1e-5),
    "vz_dinat_large": ("nat", "large", 7, None), "vz_dinat_large_384": ("nat", "large", 7, None),
    "vz_dinat_large_11x11": ("nat", "large", 11, None), "vz_dinat_large_384_11x11": ("nat", "large", 11, None),
    "vz_dinat_s_tiny": ("swin", "tiny", 7, None), "vz_dinat_s_small": ("swin", "small", 7, None),
    "vz_dinat_s_base": ("swin", "base", 7, None), "vz_dinat_s_large": ("swin", "large", 7, None),
    "vz_dinat_s_large_384": ("swin", "large", 7, None),
}


def official_layout(kind: str, embed_dim: int, depths, num_heads, mlp_ratio: float, kernel_size: int,
                    layer_scale, num_classes: int):
    """Key -> shape of an official classification state dict (``levels.*`` for NAT/DiNAT, ``layers.*`` for DiNAT_s),
    written from the official modules; test_layout_matches_the_official_files checks it on the fixture's real files."""
    C, k2 = embed_dim, 2 * kernel_size - 1
    s = {}
    if kind == "swin":
        s.update({"patch_embed.proj.weight": (C, 3, 4, 4), "patch_embed.proj.bias": (C,)})
    else:
        s.update({"patch_embed.proj.0.weight": (C // 2, 3, 3, 3), "patch_embed.proj.0.bias": (C // 2,),
                  "patch_embed.proj.1.weight": (C, C // 2, 3, 3), "patch_embed.proj.1.bias": (C,)})
    s.update({"patch_embed.norm.weight": (C,), "patch_embed.norm.bias": (C,)})
    level = "layers" if kind == "swin" else "levels"
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        c = C * 2 ** i
        hidden = int(c * mlp_ratio)
        for j in range(depth):
            b = f"{level}.{i}.blocks.{j}."
            s.update({b + "norm1.weight": (c,), b + "norm1.bias": (c,), b + "attn.qkv.weight": (3 * c, c),
                      b + "attn.qkv.bias": (3 * c,), b + "attn.rpb": (heads, k2, k2), b + "attn.proj.weight": (c, c),
                      b + "attn.proj.bias": (c,), b + "norm2.weight": (c,), b + "norm2.bias": (c,),
                      b + "mlp.fc1.weight": (hidden, c), b + "mlp.fc1.bias": (hidden,),
                      b + "mlp.fc2.weight": (c, hidden), b + "mlp.fc2.bias": (c,)})
            if layer_scale:
                s.update({b + "gamma1": (c,), b + "gamma2": (c,)})
        if i < len(depths) - 1:
            d = f"{level}.{i}.downsample."
            if kind == "swin":
                s.update({d + "norm.weight": (4 * c,), d + "norm.bias": (4 * c,), d + "reduction.weight": (2 * c, 4 * c)})
            else:
                s.update({d + "reduction.weight": (2 * c, c, 3, 3), d + "norm.weight": (2 * c,), d + "norm.bias": (2 * c,)})
    F = C * 2 ** (len(depths) - 1)
    s.update({"norm.weight": (F,), "norm.bias": (F,), "head.weight": (num_classes, F), "head.bias": (num_classes,)})
    return s


def official_variant_layout(name: str, num_classes: int = 1000):
    kind, arch, k, layer_scale = OFFICIAL_ARCH[name]
    embed_dim, depths, heads, mlp = (_NAT_S if kind == "swin" else _NAT)[arch]
    return official_layout(kind, embed_dim, depths, heads, mlp, k, layer_scale, num_classes)


# ------------------------------------------------------------------------------------------ registry and counts

def test_variants_registered():
    assert set(OFFICIAL_PARAMS) == set(ALL_VARIANTS)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_is_official(name):
    at_1000 = {} if timm.get_pretrained_cfg(name).num_classes == 1000 else dict(num_classes=1000)
    assert meta_param_count(name, **at_1000) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS_21K))
def test_in21k_heads(name):
    tag = f"{name}.in22k"
    assert timm.get_pretrained_cfg(tag).num_classes == 21841
    assert meta_param_count(name, num_classes=21841) == OFFICIAL_PARAMS_21K[name]


def test_layer_scale_per_variant():
    """NAT-S/B and DiNAT-B have layer scale, DiNAT-S has not (hence its 23,616 fewer parameters than NAT-S)."""
    has = {n: any(k.endswith("gamma1") for k in meta_model(n).state_dict()) for n in ALL_VARIANTS}
    assert {n for n, v in has.items() if v} == {"vz_nat_small", "vz_nat_base", "vz_dinat_base"}


def test_official_dilation_schedules():
    m = meta_model("vz_dinat_tiny")
    assert m.dilations == [(1, 8, 1), (1, 4, 1, 4), (1, 2) * 9, (1,) * 5]
    assert meta_model("vz_dinat_mini").dilations[2] == (1, 2) * 3
    assert meta_model("vz_dinat_large_384").dilations == [(1, 13, 1), (1, 6, 1, 6), (1, 3) * 9, (1,) * 5]
    assert meta_model("vz_dinat_large_384_11x11").dilations == m.dilations  # the official keeps the 224 dilations
    assert meta_model("vz_nat_tiny").dilations == [(1,) * 3, (1,) * 4, (1,) * 18, (1,) * 5]
    assert meta_model("vz_dinat_s_tiny").dilations == [(1, 8), (1, 4), (1, 2, 1, 2, 1, 2), (1, 1)]
    assert meta_model("vz_dinat_s_large_384").dilations == [(1, 13), (1, 6), (1, 3) * 9, (1, 1)]
    # k * d equals each stage's map side at the training size
    for name, size in (("vz_dinat_tiny", 224), ("vz_dinat_large_384", 384)):
        for i, stage in enumerate(meta_model(name).dilations):
            assert max(stage) * 7 <= size // 4 // 2 ** i < (max(stage) + 1) * 7


# ------------------------------------------------------------------------------------------ official key layout

def _fixture():
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    return load_file(str(FIXTURE)), meta


def _official_state(tensors, prefix: str):
    return {k[len(prefix):]: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()
            if k.startswith(prefix)}


def _config(meta, key: str):
    cfg = json.loads(meta[key])
    cfg.pop("drop_path_rate")
    return cfg


def test_layout_matches_the_official_files():
    """The layout generator above reproduces the key set and shapes of the official code's state dicts."""
    tensors, meta = _fixture()
    for name, kind in (("dinat", "nat"), ("dinat_s", "swin")):
        cfg = _config(meta, name)
        state = _official_state(tensors, f"{name}.state.")
        layout = official_layout(kind, cfg["embed_dim"], cfg["depths"], cfg["num_heads"], cfg["mlp_ratio"],
                                 cfg["kernel_size"], cfg.get("layer_scale"), int(meta["num_classes"]))
        assert {k: tuple(v.shape) for k, v in state.items()} == layout


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_official_checkpoint_maps_onto_every_variant(name):
    """Every key of the official checkpoint lands on a parameter of the same shape, none is left over, and the
    official layout holds exactly the official parameter count."""
    num_classes = meta_model(name).num_classes
    layout = official_variant_layout(name, num_classes)
    if num_classes == 1000:
        assert sum(torch.Size(s).numel() for s in layout.values()) == OFFICIAL_PARAMS[name]
    else:
        assert sum(torch.Size(s).numel() for s in layout.values()) == OFFICIAL_PARAMS_21K[name]
    ours = meta_model(name)
    state = {k: torch.empty(s, device="meta") for k, s in layout.items()}
    mapped = checkpoint_filter_fn(state, ours)
    ours_state = ours.state_dict()
    assert set(mapped) == set(ours_state)
    assert all(mapped[k].shape == ours_state[k].shape for k in mapped)


def test_downsampler_moves_to_the_next_stage():
    layout = official_variant_layout("vz_dinat_tiny")
    mapped = checkpoint_filter_fn({k: torch.empty(s, device="meta") for k, s in layout.items()},
                                  meta_model("vz_dinat_tiny"))
    assert "stages.1.downsample.reduction.weight" in mapped and "stages.0.downsample.reduction.weight" not in mapped
    assert mapped["stages.3.downsample.reduction.weight"].shape == (512, 256, 3, 3)
    assert "head.fc.weight" in mapped and "stem.conv2.weight" in mapped


# ------------------------------------------------------------------------------------------ parity

def _ours(name: str, cfg, num_classes: int, **kwargs) -> torch.nn.Module:
    return timm.create_model(name, num_classes=num_classes, **cfg, **kwargs).eval()


@pytest.mark.parametrize("arch", ["dinat", "dinat_s"])
def test_logits_match_official(arch, tmp_path):
    """The reduced official model's logits at 224 (k * d = map side) and at 136x264 (legacy padding along one axis,
    unequal dilation sub-lattices along the other), from the official raw state dict loaded through a file."""
    tensors, meta = _fixture()
    cfg, num_classes = _config(meta, arch), int(meta["num_classes"])
    path = tmp_path / "official.pth"
    torch.save(_official_state(tensors, f"{arch}.state."), path)  # a raw state dict, as the official files
    name = "vz_dinat_mini" if arch == "dinat" else "vz_dinat_s_tiny"
    model = timm.create_model(name, pretrained=True, num_classes=num_classes, **cfg,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=num_classes)).eval()
    for size in ("x224", "x_rect"):
        x = tensors[f"input.{size}"].float() / 64 - 2
        with torch.no_grad():
            got = model(x)
        expected = tensors[f"{arch}.logits.{size}"]
        assert expected.abs().max() > 0.1
        # fp32, the same maths in another order (tiled softmax vs NATTEN's per-query loops)
        assert (got - expected).abs().max() < 1e-4, size


@pytest.mark.parametrize("arch", ["dinat", "dinat_s"])
def test_official_det_backbone_matches(arch, tmp_path):
    """The official det/seg backbone (pre-downsample outputs of each level through ``norm{i}``): its checkpoint's
    backbone part (``backbone.levels.*``, ``backbone.norm{i}``) loads through the det/seg hook, outputs equal."""
    pytest.importorskip("mmdet", reason="the mm stack is not installed (bash tools/setup.sh --mm)")
    from visionzoo.mm import VisionZooBackbone

    tensors, meta = _fixture()
    cfg = _config(meta, arch)
    state = _official_state(tensors, f"{arch}.state.")
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "norm."))}
    state.update(_official_state(tensors, f"{arch}.det_state."))
    path = tmp_path / "detector.pth"
    torch.save({"meta": {}, "state_dict": {f"backbone.{k}": v for k, v in state.items()}
                | {"neck.lateral_convs.0.conv.weight": torch.zeros(1)}}, path)
    name = "vz_dinat_mini" if arch == "dinat" else "vz_dinat_s_tiny"
    backbone = VisionZooBackbone(name, init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."),
                                 **cfg)
    backbone.init_weights()
    assert not backbone.init_report["new"]
    backbone.eval()
    x = tensors["input.x_rect"].float() / 64 - 2
    with torch.no_grad():
        feats = backbone(x)
    for i, f in enumerate(feats):
        expected = tensors[f"{arch}.det.x_rect.{i}"]
        assert f.shape == expected.shape
        assert (f - expected).abs().max() < 1e-4, i


def test_features_only_are_pre_downsample_maps():
    torch.manual_seed(0)
    model = timm.create_model("vz_dinat_mini", features_only=True, **FAMILY.reduced).eval()
    torch.manual_seed(0)
    full = timm.create_model("vz_dinat_mini", **FAMILY.reduced).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        feats = model(x)
        inter = full.forward_intermediates(x, intermediates_only=True)
    assert [f.shape[1:] for f in feats] == [(16, 24, 32), (32, 12, 16), (64, 6, 8), (128, 3, 4)]
    for a, b in zip(feats, inter):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------ small maps

def _layer(dilation: int, mode: str, **kwargs) -> NeighborhoodAttention2D:
    torch.manual_seed(0)
    layer = NeighborhoodAttention2D(16, 2, 7, dilation, dilation_mode=mode, **kwargs).eval()
    with torch.no_grad():
        layer.qkv.bias.normal_()
    return layer


def test_pad_mode_is_the_legacy_module():
    """A map smaller than k * d: zeros before qkv (so padded keys are the qkv bias), NA on the padded map, crop."""
    layer = _layer(4, "pad")
    x = torch.randn(1, 20, 31, 16)
    with torch.no_grad():
        got = layer(x)
        padded = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 8))  # 20 -> 28 = 7 * 4 rows; 31 columns are enough
        q, k, v = layer.qkv(padded).view(1, 28, 31, 3, 2, 8).unbind(3)
        out = neighborhood_attention(q, k, v, 7, 4, rpb=layer.rpb).reshape(1, 28, 31, 16)[:, :20]
        expected = layer.proj(out)
    torch.testing.assert_close(got, expected)


def test_adapt_mode_lowers_the_dilation():
    """dilation_mode='adapt': d = max(1, min(d, min(H, W) // k)); 20x31 with k = 7, d = 4 runs with d = 2."""
    adapt, strict = _layer(4, "adapt"), _layer(2, "strict")
    strict.load_state_dict(adapt.state_dict())
    x = torch.randn(2, 20, 31, 16)
    with torch.no_grad():
        torch.testing.assert_close(adapt(x), strict(x))
        assert not torch.allclose(adapt(x), _layer(4, "pad")(x), atol=1e-3)  # padding changes the result
        # smaller than k itself: d = 1 and the legacy padding up to k
        small = torch.randn(1, 5, 9, 16)
        torch.testing.assert_close(adapt(small), _layer(1, "pad")(small))


def test_modes_agree_when_the_map_is_large_enough():
    x = torch.randn(1, 3, 224, 224)
    models = [timm.create_model("vz_dinat_mini", dilation_mode=mode, **FAMILY.reduced_kwargs(
        dilations=((1, 8), (4,), (2,), (1,)))).eval() for mode in ("pad", "adapt", "strict")]
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())
    with torch.no_grad():
        outs = [m(x) for m in models]
    torch.testing.assert_close(outs[1], outs[0])
    torch.testing.assert_close(outs[2], outs[0])


def test_strict_mode_names_the_numbers():
    model = timm.create_model("vz_dinat_mini", dilation_mode="strict", **FAMILY.reduced_kwargs(
        dilations=((1, 8), (4,), (2,), (1,)))).eval()
    with pytest.raises(ValueError, match=r"the 32x48 map is smaller than kernel_size \* dilation = 7 \* 8 = 56"):
        model(torch.randn(1, 3, 128, 192))


def test_minimum_input():
    model = timm.create_model("vz_dinat_mini", **FAMILY.reduced).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 128, 1, 1)
    with pytest.raises(ValueError, match="smaller than the minimum 32x32"):
        model(torch.randn(1, 3, 31, 64))


# ------------------------------------------------------------------------------------------ the drop-in module

def test_drop_in_module_has_the_legacy_parameters():
    layer = NeighborhoodAttention2D(dim=32, num_heads=4, kernel_size=7, dilation=None)
    assert layer.dilation == 1 and layer.window_size == 7
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {
        "qkv.weight": (96, 32), "qkv.bias": (96,), "rpb": (4, 13, 13), "proj.weight": (32, 32), "proj.bias": (32,)}
    assert NeighborhoodAttention2D(32, 4, 7, bias=False).rpb is None
    assert NeighborhoodAttention2D(32, 4, 7, bias=False, rel_pos_bias=True).rpb is not None  # natten 0.17's name
    assert NeighborhoodAttention2D(32, 4, 7, qk_scale=0.5).scale == 0.5
    assert "qkv.bias" not in NeighborhoodAttention2D(32, 4, 7, qkv_bias=False).state_dict()


def test_attention_dropout_path_matches_the_kernel():
    layer = NeighborhoodAttention2D(16, 2, 5, 2, attn_drop=0.1)
    x = torch.randn(2, 11, 13, 16)
    q, k, v = layer.qkv(x).view(2, 11, 13, 3, 2, 8).unbind(3)
    layer.attn_drop.p = 0.0
    torch.testing.assert_close(layer._gather_attention(q, k, v, 2),
                               neighborhood_attention(q, k, v, 5, 2, rpb=layer.rpb, scale=layer.scale))
    layer.attn_drop.p = 0.1
    layer.train()(x).sum().backward()
    assert layer.rpb.grad is not None


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_size=6), r"kernel_size must be an odd integer >= 1 .* got 6"),
    (dict(kernel_size=7, dilation=0), r"dilation must be an integer >= 1, got 0"),
    (dict(kernel_size=7, dilation_mode="clamp"), r"dilation_mode must be one of"),
    (dict(kernel_size=7, num_heads=3), r"dim 16 must be a multiple of num_heads 3"),
])
def test_bad_module_arguments(kwargs, match):
    args = dict(dim=16, num_heads=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        NeighborhoodAttention2D(**args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_size=8), r"kernel_size must be an odd integer >= 1 .* got 8"),
    (dict(dilations=((1, 0), (2,), (1,), (1,))), r"dilation must be an integer >= 1, got 0"),
    (dict(dilations=((1,), (2,), (1,), (1,))), r"one dilation per block of each stage \(depths \(2, 1, 1, 1\)\)"),
    (dict(dilation_mode="legacy"), r"dilation_mode must be one of"),
])
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model("vz_dinat_mini", **FAMILY.reduced_kwargs(**kwargs))


# ------------------------------------------------------------------------------------------ checkpoints

def test_rpb_of_another_kernel_size_is_resized():
    """A 7x7 checkpoint into an 11x11 model (how the official 11x11interp file was made: bicubic)."""
    small = timm.create_model("vz_dinat_mini", **FAMILY.reduced)
    big = timm.create_model("vz_dinat_mini", **FAMILY.reduced_kwargs(kernel_size=11))
    mapped = checkpoint_filter_fn(small.state_dict(), big)
    key = "stages.0.blocks.0.attn.rpb"
    assert mapped[key].shape == (1, 21, 21)
    big.load_state_dict(mapped)
    table = small.state_dict()[key]
    assert abs(mapped[key].mean() - table.mean()) < 0.01


def test_our_safetensors_round_trip(tmp_path):
    model = timm.create_model("vz_dinat_s_tiny", **FAMILY.reduced_kwargs(embed_dim=8)).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    again = timm.create_model("vz_dinat_s_tiny", pretrained=True, **FAMILY.reduced_kwargs(embed_dim=8),
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "w.safetensors"))).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_imagenet_dilations():
    assert imagenet_dilations((3, 4, 6, 5), (8, 4, 2, 1)) == ((1, 8, 1), (1, 4, 1, 4), (1, 2) * 3, (1,) * 5)


def test_pretrained_cfgs():
    cfg = timm.get_pretrained_cfg("vz_dinat_mini.in1k")
    assert cfg.url.endswith("/imagenet1k/dinat_mini_in1k_224.pth") and cfg.crop_pct == 0.875
    assert timm.get_pretrained_cfg("vz_dinat_large_384.in22k_ft_in1k").crop_pct == 1.0
    assert timm.get_pretrained_cfg("vz_dinat_s_tiny.in1k").first_conv == "stem.proj"
    assert timm.get_pretrained_cfg("vz_nat_mini.in1k").url.endswith("/nat/checkpoints/CLS/nat_mini.pth")
    assert timm.get_pretrained_cfg("vz_dinat_large_11x11.in22k").num_classes == 21841
