"""The wheel holds every module and data file of the package.

``pyproject.toml`` lists the packages by hand and maps ``visionzoo.models`` / ``visionzoo.kernels`` to the top-level
``models/`` and ``kernels/`` folders. The editable install the tests run on finds any sub-package by path, so a new
``kernels/<op>/`` missing from the list would pass every other test and be absent for pip users: this test builds the
real wheel (once per session) and compares it with the tracked files.
"""
from __future__ import annotations

import subprocess
import zipfile

from .conftest import REPO

# source folder -> where its files land in the wheel (pyproject's package-dir mapping)
INSTALLED_AS = {"visionzoo": "visionzoo", "models": "visionzoo/models", "kernels": "visionzoo/kernels"}


def _tracked_package_files():
    out = subprocess.run(["git", "ls-files", *INSTALLED_AS], cwd=REPO, capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if line]


def test_wheel_holds_every_tracked_package_file(wheel_path):
    with zipfile.ZipFile(wheel_path) as wheel:
        in_wheel = set(wheel.namelist())
    expected = {}
    for path in _tracked_package_files():
        top, _, rest = path.partition("/")
        expected[path] = f"{INSTALLED_AS[top]}/{rest}"
    assert expected, "git ls-files found no package files"
    missing = sorted(src for src, dst in expected.items() if dst not in in_wheel)
    assert not missing, (f"the wheel lacks {missing}: add their package to [tool.setuptools] packages (or the data "
                         f"file to package-data) in pyproject.toml")
