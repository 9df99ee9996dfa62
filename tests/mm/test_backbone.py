"""VisionZooBackbone on its own: stage counting, freezing, norm_eval, checkpoints, bad input."""
from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from .conftest import NARROW, NARROW_CHANNELS, require_mm

require_mm()

from visionzoo.mm import VisionZooBackbone  # noqa: E402


def narrow(**kwargs) -> VisionZooBackbone:
    return VisionZooBackbone("vz_maxvit_tiny", **{**NARROW, **kwargs})


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3), (1, 2, 3), (0, 2)])
def test_out_indices_count_stages_not_timm_levels(out_indices):
    backbone = narrow(out_indices=out_indices).eval()
    H, W = 100, 150  # not a multiple of 32: what a detector pipeline hands over before padding
    with torch.no_grad():
        outs = backbone(torch.randn(2, 3, H, W))
    assert len(outs) == len(out_indices)
    for i, out in zip(out_indices, outs):
        stride = 4 * 2 ** i
        assert out.shape == (2, NARROW_CHANNELS[i], _ceil_div(H, stride), _ceil_div(W, stride))
    assert backbone.out_channels == [NARROW_CHANNELS[i] for i in out_indices]


def test_real_tiny_is_the_features_only_path():
    """vz_maxvit_tiny for real: without output norms the levels are exactly timm's features_only stages 1-4."""
    name = "vz_maxvit_tiny"
    backbone = VisionZooBackbone(name, out_norm=False).eval()
    features = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4)).eval()
    features.load_state_dict({k.replace("stages.", "stages_", 1): v for k, v in backbone.model.state_dict().items()})
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        ours, theirs = backbone(x), features(x)
    assert backbone.out_channels == features.feature_info.channels() == [64, 128, 256, 512]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # same modules, same maths


def test_detection_sized_input():
    """800x1333 (mmdet's test scale, padded to 800x1344 by the data preprocessor) and the unpadded size."""
    backbone = narrow().eval()
    for H, W in [(800, 1344), (800, 1333)]:
        with torch.no_grad():
            outs = backbone(torch.randn(1, 3, H, W))
        assert [o.shape[-2:] for o in outs] == [(_ceil_div(H, s), _ceil_div(W, s)) for s in (4, 8, 16, 32)]
        assert all(torch.isfinite(o).all() for o in outs)


def test_output_norms_and_no_unused_parameters():
    backbone = narrow()
    assert sorted(backbone.out_norms) == ["0", "1", "2", "3"]
    assert not any(k.startswith("model.head") for k in backbone.state_dict())  # classifier head dropped
    sum(o.mean() for o in backbone(torch.randn(2, 3, 64, 64))).backward()
    no_grad = [n for n, p in backbone.named_parameters() if p.grad is None]
    assert not no_grad  # DDP without find_unused_parameters needs this
    assert not narrow(out_norm=False).out_norms


def _stage_of(name: str):
    if name.startswith("model.stem."):
        return 0
    if name.startswith("model.stages."):
        return int(name.split(".")[2]) + 1
    return None  # the output norms


@pytest.mark.parametrize("frozen_stages", [-1, 0, 1, 2, 4])
def test_frozen_stages(frozen_stages):
    backbone = narrow(frozen_stages=frozen_stages, drop_path_rate=0.1)
    backbone.train()
    loss = sum(o.mean() for o in backbone(torch.randn(2, 3, 64, 64)))
    assert loss.requires_grad is (frozen_stages < 4)
    if loss.requires_grad:
        loss.backward()
    for name, p in backbone.named_parameters():
        stage = _stage_of(name)
        if stage is None:  # out_norms.<i> is frozen with stage i
            stage = int(name.split(".")[1]) + 1
        frozen = stage <= frozen_stages
        assert p.requires_grad is not frozen, name
        assert (p.grad is None) is frozen, name
    for name, m in backbone.named_modules():
        parts = name.split(".")
        if len(parts) >= 3 and parts[:2] == ["model", "stem"] or len(parts) >= 3 and parts[1] == "stages":
            stage = _stage_of(name)
            assert m.training is not (stage <= frozen_stages), name  # BN and DropPath of frozen stages: eval


def test_norm_eval_keeps_batchnorm_statistics():
    backbone = narrow(norm_eval=True)
    backbone.train()
    bns = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    assert backbone.training and backbone.out_norms["0"].training
    before = [bn.running_mean.clone() for bn in bns]
    backbone(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, bns))
    assert any(bn.training for bn in narrow(norm_eval=False).train().modules() if isinstance(bn, torch.nn.BatchNorm2d))


