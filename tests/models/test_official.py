"""Official implementations as anchors (``models/_official.py``, ``visionzoo bench --anchor official=PATH``).

The official repositories are not here (they are never shipped; a user fetches them), so these tests check the
declarations, the import mechanism on real files of this repository, and every error a user can meet. The official
pairs themselves were checked against the real checkouts when they were written (same outputs, fp32: BiFormer-T
5e-7 at 224 and 256, L2ViT-T 7e-7, RAVLT-T 1e-7, OverLoCK-XT 1e-7, Sparsifiner-S 1.5e-6 at 224).
"""
from __future__ import annotations

import sys

import pytest
import timm

from visionzoo import cli
from visionzoo.models import FAMILIES
from visionzoo.models._official import import_from_checkout, official_pair, stub_missing

from ..conftest import REPO

DECLARED = sorted(name for name, family in FAMILIES.items() if family.official is not None)


def test_declared_official_variants_are_the_familys_models():
    assert DECLARED, "no family declares its official code"
    for name in DECLARED:
        official = FAMILIES[name].official
        assert "/" in official.repo and official.variants
        assert set(official.variants) <= set(timm.list_models("vz_*", module=name)), name


@pytest.mark.parametrize("family_name", DECLARED)
def test_a_missing_checkout_names_the_repository_to_fetch(family_name, tmp_path):
    official = FAMILIES[family_name].official
    with pytest.raises(FileNotFoundError, match=f"github.com/{official.repo}"):
        official_pair(official.variants[0], str(tmp_path))


def test_a_model_without_official_code_or_constructor_is_refused():
    without = next(f for f in FAMILIES.values() if f.official is None)
    with pytest.raises(ValueError, match="no runnable official code"):
        official_pair(without.contract_model, "/nonexistent")
    family = FAMILIES[DECLARED[0]]
    other = next(n for n in timm.list_models("vz_*", module=family.name) if n not in family.official.variants)
    with pytest.raises(ValueError, match="has no official constructor"):
        official_pair(other, "/nonexistent")


def test_import_from_checkout_loads_a_file_and_a_package_module():
    # this repository as the "checkout": a stand-alone file, and a module of a top-level package
    path_before = list(sys.path)
    common = import_from_checkout(str(REPO), "benchmarks/common.py", "owner/repo")
    assert callable(common.peak_memory_mb)
    module = import_from_checkout(str(REPO), "configs/imagenet/generate.py", "owner/repo", package="configs")
    assert module.__name__ == "configs.imagenet.generate" and callable(module.recipes)
    assert sys.path == path_before  # the checkout was on sys.path only while importing


def test_stub_missing_leaves_installed_packages_alone():
    import torch
    stub_missing("torch.nn", Linear=None)
    assert torch.nn.Linear is not None
    stub_missing("visionzoo_missing_pkg.sub", value=3)
    try:
        from visionzoo_missing_pkg.sub import value  # noqa: PLC0415
        assert value == 3
    finally:
        for name in ("visionzoo_missing_pkg", "visionzoo_missing_pkg.sub"):
            sys.modules.pop(name, None)


def test_bench_official_anchor_errors(capsys, tmp_path):
    family = FAMILIES[DECLARED[0]]
    name = family.official.variants[0]
    rc = cli.main(["bench", name, "--anchor", f"official={tmp_path}", "--size", "224"])
    assert rc == 2 and f"github.com/{family.official.repo}" in capsys.readouterr().err
    without = next(f for f in FAMILIES.values() if f.official is None)
    rc = cli.main(["bench", without.contract_model, "--anchor", f"official={tmp_path}", "--size", "224"])
    assert rc == 2 and "no runnable official code" in capsys.readouterr().err
    rc = cli.main(["bench", name, "--anchor", f"official={tmp_path}", "--size", "224x256"])
    assert rc == 2 and "square" in capsys.readouterr().err
