"""DaViT against its oracles: the official code (dingmyu/davit) and timm's ``davit.py`` (which converted the
official and Florence-2 weights).

Official fixture (``tests/fixtures/davit_official_reduced.safetensors``): the official classification model
(``timm/models/davit.py`` of dingmyu/davit @fc79470d) and its mmdet backbone (``mmdet/mmdet/models/backbones/davit.py``,
output norms ``norm0..3``) were built at a reduced configuration (embed_dims (16, 24, 32, 48), depths (1, 1, 2, 1),
num_heads (2, 2, 4, 4), window 7, 10 classes), every parameter redrawn (``0.2 * randn``; LayerNorm weights
``1 + 0.2 * randn``, torch.Generator seed 1, in ``state_dict()`` order), and run on the inputs ``_image(224, 224)``
and ``_image(97, 143)`` (below: a formula, so nothing but weights and outputs is stored). The file holds the
official state dict (``official.*``), the det/seg output norms (``det.backbone.norm{i}.*``), the logits and the
det backbone's four output maps for the 97x143 input. Recipe: load both official modules with their package-relative
imports replaced by timm.layers (DropPath, to_2tuple, trunc_normal_) and no-op stubs (registry, logger,
checkpoint loader); nothing else is changed.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open

from visionzoo.models.davit import DaViT, checkpoint_filter_fn

from ..conftest import meta_param_count

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "davit_official_reduced.safetensors"
OFFICIAL_CFG = dict(embed_dims=(16, 24, 32, 48), depths=(1, 1, 2, 1), num_heads=(2, 2, 4, 4), window_size=7)

# the official models' counts (dingmyu/davit code comments; the rest built with timm 1.0.31), anchors/param-counts.md
OFFICIAL_PARAMS = {
    "vz_davit_tiny": 28_360_168, "vz_davit_small": 49_745_896, "vz_davit_base": 87_954_408,
    "vz_davit_large": 196_811_752, "vz_davit_huge": 348_922_856, "vz_davit_giant": 1_406_470_120,
    "vz_davit_base_fl": 90_370_048, "vz_davit_huge_fl": 360_636_416,  # towers: num_classes=0
}
FL_WITH_HEAD = {"vz_davit_base_fl": 91_395_048, "vz_davit_huge_fl": 362_685_416}
ALL_VARIANTS = timm.list_models("vz_davit_*")


def timm_name(name: str) -> str:
    return name[len("vz_"):]


def _image(h: int, w: int) -> torch.Tensor:
    """The fixture's input, a formula (see the module docstring)."""
    i = torch.arange(h, dtype=torch.float64)[:, None]
    j = torch.arange(w, dtype=torch.float64)[None, :]
    c = torch.arange(3, dtype=torch.float64)[:, None, None]
    return (torch.sin(0.3 * (c + 1) * i + 0.7 * j + c) * torch.cos(0.05 * i * j / (c + 1) + c)).float()[None]


def _fixture(prefix: str = "") -> dict:
    with safe_open(str(FIXTURE), "pt") as f:
        return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}


def randomized_state(model: torch.nn.Module, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.1 if v.is_floating_point() else v
            for k, v in model.state_dict().items()}


# ---- other layouts, written from timm's names; timm's own converters check them (the oracle) ----------------

def to_official(key: str) -> str:
    """timm's name -> the official dingmyu/davit name (classification)."""
    rules = [(r"^stem\.conv\.", "patch_embeds.0.proj."), (r"^stem\.norm\.", "patch_embeds.0.norm."),
             (r"^stages\.(\d+)\.downsample\.conv\.", r"patch_embeds.\1.proj."),
             (r"^stages\.(\d+)\.downsample\.norm\.", r"patch_embeds.\1.norm."),
             (r"^stages\.(\d+)\.blocks\.", r"main_blocks.\1."), (r"\.cpe1\.", ".cpe.0."), (r"\.cpe2\.", ".cpe.1."),
             (r"^head\.norm\.", "norms."), (r"^head\.fc\.", "head.")]
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def to_florence2(key: str) -> str:
    """timm's name (named blocks) -> Florence-2's ``vision_tower.*`` name."""
    rules = [(r"^stem\.conv\.", "convs.0.proj."), (r"^stem\.norm\.", "convs.0.norm."),
             (r"^stages\.(\d+)\.downsample\.conv\.", r"convs.\1.proj."),
             (r"^stages\.(\d+)\.downsample\.norm\.", r"convs.\1.norm."), (r"^stages\.(\d+)\.blocks\.", r"blocks.\1."),
             (r"\.cpe1\.proj\.", ".conv1.fn.dw."), (r"\.cpe2\.proj\.", ".conv2.fn.dw."),
             (r"(spatial_block)\.norm1\.", r"\1.window_attn.norm."), (r"(spatial_block)\.attn\.", r"\1.window_attn.fn."),
             (r"(channel_block)\.norm1\.", r"\1.channel_attn.norm."),
             (r"(channel_block)\.attn\.", r"\1.channel_attn.fn."),
             (r"\.norm2\.", ".ffn.norm."), (r"\.mlp\.", ".ffn.fn.net.")]
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return "vision_tower." + key


