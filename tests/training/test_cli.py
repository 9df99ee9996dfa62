"""train.py's CLI in-process (single device: no launcher re-runs sys.argv): recipes, strategies, fit / validate /
predict, official-weights evaluation, wandb offline."""
from __future__ import annotations

import contextlib
import glob
import importlib.util
import io
import os

import pytest
import timm
import torch
import yaml
from timm.scheduler import CosineLRScheduler

from visionzoo.training.cli import main

from visionzoo.models import FAMILIES

from ..conftest import FAMILY_NAMES
from .conftest import REPO, TINY, column, metrics, run_train

RECIPES = sorted(glob.glob(os.path.join(REPO, "configs", "imagenet", "*.yaml")))


def _print_config(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["fit", *args, "--print_config"])
    assert exit_.value.code == 0
    return yaml.safe_load(out.getvalue())


def _generator():
    spec = importlib.util.spec_from_file_location("generate", os.path.join(REPO, "configs", "imagenet", "generate.py"))
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    return generate


def _model_of(recipe: str) -> str:
    return recipe.split(".", 1)[0]  # vz_x_small or vz_x_small.<phase>


def test_recipes_are_in_sync_with_the_generator():
    expected = _generator().recipes()
    assert [os.path.basename(p)[:-5] for p in RECIPES] == sorted(expected), \
        "recipe files differ from the generator's: run python configs/imagenet/generate.py"
    for path in RECIPES:
        with open(path) as f:
            assert f.read() == expected[os.path.basename(path)[:-5]], \
                f"{path} is out of date: run python configs/imagenet/generate.py"


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_family_recipes_match_the_declaration(family_name):
    """Every training-form model of a family has a recipe (deploy-only ones have none), unless the family declares
    its recipes pending; the recipes name registered models of the family."""
    family = FAMILIES[family_name]
    variants = timm.list_models("vz_*", module=family.name)
    recipes = [os.path.basename(p)[:-5] for p in RECIPES]
    own = [r for r in recipes if _model_of(r) in variants]
    if "recipes" in family.pending:
        assert not own, f"{family.name} declares its recipes pending but has {own}: drop it from FAMILY.pending"
        return
    covered = {_model_of(r) for r in own}
    missing = [v for v in variants if v not in family.deploy_only and v not in covered]
    assert not missing, f"{family.name}: no recipe for {missing}"
    assert not covered & set(family.deploy_only), f"{family.name}: recipes for deploy-only variants"


def test_every_recipe_names_a_registered_model():
    unknown = [os.path.basename(p) for p in RECIPES if _model_of(os.path.basename(p)[:-5]) not in timm.list_models("vz_*")]
    assert not unknown


@pytest.mark.parametrize("path", RECIPES + [os.path.join(REPO, "configs", "quickstart.yaml")],
                         ids=lambda p: os.path.basename(p))
def test_recipe_parses(path):
    cfg = _print_config("--config", path)
    name = os.path.basename(path)[:-5]
    if name != "quickstart":
        assert cfg["model"]["model_name"] == _model_of(name)
        assert cfg["data"]["input_size"] == timm.get_pretrained_cfg(_model_of(name)).input_size[-1]
        assert cfg["model"]["num_classes"] == timm.get_pretrained_cfg(_model_of(name)).num_classes or \
            cfg["model"]["num_classes"] == 1000
    assert cfg["checkpoint"]["monitor"] == "val/top1"


def test_recipe_by_name(capsys):
    """``--config quickstart``: the shipped recipe of that name (visionzoo.recipes), the same as its path; train.py
    itself (a subprocess: the names come from the command line, not ``args``). An unknown name is a usage error.
    (tests/test_recipes.py: ``visionzoo train`` and the ImageNet recipes by name.)"""
    proc = run_train("fit", "--config", "quickstart", "--data.batch_size", "32", "--print_config")
    by_name = yaml.safe_load(proc.stdout)
    assert by_name == _print_config("--config", os.path.join(REPO, "configs", "quickstart.yaml"),
                                    "--data.batch_size", "32")
    assert by_name["data"]["builtin"] == "digits" and by_name["data"]["batch_size"] == 32
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "vz_maxvit_tyni"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'vz_maxvit_tyni'" in err and "closest: vz_maxvit_tiny" in err