def test_drop_path_rate_reaches_the_model():
    def rates(model):
        return [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    reference = rates(timm.create_model("vz_maxvit_tiny", drop_path_rate=0.3, **NARROW))
    assert reference and max(reference) > 0
    assert rates(narrow(drop_path_rate=0.3)) == reference
    assert rates(narrow()) == []


# ---- checkpoints ------------------------------------------------------------------------------------------------

def test_init_cfg_loads_a_classification_checkpoint(tmp_path):
    classifier = timm.create_model("vz_maxvit_tiny", **NARROW)
    state = classifier.state_dict()
    path = tmp_path / "classifier.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    backbone = narrow(init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    backbone.init_weights()
    ours = backbone.state_dict()
    inner = [k for k in ours if k.startswith("model.")]
    assert inner and all(torch.equal(ours[k], state[k[len("model."):]]) for k in inner)
    report = backbone.init_report
    assert sorted(report["loaded"]) == sorted(inner)
    assert report["new"] == sorted(k for k in ours if k.startswith("out_norms."))
    assert report["unused"] and all(k.startswith("model.head.") for k in report["unused"])


def test_prefix_and_a_detector_checkpoint(tmp_path):
    """A detector's state dict (prefix="backbone."), in a plain torch file: every key, output norms included."""
    source = narrow()
    with torch.no_grad():
        for p in source.out_norms.parameters():
            p.uniform_()
    detector_state = {"backbone." + k: v for k, v in source.state_dict().items()}
    detector_state["neck.lateral.weight"] = torch.zeros(3)
    path = tmp_path / "detector.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": detector_state}, path)
    backbone = narrow(init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."))
    backbone.init_weights()
    assert backbone.init_report["new"] == []
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, source.state_dict()[k]), k
    with pytest.raises(ValueError, match="prefix 'detector.'.*'backbone.', 'neck.'"):
        narrow(init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="detector.")).init_weights()


def test_checkpoint_for_another_architecture(tmp_path):
    other = timm.create_model("vz_maxvit_tiny", embed_dims=(32, 64, 96, 128), depths=(1, 1, 1, 1), stem_width=16)
    path = tmp_path / "other.safetensors"
    save_file(other.state_dict(), str(path))
    backbone = narrow(init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    with pytest.raises(ValueError, match=r"does not fit vz_maxvit_tiny.*shape mismatch.*stages\.2"):
        backbone.init_weights()


class RunnerState:
    """Stands for what an mmengine Runner checkpoint pickles besides tensors (its message hub)."""


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "runner.pth"
    torch.save({"state_dict": {"backbone." + k: v for k, v in narrow().state_dict().items()},
                "message_hub": RunnerState()}, path)
    backbone = narrow(init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."))
    with pytest.raises(ValueError, match="pickled objects"):
        backbone.init_weights()


def test_missing_checkpoint_file(tmp_path):
    backbone = narrow(init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "nope.pth")))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        backbone.init_weights()


@pytest.mark.parametrize("kwargs, match", [
    (dict(model_name="vz_maxvit_nano"), r"unknown model_name 'vz_maxvit_nano'; registered zoo models: .*vz_maxvit_tiny"),
    (dict(out_indices=(0, 4)), r"out_indices must be distinct stage indices in 0\.\.3 .*got \(0, 4\)"),
    (dict(out_indices=(1, 1)), r"out_indices must be distinct .*got \(1, 1\)"),
    (dict(out_indices=()), r"out_indices must be"),
    (dict(frozen_stages=5), r"frozen_stages must be -1 .* 4 .*got 5"),
    (dict(frozen_stages=-2), r"frozen_stages must be .*got -2"),
])
def test_bad_arguments(kwargs, match):
    args = dict(model_name="vz_maxvit_tiny", **NARROW)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        VisionZooBackbone(**args)


def test_checkpoint_trained_at_another_window(tmp_path):
    """A 384-px checkpoint (window 12) into the 224 model (window 7): the filter resizes the position tables."""
    classifier = timm.create_model("vz_maxvit_tiny", window_size=12, **NARROW)
    path = tmp_path / "w12.safetensors"
    save_file(classifier.state_dict(), str(path))
    backbone = narrow(init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    backbone.init_weights()
    table = "model.stages.0.blocks.0.attn_block.attn.rel_pos.relative_position_bias_table"
    assert classifier.state_dict()[table[len("model."):]].shape[-1] == 23
    assert backbone.state_dict()[table].shape[-1] == 13
    assert len(backbone.init_report["loaded"]) == len([k for k in backbone.state_dict() if k.startswith("model.")])


def test_with_cp():
    backbone = narrow(with_cp=True)
    assert all(stage.grad_checkpointing for stage in backbone.model.stages)
    sum(o.mean() for o in backbone(torch.randn(1, 3, 64, 64))).backward()
    assert all(p.grad is not None for p in backbone.parameters())
