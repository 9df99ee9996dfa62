"""The README's first command trains configs/quickstart.yaml: it must reach >= 90% val top-1 on the held-out digits
as configured (only the output folders are redirected), so a change to the model, the data path or the recipe that
breaks the quickstart fails here and not only in a user's terminal."""
from __future__ import annotations

import os

from .conftest import REPO, column, metrics, run_train


def test_quickstart_reaches_90_percent(digits_root, tmp_path):
    run_dir = str(tmp_path / "quickstart")
    proc = run_train("fit", "--config", os.path.join(REPO, "configs", "quickstart.yaml"),
                     "--data.root", digits_root, "--trainer.default_root_dir", run_dir, timeout=900)
    top1 = column(metrics(run_dir), "val/top1")
    assert top1, "the quickstart logged no val/top1"
    final = top1[max(top1)]  # logged in percent, as timm's train.py prints it
    assert 90.0 <= final <= 100.0, f"quickstart val top-1 {final:.2f}% is not >= 90% (per validation: {top1})"
    # what the user is told at the end: the metrics and where checkpoints and logs went
    assert "checkpoints: " + os.path.join(run_dir, "checkpoints") in proc.stdout
    assert "logs: " in proc.stdout and "val/top1" in proc.stdout