def official_state(timm_state: dict) -> dict:
    state = {to_official(k): v for k, v in timm_state.items()}
    from timm.models.davit import checkpoint_filter_fn as timm_filter
    assert set(timm_filter(state, None)) == set(timm_state)  # timm's converter inverts it
    return state


def florence2_state(timm_state: dict) -> dict:
    state = {to_florence2(k): v for k, v in timm_state.items() if not k.startswith("head.")}
    state["language_model.model.shared.weight"] = torch.zeros(2, 2)  # the rest of a Florence-2 checkpoint
    from timm.models.davit import checkpoint_filter_fn as timm_filter
    assert set(timm_filter(state, None)) == {k for k in timm_state if not k.startswith("head.")}
    return state


# ---- registry and parameter counts --------------------------------------------------------------------------

def test_variants_registered():
    assert set(ALL_VARIANTS) == set(OFFICIAL_PARAMS)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_is_official(name):
    assert meta_param_count(name) == OFFICIAL_PARAMS[name]
    if name in FL_WITH_HEAD:
        assert meta_param_count(name, num_classes=1000) == FL_WITH_HEAD[name]


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_every_layout_maps_onto_every_variant(name):
    """timm's, the official and (towers) Florence-2's key layouts: every key lands on a tensor of the same shape,
    none is left over, none is missing."""
    with torch.device("meta"):
        theirs = timm.create_model(timm_name(name))
        ours = timm.create_model(name)
    ours_state = ours.state_dict()
    layouts = {"timm": theirs.state_dict(), "official": official_state(theirs.state_dict())}
    if name.endswith("_fl"):
        layouts["florence2"] = florence2_state(theirs.state_dict())
    for layout, state in layouts.items():
        mapped = checkpoint_filter_fn(state, ours)
        assert set(mapped) == set(ours_state), layout
        assert all(mapped[k].shape == ours_state[k].shape for k in mapped), layout
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())


# ---- parity with the official code (fixture) -----------------------------------------------------------------

