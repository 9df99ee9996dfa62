"""Training test helpers: one digits folder per session, train.py as a subprocess, metrics.csv readers."""
from __future__ import annotations

import csv
import glob
import os
import subprocess
import sys
from typing import Dict, List

import pytest

pytest.importorskip("lightning")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "training", "tiny.yaml")


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory) -> str:
    from visionzoo.training import write_digits_folder

    root = str(tmp_path_factory.mktemp("data") / "digits")
    write_digits_folder(root)
    return root


def run_train(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """python train.py ARGS in the repository root (where Lightning's launchers can re-run it)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def metrics(run_dir: str, version: int = -1) -> List[Dict[str, str]]:
    """Rows of a CSVLogger metrics.csv under run_dir/logs/version_*/ (the newest by default)."""
    files = sorted(glob.glob(os.path.join(run_dir, "logs", "version_*", "metrics.csv")),
                   key=lambda p: int(p.split("version_")[1].split(os.sep)[0]))
    assert files, f"no metrics.csv under {run_dir}/logs"
    with open(files[version]) as f:
        return list(csv.DictReader(f))


def column(rows: List[Dict[str, str]], key: str) -> Dict[int, float]:
    """{step: value} of one logged metric."""
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key)}


@pytest.fixture(autouse=True)
def _cli_argv(monkeypatch):
    """In-process LightningCLI(args=...) warns when sys.argv (pytest's here) carries arguments too."""
    monkeypatch.setattr(sys, "argv", ["train.py"])
