"""``benchmarks/run_all.py``, the zoo-wide results runner (issue 15): every family has a pair, a real (tiny) run
writes rows that the table and the results file agree on, and README's table is the one the results file gives."""
from __future__ import annotations

import json
import sys

import pytest

from visionzoo.models import FAMILIES

from .conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import run_all  # noqa: E402


def test_every_family_has_a_pair_with_its_own_model():
    assert set(run_all.PAIRS) == set(FAMILIES), "benchmarks/run_all.py PAIRS must name every family once"
    for family, pair in run_all.PAIRS.items():
        assert FAMILIES[family] is __import__("visionzoo.models", fromlist=["family_of"]).family_of(pair.ours)


def test_readme_table_is_generated_from_the_results_file(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    run_all.write_table(run_all.RESULTS, readme)
    assert readme.read_text() == (REPO / "README.md").read_text(), (
        "README's results table is stale: run `python benchmarks/run_all.py table`")


def test_a_real_run_is_stored_and_tabled(tmp_path):
    results = tmp_path / "results.json"
    # a family whose anchor is timm's port with the same weights: the output difference is measured
    run_all.main(["run", "--families", "davit", "--sizes", "64", "--modes", "eval", "train", "--repeats", "1",
                  "--no-memory", "--results", str(results)])
    rows = json.loads(results.read_text())["rows"]
    assert [(r["mode"], r["size"], r["batch"]) for r in rows] == [("eval", 64, 1), ("train", 64, 1)]
    for r in rows:
        assert r["ours_img_s"] > 0 and r["anchor_img_s"] > 0 and r["speedup_cpu"] > 0
        assert r["max_out_diff"] < 1e-4  # the same weights on both sides: the same function
        assert 0 < r["share_of_peak"] < 1.5 and r["gflops_per_image"] > 0
    # a later run replaces the rows with the same key and keeps the others
    remeasured = dict(rows[0], ours_img_s=123.0)
    run_all.save_results(results, [remeasured])
    assert json.loads(results.read_text())["rows"] == [remeasured, rows[1]]
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{run_all.TABLE_BEGIN}\nold\n{run_all.TABLE_END}\nrest\n")
    run_all.write_table(results, readme)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert text.count("| davit | `vz_davit_tiny` | timm davit_tiny | 64 | 1 |") == 2


def test_bad_official_path_argument_is_refused():
    with pytest.raises(SystemExit, match="FAMILY=PATH"):
        run_all.main(["run", "--families", "davit", "--official", "nosuchfamily=/tmp"])
