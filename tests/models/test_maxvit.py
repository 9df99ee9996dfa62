"""MaxViT against its oracle, timm's port of the official TF models (``maxvit_*_tf_*``).

The official TF checkpoints cannot be read without TensorFlow; timm's converted weights are the practical
source, and timm's model is the reference implementation: randomized timm state dicts (every parameter
and persistent buffer, BN statistics included) must load through our filter and give timm's logits.
"""
from __future__ import annotations

import pytest
import timm
import torch

from visionzoo.models.maxvit import FAMILY, checkpoint_filter_fn

from ..conftest import meta_model, meta_param_count


def reduced_timm(size: int) -> torch.nn.Module:
    """timm's official-port model class in the reduced configuration ours runs in (FAMILY.reduced): the same code
    paths, at a fraction of the cost; its window follows the size (img_size / 32) as ours does by variant."""
    import dataclasses

    from timm.models.maxxvit import MaxxVit, model_cfgs

    r = FAMILY.reduced
    cfg = dataclasses.replace(model_cfgs["maxvit_tiny_tf"], embed_dim=tuple(r["embed_dims"]), depths=tuple(r["depths"]),
                              stem_width=r["stem_width"], head_hidden_size=r["head_hidden_size"])
    return MaxxVit(cfg, img_size=size)

# parameter counts of the official models at 1000 classes (timm's TF ports count the same)
OFFICIAL_PARAMS = {
    "vz_maxvit_tiny": 30_916_528, "vz_maxvit_tiny_384": 30_977_008, "vz_maxvit_tiny_512": 31_049_584,
    "vz_maxvit_small": 68_927_956, "vz_maxvit_small_384": 69_018_676, "vz_maxvit_small_512": 69_127_540,
    "vz_maxvit_base": 119_467_708, "vz_maxvit_base_384": 119_653_468, "vz_maxvit_base_512": 119_876_380,
    "vz_maxvit_large": 211_785_560, "vz_maxvit_large_384": 212_033_240, "vz_maxvit_large_512": 212_330_456,
    "vz_maxvit_xlarge_384": 475_323_472, "vz_maxvit_xlarge_512": 475_769_296,
}
ALL_VARIANTS = timm.list_models("vz_maxvit_*")


def timm_name(name: str) -> str:
    """vz_maxvit_tiny -> maxvit_tiny_tf_224, vz_maxvit_base_384 -> maxvit_base_tf_384."""
    parts = name.split("_")[1:]
    size = parts[2] if len(parts) == 3 else "224"
    return f"maxvit_{parts[1]}_tf_{size}"


def randomized_timm_state(model: torch.nn.Module, seed: int) -> dict:
    """Every tensor of the state dict redrawn (non-persistent lookup buffers are not in it).
    Running variances stay positive; the scale keeps activations O(1) through 20+ blocks."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            state[k] = v
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.1
    return state


def test_variants_registered():
    assert set(OFFICIAL_PARAMS) | {"vz_maxvit_xlarge"} == set(ALL_VARIANTS)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_is_official(name):
    at_1000 = {} if timm.get_pretrained_cfg(name).num_classes == 1000 else dict(num_classes=1000)
    assert meta_param_count(name, **at_1000) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_timm_checkpoint_maps_onto_every_variant(name):
    """Every key of timm's converted checkpoint lands on a parameter/buffer of the same shape, none left over."""
    with torch.device("meta"):
        theirs = timm.create_model(timm_name(name))
    ours = meta_model(name)
    mapped = checkpoint_filter_fn(theirs.state_dict(), ours)
    ours_state = ours.state_dict()
    assert set(mapped) == set(ours_state)
    assert all(mapped[k].shape == ours_state[k].shape for k in mapped)
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())


def _load_through_file(name: str, theirs: torch.nn.Module, tmp_path, **kwargs) -> torch.nn.Module:
    """Ours, loaded from a file of timm's keys through timm's own pretrained path (our filter and reader)."""
    path = tmp_path / "maxvit.pth"
    torch.save({"model": theirs.state_dict()}, path)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs).eval()


def test_full_size_logits_match_timm(tmp_path):
    """The smallest full-size variant: vz_maxvit_tiny gives timm's maxvit_tiny_tf_224 logits."""
    theirs = timm.create_model("maxvit_tiny_tf_224").eval()
    theirs.load_state_dict(randomized_timm_state(theirs, seed=224))
    ours = _load_through_file("vz_maxvit_tiny", theirs, tmp_path)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert expected.abs().max() > 0.1  # the randomized weights give non-trivial logits
    # fp32, the same operations in a different order (fused qkv view vs permutes, bmm vs SDPA)
    assert (got - expected).abs().max() < 1e-4


