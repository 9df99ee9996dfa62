"""VisionZooBackbone on its own: output counting, freezing, norm_eval, checkpoints, bad input.

The structural tests run on every family's reduced contract model (FAMILY.reduced); the checkpoint mechanics on
the first one.
"""
from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from visionzoo.models import family_of

from ..conftest import CONTRACT_MODELS, reduced_model
from .conftest import require_mm

require_mm()

from visionzoo.mm import VisionZooBackbone  # noqa: E402

SUBJECT = CONTRACT_MODELS[0]  # the checkpoint-mechanics tests need one model, any family


def narrow(name: str = SUBJECT, **kwargs) -> VisionZooBackbone:
    return VisionZooBackbone(name, **family_of(name).reduced_kwargs(**kwargs))


def reduced_channels(name: str):
    return VisionZooBackbone(name, **family_of(name).reduced_kwargs()).out_channels


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _strides(backbone: VisionZooBackbone):
    info = backbone.hook
    template = timm.create_model(backbone.model_name, **family_of(backbone.model_name).reduced_kwargs())
    levels = info.levels(backbone.model_name, template.feature_info)
    return info.out_strides(template.feature_info, levels)


@pytest.mark.parametrize("name", CONTRACT_MODELS)
@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3), (1, 2, 3), (0, 2)])
def test_out_indices_count_outputs_not_timm_levels(name, out_indices):
    full = reduced_channels(name)
    backbone = narrow(name, out_indices=out_indices).eval()
    strides = _strides(backbone)
    H, W = 100, 150  # not a multiple of 32: what a detector pipeline hands over before padding
    with torch.no_grad():
        outs = backbone(torch.randn(2, 3, H, W))
    assert len(outs) == len(out_indices)
    for i, out in zip(out_indices, outs):
        assert out.shape[:2] == (2, full[i])
        assert out.shape[2:] in ((_ceil_div(H, strides[i]), _ceil_div(W, strides[i])), (H // strides[i], W // strides[i]))
    assert backbone.out_channels == [full[i] for i in out_indices]


@pytest.mark.parametrize("name", CONTRACT_MODELS)
def test_levels_are_the_features_only_path(name):
    """Without output norms the outputs are exactly the model's forward_intermediates at the hook's levels."""
    backbone = narrow(name, out_norm=False).eval()
    model = reduced_model(name).eval()
    model.load_state_dict(backbone.model.state_dict(), strict=False)  # the backbone dropped the head
    levels = backbone.hook.levels(name, model.feature_info)
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        ours = backbone(x)
        theirs = model.forward_intermediates(x, indices=levels, intermediates_only=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # same modules, same maths


@pytest.mark.parametrize("name", CONTRACT_MODELS)
def test_detection_sized_input(name):
    """800x1333: mmdet's test scale, unpadded (the data preprocessor pads to 800x1344; odd sizes are the harder case)."""
    backbone = narrow(name).eval()
    strides = _strides(backbone)
    for H, W in [(800, 1333)]:
        with torch.no_grad():
            outs = backbone(torch.randn(1, 3, H, W))
        assert [o.shape[-2] for o in outs] in ([_ceil_div(H, s) for s in strides], [H // s for s in strides])
        assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("name", CONTRACT_MODELS)
def test_output_norms_and_no_unused_parameters(name):
    backbone = narrow(name)
    assert sorted(backbone.out_norms) == ["0", "1", "2", "3"]
    assert not any(k.startswith("model.head") for k in backbone.state_dict())  # classifier head dropped
    sum(o.mean() for o in backbone(torch.randn(2, 3, 64, 64))).backward()
    no_grad = [n for n, p in backbone.named_parameters() if p.grad is None]
    assert not no_grad  # DDP without find_unused_parameters needs this
    assert not narrow(name, out_norm=False).out_norms


def _stage_numbers(backbone: VisionZooBackbone):
    """{module name: stage number} for the model's top-level units in forward order: what comes before the first
    stage module is the stem (0), stage module i is i + 1, and a unit between stages (a downsampler) has the
    number of the stage before it (it is frozen with that stage)."""
    numbers, seen = {}, 0
    for name, _, stage in backbone._units():
        if stage is not None:
            seen = stage + 1
            numbers[name] = seen
        else:
            numbers[name] = seen
    return numbers


@pytest.mark.parametrize("name", CONTRACT_MODELS)
@pytest.mark.parametrize("frozen_stages", [0, 2, 4])
def test_frozen_stages(name, frozen_stages):
    backbone = narrow(name, frozen_stages=frozen_stages, drop_path_rate=0.1)
    backbone.train()
    loss = sum(o.mean() for o in backbone(torch.randn(2, 3, 64, 64)))
    assert loss.requires_grad is (frozen_stages < 4)
    if loss.requires_grad:
        loss.backward()
    numbers = _stage_numbers(backbone)
    for pname, p in backbone.named_parameters():
        if pname.startswith("out_norms."):  # out_norms.<i> is frozen with stage i
            stage = int(pname.split(".")[1]) + 1
        else:
            unit = next((u for u in numbers if pname.startswith("model." + u + ".")), None)
            stage = numbers[unit] if unit is not None else 0  # on the model itself (a ViT's pos_embed): the stem
        frozen = stage <= frozen_stages
        assert p.requires_grad is not frozen, pname
        assert (p.grad is None) is frozen, pname
    for unit, stage in numbers.items():
        for mname, m in backbone.model.get_submodule(unit).named_modules():
            assert m.training is not (stage <= frozen_stages), f"{unit}.{mname}"  # BN, DropPath of frozen stages: eval


@pytest.mark.parametrize("bn", [torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm])
def test_norm_eval_keeps_every_batchnorm_kind_frozen(bn):
    """norm_eval=True keeps every BatchNorm in eval mode, SyncBatchNorm included (the official RAVLT det backbone
    builds SyncBN, on which its norm_eval silently did nothing)."""
    backbone = narrow(norm_eval=True)
    backbone.model.add_module("extra_bn", bn(4))
    backbone.train()
    bns = [m for m in backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert backbone.model.extra_bn in bns and not any(m.training for m in bns)
    assert backbone.training and backbone.out_norms["0"].training
    before = [m.running_mean.clone() for m in bns]
    backbone(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns))
    plain = narrow(norm_eval=False)
    plain.model.add_module("extra_bn", bn(4))
    assert plain.train().model.extra_bn.training


def test_drop_path_rate_reaches_the_model():
    def rates(model):
        return [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    reference = rates(reduced_model(SUBJECT, drop_path_rate=0.3))
    assert reference and max(reference) > 0
    assert rates(narrow(drop_path_rate=0.3)) == reference
    assert rates(narrow()) == []


# ---- checkpoints ------------------------------------------------------------------------------------------------

def test_init_cfg_loads_a_classification_checkpoint(tmp_path):
    classifier = reduced_model(SUBJECT)
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
    head = classifier.pretrained_cfg["classifier"]
    assert report["unused"] and any(k.startswith(f"model.{head}.") for k in report["unused"])


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
    state = reduced_model(SUBJECT).state_dict()
    key = next(k for k, v in state.items() if v.dim() == 2 and "head" not in k)
    state[key] = torch.cat([state[key], state[key]])
    path = tmp_path / "other.safetensors"
    save_file(state, str(path))
    backbone = narrow(init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    with pytest.raises(ValueError, match=rf"does not fit {SUBJECT}.*shape mismatch.*{key}"):
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
    (dict(model_name="vz_no_such_model"), rf"unknown model_name 'vz_no_such_model'; registered zoo models: .*{SUBJECT}"),
    (dict(out_indices=(0, 4)), r"out_indices must be distinct output indices in 0\.\.3 .*got \(0, 4\)"),
    (dict(out_indices=(1, 1)), r"out_indices must be distinct .*got \(1, 1\)"),
    (dict(out_indices=()), r"out_indices must be"),
    (dict(frozen_stages=5), r"frozen_stages must be -1 .* 4 .*got 5"),
    (dict(frozen_stages=-2), r"frozen_stages must be .*got -2"),
])
def test_bad_arguments(kwargs, match):
    args = dict(model_name=SUBJECT, **family_of(SUBJECT).reduced_kwargs())
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        VisionZooBackbone(**args)


def test_with_cp():
    backbone = narrow(with_cp=True)
    flags = [m.grad_checkpointing for m in backbone.model.modules() if hasattr(m, "grad_checkpointing")]
    assert flags and all(flags)
    sum(o.mean() for o in backbone(torch.randn(1, 3, 64, 64))).backward()
    assert all(p.grad is not None for p in backbone.parameters())
