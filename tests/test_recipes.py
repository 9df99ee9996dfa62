"""Configs by name (visionzoo.recipes): training recipes, det/seg configs, the errors for unknown names, and the
``visionzoo config`` / ``visionzoo train`` commands. Runs on the editable install, which must resolve names to the
checkout's own files; tests/test_packaging.py checks the same from the wheel in a fresh venv."""
from __future__ import annotations

import contextlib
import io
import os

import pytest
import yaml

from visionzoo import cli, recipes
from visionzoo.recipes import UnknownConfig

from .conftest import REPO

CONFIGS = REPO / "configs"
IMAGENET = sorted(p.name[: -len(".yaml")] for p in (CONFIGS / "imagenet").glob("*.yaml"))
MM = sorted(p.relative_to(CONFIGS).as_posix() for task in ("mmdet", "mmseg") for p in (CONFIGS / task).rglob("*.py")
            if "_base_" not in p.parts)
SOME_MM = next(name for name in MM if name.startswith("mmdet/"))


def test_the_editable_install_names_the_checkouts_files():
    assert recipes.configs_dir() == CONFIGS
    assert recipes.recipe_names() == sorted(IMAGENET + ["quickstart"])
    assert len(IMAGENET) > 50 and "vz_maxvit_tiny" in IMAGENET
    assert recipes.mm_config_names() == MM and any(n.startswith("mmseg/") for n in MM)


def test_recipe_by_name():
    assert recipes.recipe_path("vz_maxvit_tiny") == CONFIGS / "imagenet" / "vz_maxvit_tiny.yaml"
    assert recipes.recipe_path("vz_maxvit_tiny.yaml") == CONFIGS / "imagenet" / "vz_maxvit_tiny.yaml"
    assert recipes.recipe_path("quickstart") == CONFIGS / "quickstart.yaml"
    for name in IMAGENET:  # phase recipes (vz_x.phase1) included
        assert recipes.recipe_path(name).is_file()


def test_unknown_recipe_lists_the_closest_names():
    with pytest.raises(UnknownConfig, match="unknown recipe 'vz_maxvit_tinny'") as e:
        recipes.recipe_path("vz_maxvit_tinny")
    closest = str(e.value).split("closest: ")[1].split(".")[0].split(", ")
    assert closest[0] == "vz_maxvit_tiny" and len(closest) <= 5
    assert all(name in IMAGENET for name in closest)
    with pytest.raises(UnknownConfig) as e:  # nothing close: no suggestions, but where to look
        recipes.recipe_path("resnet50")
    assert "closest" not in str(e.value) and "visionzoo config --list" in str(e.value)
    with pytest.raises(UnknownConfig):  # a det/seg config is not a training recipe, nor is a _base_ file
        recipes.recipe_path(SOME_MM)


def test_mm_config_by_path_or_file_name():
    path = CONFIGS / SOME_MM
    file_name = os.path.basename(SOME_MM)
    for name in (SOME_MM, SOME_MM[:-3], file_name, file_name[:-3]):
        assert recipes.mm_config_path(name) == path, name
    base = next(p for p in (CONFIGS / "mmdet").rglob("_base_/*.py"))
    with pytest.raises(UnknownConfig):
        recipes.mm_config_path(base.relative_to(CONFIGS).as_posix())
    with pytest.raises(UnknownConfig, match="closest: " + SOME_MM):
        recipes.mm_config_path(SOME_MM.replace("_coco", "_cooc"))
    assert recipes.config_path(SOME_MM) == path and recipes.config_path("quickstart") == CONFIGS / "quickstart.yaml"


def test_config_args_resolve_names_and_keep_paths(tmp_path):
    recipe = str(CONFIGS / "imagenet" / "vz_maxvit_tiny.yaml")
    assert recipes.resolve_config_args(["fit", "--config", "vz_maxvit_tiny", "--data.root", "x"]) == \
        ["fit", "--config", recipe, "--data.root", "x"]
    assert recipes.resolve_config_args(["fit", "-c", "quickstart", "--config=vz_maxvit_tiny"]) == \
        ["fit", "-c", str(CONFIGS / "quickstart.yaml"), f"--config={recipe}"]
    own = tmp_path / "vz_maxvit_tiny.yaml"  # an existing file wins over the recipe of the same name
    own.write_text("seed_everything: 1\n")
    keep = ["fit", "--config", str(own), "--config", "{trainer: {max_epochs: 1}}", "--model.config", "quickstart"]
    assert recipes.resolve_config_args(keep) == keep
    with pytest.raises(UnknownConfig, match="vz_maxvit_tiny"):
        recipes.resolve_config_args(["fit", "--config", "vz_maxvit_tiy"])


def _cli(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_visionzoo_config_command(capsys):
    assert _cli(capsys, "config", "vz_maxvit_tiny") == (0, f"{CONFIGS / 'imagenet' / 'vz_maxvit_tiny.yaml'}\n", "")
    rc, out, _ = _cli(capsys, "config", os.path.basename(SOME_MM))
    assert rc == 0 and out.strip() == str(CONFIGS / SOME_MM)
    rc, out, _ = _cli(capsys, "config", "--list", "mmseg")
    assert rc == 0 and out.split() == [n for n in MM if n.startswith("mmseg/")]
    rc, out, _ = _cli(capsys, "config")
    assert rc == 0 and out.split() == sorted(IMAGENET + ["quickstart"]) + MM
    rc, out, err = _cli(capsys, "config", "quickstar")
    assert rc == 2 and not out and "unknown config 'quickstar'" in err and "closest: quickstart" in err


def _print_config(main, *argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main([*argv, "--print_config"])
    assert exit_.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


def test_visionzoo_train_takes_a_recipe_name():
    """``visionzoo train`` is train.py: the same LightningCLI, a recipe by name gives the recipe's file's config."""
    pytest.importorskip("lightning")
    from visionzoo.training.cli import main as train_main

    by_name = _print_config(cli.main, "train", "fit", "--config", "vz_maxvit_tiny")
    by_path = _print_config(train_main, "fit", "--config", str(CONFIGS / "imagenet" / "vz_maxvit_tiny.yaml"))
    assert by_name == by_path and by_name["model"]["model_name"] == "vz_maxvit_tiny"
    with open(CONFIGS / "imagenet" / "vz_maxvit_tiny.yaml") as f:
        recipe = yaml.safe_load(f)
    for section in ("model", "data"):  # the recipe's own values, not the CLI defaults
        assert {k: by_name[section][k] for k in recipe[section]} == recipe[section]