@pytest.mark.parametrize("size", [(224, 224), (97, 143)])
def test_official_reduced_model_parity(size, tmp_path):
    """The official layout, wrapped as the official training script saves it, through the pretrained-file path."""
    path = tmp_path / "official.pth"
    torch.save({"state_dict": _fixture("official."), "epoch": 3}, path)
    model = timm.create_model("vz_davit_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                              num_classes=10, **OFFICIAL_CFG).eval()
    expected = _fixture()["logits224" if size == (224, 224) else "logits_odd"]
    with torch.no_grad():
        got = model(_image(*size))
    assert expected.abs().max() > 1.0
    # fp32, the same operations in another order (NHWC layout, folded CPE residual, bmm vs explicit loops)
    assert (got - expected).abs().max() < 1e-4


def test_official_detection_backbone_parity(tmp_path):
    """The backbone part of an official det/seg checkpoint (``backbone.`` keys with the output norms ``norm0..3``)
    loads through the det/seg hook and gives the official backbone's four outputs."""
    pytest.importorskip("mmdet", reason="the mm stack is not installed (bash tools/setup.sh --mm)")
    from visionzoo.mm import VisionZooBackbone

    official = {k: v for k, v in _fixture("official.").items() if not k.startswith(("norms.", "head."))}
    state = {f"backbone.{k}": v for k, v in official.items()}
    state.update(_fixture("det."))
    state["neck.lateral_convs.0.conv.weight"] = torch.zeros(4, 16, 1, 1)
    path = tmp_path / "mask_rcnn_davit.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 12}}, path)
    backbone = VisionZooBackbone("vz_davit_tiny", init_cfg=dict(type="Pretrained", checkpoint=str(path),
                                                                prefix="backbone."), **OFFICIAL_CFG)
    backbone.init_weights()
    assert not backbone.init_report["new"], backbone.init_report["new"]
    backbone.eval()
    with torch.no_grad():
        feats = backbone(_image(97, 143))
    fixture = _fixture()
    for i, f in enumerate(feats):
        expected = fixture[f"det_feat{i}"]
        assert f.shape == expected.shape
        assert (f - expected).abs().max() < 1e-4, i


# ---- parity with timm's models ---------------------------------------------------------------------------------

def _timm_randomized(name: str, seed: int) -> torch.nn.Module:
    """timm's model with every tensor redrawn, built on the meta device (no init pass over its weights)."""
    with torch.device("meta"):
        model = timm.create_model(name)
    model.load_state_dict(randomized_state(model, seed), assign=True)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """timm's davit_tiny (randomized) and ours loaded from a file of timm's keys, through timm's own pretrained
    path."""
    theirs = _timm_randomized("davit_tiny", seed=1)
    path = tmp_path_factory.mktemp("davit") / "davit.pth"
    torch.save({"model": theirs.state_dict()}, path)
    ours = timm.create_model("vz_davit_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    return theirs, ours


@pytest.mark.parametrize("size", [(224, 224), (100, 150)])
def test_logits_match_timm_davit_tiny(size, tiny_pair):
    """The non-square size pads windows in every stage and odd maps in the downsamplers."""
    theirs, ours = tiny_pair
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert expected.abs().max() > 0.1
    # fp32, the same operations in another order (NHWC views vs transposes, bmm vs SDPA, folded CPE residual)
    assert (got - expected).abs().max() < 1e-4


def test_florence2_tower_matches_timm():
    """timm's davit_base_fl (window 12, 3x3 downsampling, v2 channel attention, named blocks), randomized, in
    timm's layout and in Florence-2's ``vision_tower`` layout. 768 px is the tower's size; 160x224 runs the same
    code paths (windows padded in stages 1, 3, 4) in a fraction of the time."""
    theirs = _timm_randomized("davit_base_fl", seed=5)
    state = theirs.state_dict()
    with torch.device("meta"):
        ours = timm.create_model("vz_davit_base_fl")
    assert ours.num_classes == 0
    ours.load_state_dict(checkpoint_filter_fn(state, ours), assign=True)
    ours.eval()
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        expected, got = theirs.forward_features(x), ours.forward_features(x)
        pooled = ours.forward_head(got)
        expected_pooled = theirs.forward_head(expected)
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max() < 1e-4 and (pooled - expected_pooled).abs().max() < 1e-4
    # the Florence-2 checkpoint layout: the same tensors, and the head norm (absent there) as the identity
    mapped = checkpoint_filter_fn(florence2_state(state), ours)
    for k, v in ours.state_dict().items():
        if k.startswith("head.norm."):
            assert torch.equal(mapped[k], torch.ones_like(v) if k.endswith("weight") else torch.zeros_like(v))
        else:
            assert torch.equal(mapped[k], state[k]), k


def test_train_step_matches_timm():
    """Training forward and every gradient against timm (reduced configuration, drop path off)."""
    kwargs = dict(embed_dims=(32, 64, 96, 128), depths=(1, 1, 2, 1), num_heads=(2, 2, 3, 4), num_classes=10)
    theirs = timm.create_model("davit_tiny", **kwargs).train()
    theirs.load_state_dict(randomized_state(theirs, seed=3))
    ours = timm.create_model("vz_davit_tiny", **kwargs).train()
    ours.load_state_dict(checkpoint_filter_fn(theirs.state_dict(), ours))
    x = torch.randn(2, 3, 96, 80)
    expected, got = theirs(x), ours(x)
    assert (got - expected).abs().max() < 1e-4
    expected.square().sum().backward()
    got.square().sum().backward()
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        torch.testing.assert_close(ours_params[name].grad, p.grad, rtol=1e-3, atol=1e-4, msg=name)


def test_numbered_and_named_blocks_load_into_each_other():
    kwargs = dict(embed_dims=(16, 24, 32, 48), depths=(1, 1, 1, 1), num_heads=(2, 2, 4, 4))
    numbered = timm.create_model("vz_davit_tiny", **kwargs)
    named = timm.create_model("vz_davit_tiny", named_blocks=True, **kwargs)
    assert "stages.0.blocks.0.spatial_block.attn.qkv.weight" in named.state_dict()
    named.load_state_dict(checkpoint_filter_fn(numbered.state_dict(), named))
    numbered.load_state_dict(checkpoint_filter_fn(named.state_dict(), numbered))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(named(x), numbered(x))


# ---- padding, sizes, bad input ---------------------------------------------------------------------------------

def _dense_window_attention_over_real_tokens(attn, x):
    """What ``attn_pad="mask"`` means, written as loops: each window attends over its real tokens only."""
    B, H, W, C = x.shape
    wh, ww = attn.window
    q, k, v = attn.qkv(x).view(B, H, W, 3, attn.num_heads, attn.head_dim).unbind(3)
    out = torch.empty_like(q)
    for i in range(0, H, wh):
        for j in range(0, W, ww):
            qs, ks, vs = (t[:, i:i + wh, j:j + ww].flatten(1, 2).transpose(1, 2) for t in (q, k, v))
            p = (qs @ ks.transpose(-1, -2) * attn.scale).softmax(-1)
            out[:, i:i + wh, j:j + ww] = (p @ vs).transpose(1, 2).reshape(B, min(wh, H - i), min(ww, W - j), -1,
                                                                          attn.head_dim)
    return attn.proj(out.reshape(B, H, W, C))


def test_masked_padding_option():
    """``attn_pad="mask"``: padded keys take no part (dense per-window oracle); whole windows: both modes agree;
    otherwise the official zero padding (padded tokens are keys) gives a different result."""
    from visionzoo.models.davit import WindowAttention

    torch.manual_seed(0)
    masked = WindowAttention(24, 3, (7, 7), pad="mask").double()
    zeros = WindowAttention(24, 3, (7, 7), pad="zeros").double()
    zeros.load_state_dict(masked.state_dict())
    with torch.no_grad():
        x = torch.randn(2, 9, 17, 24, dtype=torch.float64)
        torch.testing.assert_close(masked(x), _dense_window_attention_over_real_tokens(masked, x))
        assert (masked(x) - zeros(x)).abs().max() > 1e-3
        whole = torch.randn(2, 14, 7, 24, dtype=torch.float64)
        torch.testing.assert_close(masked(whole), zeros(whole))
    model = timm.create_model("vz_davit_tiny", attn_pad="mask", embed_dims=(16, 24, 32, 48), depths=(1, 1, 1, 1),
                              num_heads=(2, 2, 4, 4)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 70)).shape == (1, 1000)


def test_minimum_input_and_non_square():
    model = timm.create_model("vz_davit_tiny", embed_dims=(16, 24, 32, 48), depths=(1, 1, 1, 1),
                              num_heads=(2, 2, 4, 4)).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 48, 1, 1)
        assert model.forward_features(torch.randn(1, 3, 33, 250)).shape == (1, 48, 2, 8)
    with pytest.raises(ValueError, match="smaller than the minimum 32x32"):
        model(torch.randn(1, 3, 31, 64))


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_heads=(3, 5, 12, 24)), r"num_heads=5 does not divide the width 192.*allowed values"),
    (dict(embed_dims=(96, 192, 384, 770)), r"num_heads=24 does not divide the width 770"),
    (dict(depths=(1, 1, 3)), "one entry per stage"),
    (dict(attn_pad="reflect"), "attn_pad must be one of"),
    (dict(down_kernel_size=4), "down_kernel_size must be 2"),
])
def test_bad_configuration_errors(kwargs, message):
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        timm.create_model("vz_davit_tiny", **kwargs)


