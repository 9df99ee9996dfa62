"""Sparsifiner's two-phase recipes with the real Trainer on the digits folder: the recipe files themselves, shrunk
(a 2-block, 16-wide Sparsifiner at 32 px; the teacher is timm's DeiT class at the same size, random weights), one
epoch of a few batches each. Phase 1 trains only the predictors with the attention-reconstruction term; phase 2
trains only the backbone with classification + logit and token distillation."""
from __future__ import annotations

import os

import pytest
import torch

from visionzoo.training.cli import main

from .conftest import REPO, column, metrics

TINY_MODEL = "{img_size: 32, embed_dim: 16, depth: 2, num_heads: 1, reduce_n_factor: 1, basis_topk: 2}"
TEACHER = ("{model_name: deit_small_patch16_224, model_kwargs: {img_size: 32, embed_dim: 16, depth: 2, num_heads: 1},"
           " adapter: visionzoo.models.sparsifiner.deit_teacher_outputs}")


def _cli(recipe: str, digits_root: str, tmp_path, *extra: str):
    args = ["--config", os.path.join(REPO, "configs", "imagenet", f"{recipe}.yaml"), "--data.root", digits_root,
            "--trainer.default_root_dir", str(tmp_path / recipe), "--trainer.accelerator", "cpu",
            "--trainer.devices", "1", "--trainer.precision", "32-true", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--step_checkpoint.every_n_train_steps", "0",
            "--data.batch_size", "8", "--data.val_batch_size", "8", "--data.num_workers", "0",
            "--data.input_size", "32", "--model.num_classes", "10", "--model.model_ema", "false",
            "--model.pretrained", "false", "--model.teacher", TEACHER, *extra]
    return main(args, run=False)


def _params(cli):
    return {n: p.detach().clone() for n, p in cli.model.model.named_parameters()}


def _changed(before, cli):
    return {n for n, p in cli.model.model.named_parameters() if not torch.equal(p, before[n])}


def test_two_phases(digits_root, tmp_path):
    cli = _cli("vz_sparsifiner_deit_small.attn_recon", digits_root, tmp_path,
               "--model.model_kwargs", "{attn_recon: true, " + TINY_MODEL[1:])
    assert all(b.attn.mask_predictor.attn_recon for b in cli.model.model.blocks)
    before = _params(cli)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    changed = _changed(before, cli)
    assert changed and all(".mask_predictor." in n for n in changed)
    rows = metrics(cli.trainer.default_root_dir)
    total, recon = column(rows, "train/loss_step"), column(rows, "train/loss_distill_attn")
    assert len(total) == 2 and all(recon[s] > 0 and total[s] == pytest.approx(recon[s], rel=1e-5) for s in total)
    path = tmp_path / "phase1.pth"
    torch.save(cli.model.model.state_dict(), path)

    cli = _cli("vz_sparsifiner_deit_small.cls_distill", digits_root, tmp_path,
               "--model.model_kwargs", TINY_MODEL, "--model.pretrained_file", str(path))
    assert not any(b.attn.mask_predictor.attn_recon for b in cli.model.model.blocks)
    loaded = _params(cli)
    phase1 = torch.load(path)
    assert all(torch.equal(v, phase1[n]) for n, v in loaded.items())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    changed = _changed(loaded, cli)
    assert changed and not any(".mask_predictor." in n for n in changed)
    rows = metrics(cli.trainer.default_root_dir)
    names = ["cls", "distill_logits", "distill_tokens"]
    logged = {n: column(rows, f"train/loss_{n}") for n in names}
    total = column(rows, "train/loss_step")
    for step in total:
        assert total[step] == pytest.approx(sum(logged[n][step] for n in names), rel=1e-5)
