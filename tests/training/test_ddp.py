"""A 2-process DDP run on CPU (gloo), launched by Lightning from train.py (a subprocess: the launcher re-runs argv)."""
from __future__ import annotations

import os

import pytest
import torch

from visionzoo.training.cli import main

from .conftest import TINY, column, metrics, run_train


def test_ddp_two_processes_on_cpu(digits_root, tmp_path):
    run = str(tmp_path / "ddp")
    proc = run_train("fit", "--config", TINY, "--data.root", digits_root, "--trainer.default_root_dir", run,
                     "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_epochs", "1",
                     "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1.0",
                     "--data.val_batch_size", "90")
    assert "global batch 32" in proc.stdout  # 16 per process x 2 processes: lr scaled for 32
    rows = metrics(run)
    # 360 held-out images, 180 per rank: the logged count and accuracy are over both ranks
    assert list(column(rows, "val/images").values()) == [360.0]
    assert list(column(rows, "train/lr")) == [0, 1, 2]
    last = os.path.join(run, "checkpoints", "last.ckpt")
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3 and "state_dict_ema" in ckpt
    # one process over the same 360 images and weights gives the accuracy the two ranks logged together
    main(["validate", "--config", TINY, "--data.root", digits_root, "--trainer.default_root_dir", run,
          "--trainer.limit_val_batches", "1.0", "--data.val_batch_size", "90", "--ckpt_path", last])
    single = metrics(run)
    assert column(single, "val/images")[0] == 360
    assert column(single, "val/top1")[0] == pytest.approx(list(column(rows, "val/top1").values())[0], abs=1e-3)
