"""The wheel holds every module and data file of the package, and works without a checkout.

``pyproject.toml`` lists the packages by hand and maps ``visionzoo.models`` / ``visionzoo.kernels`` /
``visionzoo.configs`` to the top-level ``models/``, ``kernels/`` and ``configs/`` folders. The editable install the
tests run on finds any sub-package (and every config) by path, so a new ``kernels/<op>/`` missing from the list, or a
config outside the package-data globs, would pass every other test and be absent for pip users: these tests build the
real wheel (once per session), compare it with the tracked files, and install it into a fresh venv.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from .conftest import REPO

# source folder -> where its files land in the wheel (pyproject's package-dir mapping)
INSTALLED_AS = {"visionzoo": "visionzoo", "models": "visionzoo/models", "kernels": "visionzoo/kernels",
                "configs": "visionzoo/configs"}
# tracked files under those folders that stay in the checkout: the recipe generator, which writes
# configs/imagenet/*.yaml (the wheel ships what it wrote)
NOT_SHIPPED = ("configs/imagenet/generate.py", "configs/imagenet/families/")


def _tracked_package_files():
    out = subprocess.run(["git", "ls-files", *INSTALLED_AS], cwd=REPO, capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if line]


def _in_wheel(path: str) -> str:
    top, _, rest = path.partition("/")
    return f"{INSTALLED_AS[top]}/{rest}"


def test_wheel_holds_every_tracked_package_file(wheel_path):
    with zipfile.ZipFile(wheel_path) as wheel:
        in_wheel = set(wheel.namelist())
    tracked = _tracked_package_files()
    expected = {path: _in_wheel(path) for path in tracked if not path.startswith(NOT_SHIPPED)}
    assert expected, "git ls-files found no package files"
    missing = sorted(src for src, dst in expected.items() if dst not in in_wheel)
    assert not missing, (f"the wheel lacks {missing}: add their package to [tool.setuptools] packages (or the data "
                         f"file to package-data) in pyproject.toml")
    configs = [p for p in expected if p.startswith("configs/")]
    assert len([p for p in configs if p.startswith("configs/imagenet/") and p.endswith(".yaml")]) > 50
    assert any(p.startswith("configs/mmdet/") for p in configs) and any(p.startswith("configs/mmseg/") for p in configs)
    assert "configs/quickstart.yaml" in configs
    shipped_generator = sorted(_in_wheel(p) for p in tracked if p.startswith(NOT_SHIPPED) and _in_wheel(p) in in_wheel)
    assert not shipped_generator, f"development-only files in the wheel: {shipped_generator}"


@pytest.fixture(scope="session")
def fresh_venv(wheel_path, tmp_path_factory):
    """A new venv with only the wheel installed in it (``pip install --no-deps``), which then sees this venv's
    packages (torch, timm, lightning, the mm stack) through a plain path line in a ``.pth`` file. Such a line adds
    the folder to ``sys.path`` without running the ``.pth`` files in it, so the editable install's hook, which maps
    ``visionzoo`` onto the checkout, stays off. The ``.pth`` is written after the install: pip must not see this
    venv's visionzoo as already installed."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", "-q",
                    "install", "--no-deps", "--no-index", "--no-compile", str(wheel_path)], check=True,
                   capture_output=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "visionzoo_test_deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    return venv


CHECK = """
import json, os, visionzoo
from visionzoo import recipes
out = dict(visionzoo=visionzoo.__file__, configs=str(recipes.configs_dir()),
           recipe=str(recipes.recipe_path("vz_maxvit_tiny")), quickstart=str(recipes.recipe_path("quickstart")),
           mm=str(recipes.mm_config_path("{mm}")), n_recipes=len(recipes.recipe_names()))
try:
    from mmengine.config import Config
except ImportError:
    pass
else:  # the shipped config's _base_ files (relative, and mmdet:: bases) resolve from site-packages
    out["mm_backbone"] = Config.fromfile(out["mm"]).model.backbone.type
print(json.dumps(out))
"""


def test_the_wheel_names_recipes_and_configs_without_a_checkout(fresh_venv, tmp_path):
    """From a folder outside the checkout, with the wheel in a fresh venv: recipe and det/seg config names resolve to
    the installed files, and ``visionzoo train`` (the console script) reads a recipe by name."""
    import json

    from visionzoo import recipes

    mm = next(n for n in recipes.mm_config_names() if n.startswith("mmdet/"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = dict(cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    proc = subprocess.run([str(fresh_venv / "bin" / "python"), "-c", CHECK.replace("{mm}", mm)], **run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    package = os.path.realpath(fresh_venv)
    assert os.path.realpath(found["visionzoo"]).startswith(package), found  # the wheel's visionzoo, not the checkout
    configs = os.path.realpath(found["configs"])
    assert configs.startswith(package) and configs.endswith(os.path.join("visionzoo", "configs")), found
    assert found["recipe"] == os.path.join(found["configs"], "imagenet", "vz_maxvit_tiny.yaml")
    assert found["quickstart"] == os.path.join(found["configs"], "quickstart.yaml")
    assert found["mm"] == os.path.join(found["configs"], mm) and os.path.isfile(found["mm"])
    assert found["n_recipes"] == len(recipes.recipe_names())
    if "mm_backbone" in found:
        assert found["mm_backbone"] == "VisionZooBackbone"

    script = str(fresh_venv / "bin" / "visionzoo")
    proc = subprocess.run([script, "train", "fit", "--config", "vz_maxvit_tiny", "--print_config"], **run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import yaml

    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"]["model_name"] == "vz_maxvit_tiny" and cfg["data"]["input_size"] == 224
    assert cfg["trainer"]["default_root_dir"] == "runs/vz_maxvit_tiny"
    proc = subprocess.run([script, "train", "fit", "--config", "vz_maxvit_tinny"], **run)
    assert proc.returncode == 2 and "closest: vz_maxvit_tiny" in proc.stderr, proc.stderr[-2000:]
