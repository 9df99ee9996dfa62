"""The launcher (python -m visionzoo.mm.run) with mmengine's real Runner: train, resume, test on a tiny fake
ADE20K-layout dataset. TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set only for resuming and testing."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from visionzoo.models import FAMILIES

from ..conftest import FAMILY_NAMES
from .conftest import REPO, require_mm

require_mm()

# the launcher is generic: any family's segmentation smoke config, with its reduced backbone
FAMILY = next(FAMILIES[n] for n in FAMILY_NAMES if any(c.startswith("mmseg/") for c in FAMILIES[n].smoke_configs))
SEG_CONFIG = next(c for c in FAMILY.smoke_configs if c.startswith("mmseg/"))

from PIL import Image  # noqa: E402

from visionzoo.mm.run import build_runner, parse_args  # noqa: E402

VAR = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def _dataset(root):
    rng = np.random.default_rng(0)
    for split, n in (("training", 2), ("validation", 1)):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(root / "images" / split / f"{i}.jpg")
            Image.fromarray(rng.integers(0, 151, (64, 80), dtype=np.uint8)).save(
                root / "annotations" / split / f"{i}.png")


def _config(tmp_path):
    data = tmp_path / "ade"
    _dataset(data)
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
                dict(type="PackSegInputs")]
    loader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=str(data), pipeline=pipeline))
    from visionzoo.mm import VisionZooBackbone

    reduced = FAMILY.reduced_kwargs()
    with torch.device("meta"):
        channels = VisionZooBackbone(FAMILY.contract_model, **reduced).out_channels
    cfg = tmp_path / "tiny_upernet.py"
    cfg.write_text(f"""
_base_ = [{str(REPO / 'configs' / SEG_CONFIG)!r}]
model = dict(
    data_preprocessor=dict(size=(64, 80)),
    backbone=dict(init_cfg=None, **{reduced!r}),
    decode_head=dict(in_channels={channels!r}, channels=32),
    auxiliary_head=dict(in_channels={channels[2]}, channels=16))
train_dataloader = dict(batch_size=2, **{loader!r})
test_dataloader = dict(batch_size=1, **{loader!r})
val_dataloader = None
val_cfg = None
val_evaluator = None
train_cfg = dict(max_iters=2, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
""")
    return str(cfg)


def test_train_resume_test(tmp_path, monkeypatch):
    monkeypatch.setenv(VAR, "0")  # restored afterwards; "0" counts as unset for torch
    config, work = _config(tmp_path), str(tmp_path / "work")

    runner = build_runner(parse_args(["train", config, "--work-dir", work]))
    runner.train()
    assert runner.iter == 2
    assert os.environ[VAR] == "0"  # a plain training run does not relax torch.load
    checkpoint = tmp_path / "work" / "iter_2.pth"
    with pytest.raises(pickle.UnpicklingError):  # why resuming needs the variable on torch >= 2.6
        torch.load(checkpoint)

    runner = build_runner(parse_args(["train", config, "--work-dir", work, "--resume",
                                      "--cfg-options", "train_cfg.max_iters=3"]))
    assert os.environ[VAR] == "1"
    runner.train()
    assert runner.iter == 3 and runner._has_loaded  # resumed at iteration 2, trained one more

    monkeypatch.setenv(VAR, "0")
    runner = build_runner(parse_args(["test", config, str(tmp_path / "work" / "iter_3.pth"), "--work-dir", work]))
    assert os.environ[VAR] == "1"
    metrics = runner.test()
    assert "mIoU" in metrics


def test_config_by_name(tmp_path, monkeypatch, capsys):
    """A shipped config's name instead of its path (visionzoo.recipes): from any folder, by its path under configs/
    or its file name. An unknown name is a usage error."""
    monkeypatch.chdir(tmp_path)  # no configs/ here
    path = str(REPO / "configs" / SEG_CONFIG)
    for name in (SEG_CONFIG, os.path.basename(SEG_CONFIG)[:-3]):
        args = parse_args(["train", name])
        assert args.config == path
    assert parse_args(["test", path, "ckpt.pth"]).config == path  # a path stays a path
    with pytest.raises(SystemExit) as exit_:
        parse_args(["train", SEG_CONFIG.replace("upernet", "upernte")])
    assert exit_.value.code == 2 and f"closest: {SEG_CONFIG}" in capsys.readouterr().err