@pytest.mark.parametrize("size", [384, 512])
def test_logits_match_timm_at_each_window(size, tmp_path):
    """The 384 / 512 variants (windows 12 / 16), reduced in depth and width on both sides."""
    theirs = reduced_timm(size).eval()
    theirs.load_state_dict(randomized_timm_state(theirs, seed=size))
    ours = _load_through_file(f"vz_maxvit_tiny_{size}", theirs, tmp_path, **FAMILY.reduced_kwargs())
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max() < 1e-4


def test_table_for_another_window_is_resized():
    """A 224 checkpoint (13x13 tables) loads into the 384 model (23x23 tables)."""
    with torch.device("meta"):
        small = timm.create_model("vz_maxvit_tiny")
    state = {k: torch.randn(v.shape) for k, v in small.state_dict().items()}
    big = timm.create_model("vz_maxvit_tiny_384")
    mapped = checkpoint_filter_fn(state, big)
    key = "stages.0.blocks.0.attn_grid.attn.rel_pos.relative_position_bias_table"
    assert state[key].shape == (2, 13, 13) and mapped[key].shape == (2, 23, 23)
    big.load_state_dict(mapped)
    # the resize keeps the table's centre (zero offset) and its mean roughly
    assert abs(mapped[key].mean() - state[key].mean()) < 0.1


def test_tensorflow_layout_is_refused():
    model = timm.create_model("vz_maxvit_tiny")
    with pytest.raises(ValueError, match="TensorFlow MaxViT checkpoint"):
        checkpoint_filter_fn({"maxvit/stem/conv_0/kernel": torch.zeros(3, 3, 3, 64)}, model)


def test_minimum_input_is_one_token_at_stride_32():
    model = timm.create_model("vz_maxvit_tiny").eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 512, 1, 1)
    with pytest.raises(ValueError, match="smaller than the minimum 32x32"):
        model(torch.randn(1, 3, 31, 64))


def test_train_mode_matches_timm():
    """Training uses separate BatchNorms (batch statistics); eval folds them into the convs. Both match timm
    (reduced configuration on both sides: the same blocks, fewer and narrower)."""
    theirs = reduced_timm(224).train()
    theirs.load_state_dict(randomized_timm_state(theirs, seed=7))
    for m in theirs.modules():  # timm keeps torch's 0.1; ours has the official TF momentum (0.99 = 0.01 here)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.01
    ours = timm.create_model("vz_maxvit_tiny", **FAMILY.reduced_kwargs()).train()
    ours.load_state_dict(checkpoint_filter_fn(theirs.state_dict(), ours))
    x = torch.randn(2, 3, 224, 224)  # timm runs only at multiples of 32 * window
    expected, got = theirs(x), ours(x)
    assert (got - expected).abs().max() < 1e-4
    expected.square().sum().backward()
    got.square().sum().backward()
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        # gradients of a squared-logit loss through the blocks: relative agreement to 1e-3
        torch.testing.assert_close(ours_params[name].grad, p.grad, rtol=1e-3, atol=1e-4, msg=name)
    for name, buf in theirs.named_buffers():  # running statistics updated alike
        if name.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(dict(ours.named_buffers())[name], buf, rtol=1e-4, atol=1e-5)


def test_detection_backbone_loads_a_checkpoint_trained_at_another_window(tmp_path):
    """A 384-px checkpoint (window 12) into the 224 det/seg backbone (window 7): the filter resizes the tables."""
    pytest.importorskip("mmdet", reason="the mm stack is not installed (bash tools/setup.sh --mm)")
    from safetensors.torch import save_file

    from visionzoo.mm import VisionZooBackbone
    from visionzoo.models.maxvit import FAMILY

    classifier = timm.create_model("vz_maxvit_tiny", **FAMILY.reduced_kwargs(window_size=12))
    path = tmp_path / "w12.safetensors"
    save_file(classifier.state_dict(), str(path))
    backbone = VisionZooBackbone("vz_maxvit_tiny", init_cfg=dict(type="Pretrained", checkpoint=str(path)),
                                 **FAMILY.reduced_kwargs())
    backbone.init_weights()
    table = "model.stages.0.blocks.0.attn_block.attn.rel_pos.relative_position_bias_table"
    assert classifier.state_dict()[table[len("model."):]].shape[-1] == 23
    assert backbone.state_dict()[table].shape[-1] == 13
    assert len(backbone.init_report["loaded"]) == len([k for k in backbone.state_dict() if k.startswith("model.")])