def test_drop_path_follows_the_official_schedule():
    """linspace(0, rate, 2 * sum(depths)) over the sub-blocks, spatial and channel blocks each their own rate."""
    from timm.layers import DropPath

    with torch.device("meta"):
        model = timm.create_model("vz_davit_tiny", drop_path_rate=0.2)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    expected = torch.linspace(0, 0.2, 12).tolist()[1:]  # the first sub-block's rate is 0: no DropPath
    assert rates == pytest.approx([r for r in expected for _ in range(2)])  # attention and MLP residuals


def test_is_a_davit_model():
    with torch.device("meta"):
        assert isinstance(timm.create_model("vz_davit_base_fl"), DaViT)


def test_fixture_is_small():
    assert FIXTURE.stat().st_size < 1_000_000


# ---- the CPU fast paths against the plain formulation --------------------------------------------------------

@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("hw, folded", [((5, 7), True), ((2, 3), False)])
def test_folded_projection_equals_kernel_then_projection(version, hw, folded, monkeypatch):
    """``proj(channel_attention(q, k, v))`` (the kernel's reference backend) and the torch backend's form, forward
    and every gradient, in float64 (odd token count, several groups). The torch backend folds the projection only
    where the map has more tokens than channels (35 > 24 here; 6 < 24 runs the kernel, then proj)."""
    from visionzoo.kernels import use_backend
    from visionzoo.models.davit import ChannelAttention

    torch.manual_seed(0)
    attn = ChannelAttention(24, 3, version=version).double()
    calls = []
    real = ChannelAttention._attend_and_project
    monkeypatch.setattr(ChannelAttention, "_attend_and_project", lambda self, *a: calls.append(1) or real(self, *a))
    x = torch.randn(2, *hw, 24, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for backend in ("reference", None):
        with use_backend(backend):
            out = attn(x)
        assert len(calls) == (int(folded) if backend is None else 0)
        grads.append(torch.autograd.grad(out.square().sum(), [x, *attn.parameters()]))
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0])
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("training", [False, True])
def test_token_chunked_mlp_equals_plain(training):
    """``visionzoo.layers.residual_mlp`` over several chunks (tiny chunk size) equals ``x + mlp(norm(x))``, with and
    without gradients; with stochastic depth the per-sample mask applies to whole images."""
    from timm.layers import DropPath

    from visionzoo.layers import Mlp, residual_mlp

    torch.manual_seed(0)
    norm, mlp = torch.nn.LayerNorm(8).double(), Mlp(8, 32).double()
    x = torch.randn(3, 5, 6, 8, dtype=torch.float64, requires_grad=training)
    with torch.set_grad_enabled(training):
        got = residual_mlp(x, norm, mlp, chunk_bytes=64 * 32 * 8)  # 64 rows per chunk: 2 chunks of 90 tokens
        expected = x + mlp(norm(x))
    torch.testing.assert_close(got, expected)
    if training:
        g1 = torch.autograd.grad(got.sum(), [x, *mlp.parameters()])
        g2 = torch.autograd.grad(expected.sum(), [x, *mlp.parameters()])
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b)
        drop = DropPath(0.5).train()
        torch.manual_seed(3)
        dropped = residual_mlp(x, norm, mlp, drop, chunk_bytes=64 * 32 * 8)
        kept = [torch.allclose(dropped[i], x[i]) for i in range(3)]  # a dropped image keeps exactly x
        torch.manual_seed(3)
        torch.testing.assert_close(dropped, x + drop(mlp(norm(x))))
        assert kept.count(True) + kept.count(False) == 3


def test_image_tiles_change_nothing(monkeypatch):
    """Without gradients, stages whose map exceeds STAGE_TILE_BYTES run on groups of images: the same outputs."""
    import visionzoo.models.davit as davit

    model = timm.create_model("vz_davit_tiny", embed_dims=(16, 24, 32, 48), depths=(1, 1, 1, 1),
                              num_heads=(2, 2, 4, 4)).eval()
    x = torch.randn(5, 3, 64, 96)
    with torch.no_grad():
        whole = model(x)
        monkeypatch.setattr(davit, "STAGE_TILE_BYTES", 2 * 16 * 24 * 16 * 4)  # stage 1: tiles of 2 images
        assert model.stages[0].images_per_tile(torch.empty(5, 16, 24, 16)) == 2
        torch.testing.assert_close(model(x), whole, atol=1e-5, rtol=1e-5)
