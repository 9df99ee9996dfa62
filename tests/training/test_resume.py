"""Kill-and-resume: SIGKILL after a checkpoint, then `fit --ckpt_path last` (train.py subprocesses)."""
from __future__ import annotations

import json

import pytest
import torch

from .conftest import TINY, column, metrics, run_train

STEPS_PER_EPOCH = 6  # tiny.yaml: limit_train_batches


def _killer(step: int) -> str:
    return "--trainer.callbacks+=" + json.dumps({"class_path": "tests.training.killer.KillAtStep",
                                                 "init_args": {"step": step}})


def test_kill_and_resume(digits_root, tmp_path):
    common = ["fit", "--config", TINY, "--data.root", digits_root, "--trainer.max_epochs", "3",
              "--step_checkpoint.every_n_train_steps", "5"]
    reference = str(tmp_path / "reference")
    run_train(*common, "--trainer.default_root_dir", reference)
    ref = metrics(reference)

    run = str(tmp_path / "killed")
    # 1. killed as the first batch of epoch 1 starts: the newest checkpoint is the epoch-0 one (after validation)
    proc = run_train(*common, "--trainer.default_root_dir", run, _killer(STEPS_PER_EPOCH), check=False)
    assert proc.returncode == -9, proc.stderr[-3000:]
    # 2. resumed from it; killed again mid-epoch 2, after the step-15 checkpoint
    proc = run_train(*common, "--trainer.default_root_dir", run, "--ckpt_path", "last", _killer(16), check=False)
    assert proc.returncode == -9, proc.stderr[-3000:]
    resumed = metrics(run)
    # exact continuation from the epoch boundary: same losses (optimizer, schedule, RNG of mixup/RandAugment/drop
    # path/sampler restored) and the same EMA validation at the end of epoch 1
    ref_loss, loss = column(ref, "train/loss_step"), column(resumed, "train/loss_step")
    assert min(loss) == STEPS_PER_EPOCH, "the resumed run must continue from the saved global step"
    for step in range(STEPS_PER_EPOCH, 15):
        assert loss[step] == pytest.approx(ref_loss[step], rel=1e-5, abs=1e-6), step
    for key in ("val/top1", "val/loss"):
        assert column(resumed, key)[2 * STEPS_PER_EPOCH - 1] == pytest.approx(
            column(ref, key)[2 * STEPS_PER_EPOCH - 1], rel=1e-5), key
    ckpt = torch.load(f"{run}/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 15 and "state_dict_ema" in ckpt and "rng_states" in ckpt
    assert all(int(s["step"]) == 15 for s in ckpt["optimizer_states"][0]["state"].values())  # AdamW's own count
    assert ckpt["lr_schedulers"][0]["t_initial"] == 3 * STEPS_PER_EPOCH  # timm's per-update schedule

    # 3. resumed mid-epoch from step 15: the step count and the lr continue without a jump
    proc = run_train(*common, "--trainer.default_root_dir", run, "--ckpt_path", "last")
    final = metrics(run)
    lr, ref_lr = column(final, "train/lr"), column(ref, "train/lr")
    assert min(lr) == 15, f"resumed at step {min(lr)}, the checkpoint was at step 15"
    for step in lr:
        assert lr[step] == pytest.approx(ref_lr[step], rel=1e-6), step
    # Lightning restarts the interrupted epoch's data loader but keeps its batch count, so the epoch ends after the
    # batches that were left (3 here): the run ends at the same global step as the uninterrupted one
    assert max(lr) == max(ref_lr) == 3 * STEPS_PER_EPOCH - 1
    assert "val/top1" in {k for row in final for k, v in row.items() if v}
