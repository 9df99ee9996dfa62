"""Shared test helpers. Importing visionzoo registers the zoo with timm before tests are collected.

The generic tests read each family's declarations (``visionzoo.models.FAMILIES``, see models/_family.py): the
contract model, its reduced configuration, capabilities, and what the family has landed.
"""
from __future__ import annotations

import collections
import functools
import os
import subprocess
import sys
from pathlib import Path

import torch

# Without a GPU, the Triton kernel tests run on CPU tensors in Triton's interpreter. Triton decides once,
# when it is first imported, whether its library is interpreted; timm imports it (via torch._dynamo), so
# the variable must be set here, before timm. It has no effect on anything but Triton (inductor's CPU
# backend generates C++). Never set on a GPU machine, where the kernels must compile for real.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import timm  # noqa: E402

import visionzoo  # noqa: F401,E402  (registers the vz_* models)
from visionzoo.models import FAMILIES, family_of  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
ALL_MODELS = timm.list_models("vz_*")
FAMILY_NAMES = sorted(FAMILIES)
CONTRACT_MODELS = [FAMILIES[f].contract_model for f in FAMILY_NAMES]


@functools.lru_cache(maxsize=None)
def meta_model(name: str, **kwargs) -> torch.nn.Module:
    """``name`` built once per session on the meta device (no memory); callers must not modify it."""
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


def meta_param_count(name: str, **kwargs) -> int:
    return sum(p.numel() for p in meta_model(name, **kwargs).parameters())


def reduced_model(name: str, **kwargs) -> torch.nn.Module:
    """``name`` built with its family's reduced configuration (declared in FAMILY.reduced), plus ``kwargs``."""
    return timm.create_model(name, **family_of(name).reduced_kwargs(**kwargs))


def small_input_size(name: str, size: int = 64) -> tuple[int, int, int]:
    """A small test input at or above the model's documented minimum."""
    cfg = timm.get_pretrained_cfg(name).to_dict()
    min_size = cfg.get("min_input_size") or cfg["input_size"]
    return (cfg["input_size"][0], max(size, min_size[1]), max(size, min_size[2]))


def skip_if_pending(family, part: str) -> None:
    """Skip the calling test when ``family`` declares ``part`` ("recipes", "mmdet", "mmseg") as not landed yet."""
    if part in family.pending:
        pytest.skip(f"{family.name}: {part} not landed yet (FAMILY.pending)")


@pytest.fixture(scope="session")
def wheel_path(tmp_path_factory) -> Path:
    """The project's wheel, built once per session from a copy of the working tree's files (tracked or not ignored;
    a build in the tree itself would reuse a stale build/ folder), without dependencies or network."""
    import shutil

    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
                    "--disable-pip-version-check", "-q", "-w", str(out), str(source)], check=True, capture_output=True)
    (wheel,) = out.glob("visionzoo-*.whl")
    return wheel


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _family_owns(family, nodeid: str) -> bool:
    """A test belongs to a family's budget: its own test file, its kernels' test files, or a generic test
    parametrized with one of its models or configs."""
    path, _, params = nodeid.partition("[")
    files = {f"test_{family.name}.py"} | {f"test_{op}.py" for op in family.kernels}
    return os.path.basename(path.split("::")[0]) in files or (f"vz_{family.name}_" in params or
                                                               f"/{family.name}/" in params or params.startswith(f"{family.name}]"))


def pytest_terminal_summary(terminalreporter):
    """Time per test directory and per family (setup + call + teardown), against the budgets in CONTRIBUTING.md."""
    reports = [r for rs in terminalreporter.stats.values() for r in rs
               if hasattr(r, "duration") and getattr(r, "nodeid", "")]
    if not reports:
        return
    per_dir = collections.defaultdict(float)
    for report in reports:
        per_dir[os.path.dirname(report.nodeid.split("::")[0])] += report.duration
    terminalreporter.section("time per test directory")
    for directory, seconds in sorted(per_dir.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f} s  {directory}")
    terminalreporter.write_line(f"{sum(per_dir.values()):8.1f} s  in all")
    terminalreporter.section("time per family (its test files, its kernels' tests, generic tests of its models)")
    for name in FAMILY_NAMES:
        seconds = sum(r.duration for r in reports if _family_owns(FAMILIES[name], r.nodeid))
        terminalreporter.write_line(f"{seconds:8.1f} s  {name} (budget 150 s)")
