"""The shared checkpoint reader (models/_checkpoint.py): files saved the way official training scripts save them
(``args`` as an argparse.Namespace with paths and numpy values, numpy scalars, optimizer and AMP-scaler states,
EMA copies) load without unpickling anything else; the family chooses the wrapper key and the choice is logged."""
from __future__ import annotations

import argparse
import logging
import pathlib

import numpy as np
import pytest
import timm
import torch

from visionzoo.models._checkpoint import WRAPPER_KEYS, PretrainedFileMixin, read_checkpoint

from ..conftest import CONTRACT_MODELS, meta_model, reduced_model


def _keeps_timm_order(name: str) -> bool:
    """The family reads wrapper keys in timm's order (EMA first) and chooses nothing per file."""
    cls = type(meta_model(name))
    return (cls.checkpoint_prefer == WRAPPER_KEYS
            and cls.checkpoint_prefer_for is PretrainedFileMixin.checkpoint_prefer_for)


# the first contract model that keeps the reader's defaults (several families prefer `model`, as their evaluation)
SUBJECT = next(name for name in CONTRACT_MODELS if _keeps_timm_order(name))
CODE_RAN = []


def _official_style_checkpoint(model: torch.nn.Module) -> dict:
    """What DeiT / ConvNeXt / Swin-style main.py files save (``utils.save_on_master``)."""
    weights = model.state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(1, 3, 64, 64)).mean().backward()
    opt.step()
    args = argparse.Namespace(model="x", lr=np.float64(5e-4), input_size=224, output_dir=pathlib.Path("/tmp/out"),
                              mean=np.array([0.485, 0.456, 0.406]), resume="", dist_url="env://")
    return {"model": weights, "model_ema": ema, "optimizer": opt.state_dict(), "lr_scheduler": {"last_epoch": 3},
            "epoch": 299, "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 17},
            "max_accuracy": np.float64(82.71), "args": args}


def test_official_training_checkpoint_loads_through_create_model(tmp_path, caplog):
    source = reduced_model(SUBJECT)
    checkpoint = _official_style_checkpoint(source)
    path = tmp_path / "checkpoint-best-ema.pth"
    torch.save(checkpoint, path)
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):  # what plain torch.load says
        torch.load(path, weights_only=True)
    with caplog.at_level(logging.INFO, logger="visionzoo"):
        model = reduced_model(SUBJECT, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    for k, v in model.state_dict().items():  # timm's order by default: the EMA copy wins
        assert torch.equal(v, checkpoint["model_ema"][k]), k
    assert "weights from 'model_ema'" in caplog.text and "also present: ['model']" in caplog.text
    loaded = read_checkpoint(str(path))
    assert loaded["args"].output_dir == pathlib.Path("/tmp/out") and float(loaded["max_accuracy"]) == 82.71


def test_a_family_chooses_the_wrapper_key(tmp_path, caplog):
    """A family whose official evaluation reads ``model`` (not the EMA copy) sets ``checkpoint_prefer``."""
    path = tmp_path / "checkpoint.pth"
    checkpoint = _official_style_checkpoint(reduced_model(SUBJECT))
    torch.save(checkpoint, path)
    model = reduced_model(SUBJECT)
    cls = type(model)
    model.__class__ = type("PrefersModel", (cls,), {"checkpoint_prefer": ("model",), "__module__": cls.__module__})
    with caplog.at_level(logging.INFO, logger="visionzoo"):
        model.load_pretrained(str(path))
    for k, v in model.state_dict().items():
        assert torch.equal(v, checkpoint["model"][k]), k
    assert "weights from 'model'" in caplog.text


def _mark(*args):
    CODE_RAN.append(args)
    return {}


class RunsCode:
    """Unpickling this calls ``_mark``: what a malicious checkpoint would do with os.system."""

    def __reduce__(self):
        return (_mark, ("unpickled",))


def test_other_pickled_objects_are_refused_without_running_them(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": reduced_model(SUBJECT).state_dict(), "hook": RunsCode()}, path)
    with pytest.raises(ValueError, match=r"pickled objects besides tensors.*_mark"):
        reduced_model(SUBJECT, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert CODE_RAN == []


def test_new_head_and_input_channels_from_an_official_file(tmp_path):
    """timm's adaptations after the filter: a new classifier size drops the file's head; in_chans adapts the stem."""
    checkpoint = _official_style_checkpoint(reduced_model(SUBJECT))
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path)
    model = reduced_model(SUBJECT, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=3,
                          in_chans=1)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 3)
    first = model.pretrained_cfg["first_conv"] + ".weight"
    torch.testing.assert_close(model.state_dict()[first], checkpoint["model_ema"][first].sum(1, keepdim=True))
    assert timm.get_pretrained_cfg(SUBJECT).custom_load