def test_ddp_and_fsdp_resolve():
    cli = main(["--config", TINY, "--trainer.strategy", "ddp", "--trainer.devices", "2"], run=False)
    assert type(cli.trainer.strategy).__name__ == "DDPStrategy" and cli.trainer.world_size == 2
    assert cli.trainer.strategy.process_group_backend is None or cli.trainer.strategy.process_group_backend == "gloo"
    fsdp = ["--trainer.strategy", "lightning.pytorch.strategies.FSDPStrategy",
            "--trainer.strategy.sharding_strategy", "SHARD_GRAD_OP", "--trainer.devices", "2"]
    cfg = _print_config("--config", TINY, *fsdp)
    assert cfg["trainer"]["strategy"]["class_path"].endswith("FSDPStrategy")
    assert cfg["trainer"]["strategy"]["init_args"]["sharding_strategy"] == "SHARD_GRAD_OP"
    with pytest.raises(ValueError, match="requires a GPU accelerator"):  # Lightning runs FSDP on GPUs only
        main(["--config", TINY, *fsdp], run=False)


def test_fit_validate_test_predict_and_pretrained_file(digits_root, tmp_path):
    run = str(tmp_path / "run")
    args = ["--config", TINY, "--data.root", digits_root, "--trainer.default_root_dir", run]
    # bf16 autocast, gradient accumulation and layer decay on top of tiny.yaml's mixup / EMA / RandAugment / erasing
    cli = main(["fit", *args, "--trainer.max_epochs", "1", "--trainer.precision", "bf16-mixed",
                "--trainer.accumulate_grad_batches", "2", "--model.layer_decay", "0.8"])
    rows = metrics(run)
    val = {k: column(rows, f"val/{k}") for k in ("top1", "top5", "loss", "images")}
    assert all(val.values()), val
    assert list(val["images"].values()) == [90.0]  # limit_val_batches 2 x val_batch_size 45
    lr = column(rows, "train/lr")
    assert list(lr) == [0, 1, 2]  # 6 batches / accumulation 2: 3 optimizer steps
    # per-update warmup + cosine of lr_base 2e-3 at 16, scaled to the global batch 32 (16 x accumulation 2)
    reference = CosineLRScheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=4e-3), t_initial=3,
                                  lr_min=1e-5, warmup_t=1.5, warmup_lr_init=1e-6, t_in_epochs=False)
    expected = [reference._get_lr(step)[0] for step in range(3)]
    assert [lr[step] for step in range(3)] == pytest.approx(expected, rel=1e-6)
    assert expected[0] < expected[1] and expected[2] < 4e-3
    groups = cli.trainer.optimizers[0].param_groups
    assert len({g["lr_scale"] for g in groups}) > 2  # layer decay: per-depth scales
    assert any(g["weight_decay"] == 0 for g in groups) and any(g["weight_decay"] > 0 for g in groups)

    ckpts = sorted(os.listdir(os.path.join(run, "checkpoints")))
    assert "last.ckpt" in ckpts and any(c.startswith("best-") for c in ckpts), ckpts
    last = os.path.join(run, "checkpoints", "last.ckpt")
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # nothing to unpickle
    assert set(ckpt["state_dict_ema"]) == {k[len("model."):] for k in ckpt["state_dict"]}

    # validate the checkpoint: the EMA weights, the same numbers as at the end of fit
    def same_as_fit(prefix="val"):  # loss: a continuous check (top-1 of a 3-step model is coarse)
        rows = metrics(run)
        for key in ("top1", "loss"):
            assert column(rows, f"{prefix}/{key}")[0] == pytest.approx(list(val[key].values())[-1], rel=1e-4), key

    main(["validate", *args, "--trainer.precision", "bf16-mixed", "--ckpt_path", last])
    same_as_fit()

    # evaluate weights from a file, as for official weights: timm's loader picks the checkpoint's EMA tensors
    main(["validate", *args, "--trainer.precision", "bf16-mixed", "--model.model_ema", "false",
          "--model.pretrained_file", last])
    same_as_fit()

    main(["test", *args, "--trainer.precision", "bf16-mixed", "--ckpt_path", last,  # test split: val by default
          "--trainer.limit_test_batches", "2"])
    same_as_fit("test")

    cli = main(["predict", *args, "--ckpt_path", last, "--trainer.limit_predict_batches", "1"])
    assert cli.trainer.predict_loop.predictions[0]["probs"].shape == (45, 5)


def test_wandb_logger_offline(digits_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = ('{"class_path": "lightning.pytorch.loggers.WandbLogger", '
              '"init_args": {"project": "vz-test", "save_dir": "%s"}}')
    main(["fit", "--config", TINY, "--data.root", digits_root, "--trainer.default_root_dir", str(tmp_path),
          "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
          "--trainer.logger", logger % tmp_path])
    import wandb

    wandb.finish()
    runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert runs and os.path.getsize(runs[0]) > 0
