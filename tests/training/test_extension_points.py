"""The training extension points, each with the real Trainer on the digits folder (tests/training/tiny.yaml):
named auxiliary outputs, a teacher with distillation terms, phase training of matching parameters.

The student is a toy family member: tiny.yaml's small MaxViT plus an auxiliary classifier and a ``forward_train``
that returns named outputs, registered under a name that does not start with ``vz_``.
"""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import register_model

from visionzoo.training.cli import main
from visionzoo.training.module import DISTILL_LOSSES

from .conftest import TINY, column, metrics


class AuxOutputs:
    """forward_train: the logits, an auxiliary classifier's logits, the final map and the per-stage maps."""

    def forward_train(self, x):
        final, stages = self.forward_intermediates(x)
        return {"logits": self.forward_head(final), "aux_logits": self.aux_head(final.mean((2, 3))),
                "features": final, "stages": stages}


@register_model
def exttest_aux(pretrained=False, **kwargs):
    model = timm.create_model("vz_maxvit_tiny", **kwargs)
    model.aux_head = nn.Linear(model.num_features, model.num_classes)
    cls = type(model)
    model.__class__ = type("AuxMaxViT", (AuxOutputs, cls), {"__module__": cls.__module__})
    return model


def _cli(digits_root, tmp_path, *extra):
    args = ["--config", TINY, "--data.root", digits_root, "--trainer.default_root_dir", str(tmp_path / "run"),
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.num_sanity_val_steps", "0",
            "--model.model_ema", "false", *extra]
    return main(args, run=False)


def _fit(cli):
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return metrics(cli.trainer.default_root_dir)


def test_named_auxiliary_outputs_are_weighted_loss_terms(digits_root, tmp_path):
    cli = _cli(digits_root, tmp_path, "--model.model_name", "exttest_aux", "--model.aux_loss_weights",
               "{aux_logits: 0.4}")
    rows = _fit(cli)
    total, cls, aux = (column(rows, k) for k in ("train/loss_step", "train/loss_cls", "train/loss_aux_aux_logits"))
    assert len(total) == 3 and set(total) == set(cls) == set(aux)
    for step in total:
        assert total[step] == pytest.approx(cls[step] + aux[step], rel=1e-5)
        assert aux[step] > 0

    with pytest.raises(KeyError, match="aux_loss_weights names 'nope'.*aux_logits"):
        _fit(_cli(digits_root, tmp_path, "--model.model_name", "exttest_aux", "--model.aux_loss_weights", "{nope: 1}"))
    with pytest.raises(ValueError, match="has no forward_train"):
        _cli(digits_root, tmp_path, "--model.aux_loss_weights", "{aux_logits: 0.4}")


def test_teacher_and_distillation_terms(digits_root, tmp_path):
    terms = ("[{output: logits, loss: kl, weight: 0.5, tau: 2.0}, {output: features, loss: mse, weight: 0.5},"
             " {output: stages, loss: mse, weight: 0.1}, {output: aux_logits, teacher_output: logits, loss: hard_ce}]")
    teacher = "{model_name: exttest_aux, model_kwargs: {embed_dims: [16, 32], depths: [1, 1], stem_width: 8, " \
              "window_size: 4, head_dim: 8, head_hidden_size: 32}}"
    cli = _cli(digits_root, tmp_path, "--model.model_name", "exttest_aux", "--model.teacher", teacher,
               "--model.distill", terms)
    teacher_before = {k: v.clone() for k, v in cli.model.teacher.state_dict().items()}
    rows = _fit(cli)
    names = ["cls", "distill_logits", "distill_features", "distill_stages", "distill_aux_logits"]
    logged = {n: column(rows, f"train/loss_{n}") for n in names}
    total = column(rows, "train/loss_step")
    for step in total:
        assert total[step] == pytest.approx(sum(logged[n][step] for n in names), rel=1e-5)
    assert all(torch.equal(v, teacher_before[k]) for k, v in cli.model.teacher.state_dict().items())
    assert not any(k.startswith("teacher") for k in cli.model.state_dict())  # not saved in checkpoints
    assert not cli.model.teacher.training

    with pytest.raises(ValueError, match="model.distill needs model.teacher"):
        _cli(digits_root, tmp_path, "--model.model_name", "exttest_aux", "--model.distill", "[{output: logits, loss: kl}]")
    with pytest.raises(ValueError, match="loss one of"):
        _cli(digits_root, tmp_path, "--model.model_name", "exttest_aux", "--model.teacher", teacher,
             "--model.distill", "[{output: logits, loss: l1}]")


def test_distillation_losses_match_their_formulas():
    torch.manual_seed(0)
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    expected = (F.softmax(t / 2, -1) * (F.log_softmax(t / 2, -1) - F.log_softmax(s / 2, -1))).sum(-1).mean() * 4
    torch.testing.assert_close(DISTILL_LOSSES["kl"](s, t, 2.0), expected)
    torch.testing.assert_close(DISTILL_LOSSES["hard_ce"](s, t, 1.0), F.cross_entropy(s, t.argmax(-1)))
    assert DISTILL_LOSSES["kl"](t, t, 3.0).abs() < 1e-6


def test_phase_training_updates_only_matching_parameters(digits_root, tmp_path):
    cli = _cli(digits_root, tmp_path, "--model.trainable", r"[^head\.]", "--trainer.gradient_clip_val", "0")
    before = {k: v.clone() for k, v in cli.model.model.state_dict().items()}
    _fit(cli)
    after = cli.model.model.state_dict()
    changed = {k for k, v in after.items() if v.is_floating_point() and not torch.equal(v, before[k])}
    params = {n for n, _ in cli.model.model.named_parameters()}
    assert changed & params and all(k.startswith("head.") for k in changed & params)
    optimized = {id(p) for g in cli.trainer.optimizers[0].param_groups for p in g["params"]}
    assert optimized == {id(p) for n, p in cli.model.model.named_parameters() if n.startswith("head.")}

    with pytest.raises(ValueError, match=r"model.trainable \['nothing-matches'\] matches no parameter"):
        _cli(digits_root, tmp_path, "--model.trainable", "[nothing-matches]")
