"""`tasks/conditional_lm.py` runs end to end on a slice of ChnSentiCorp and writes every artefact it promises."""
import csv
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

TASK = REPO / "tasks" / "conditional_lm.py"


def test_help():
    result = subprocess.run([sys.executable, str(TASK), "--help"], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "--checkpoint" in result.stdout


def test_few_steps_on_a_slice(tmp_path):
    sys.path.insert(0, str(REPO / "tasks"))
    import conditional_lm

    out = tmp_path / "run"
    metrics = conditional_lm.main(["--limit", "300", "--steps", "6", "--eval-every", "3", "--samples", "4",
                                   "--max-new-tokens", "8", "--layers", "1", "--hidden-size", "32", "--heads", "2",
                                   "--cond-size", "8", "--out", str(out)])
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["heldout_reviews"] == 30 and saved["train_reviews"] == 270
    assert 0.0 <= saved["classifier_heldout_accuracy"] <= 1.0
    for name in ("conditioned", "baseline"):
        assert 0.0 <= saved[name]["label_accuracy"] <= 1.0
        assert saved[name]["heldout_loss"] == pytest.approx(metrics[name]["heldout_loss"])
    with open(out / "samples.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 2 * 2 * 4  # (conditioned + baseline) × 2 labels × 4 samples
    asked = [r["requested"] for r in rows if r["model"] == "conditioned"]
    assert asked == ["negative"] * 4 + ["positive"] * 4
    with open(out / "loss.csv") as f:
        curve = list(csv.DictReader(f))
    assert [(r["model"], int(r["step"])) for r in curve] == [("conditioned", 3), ("conditioned", 6),
                                                             ("baseline", 3), ("baseline", 6)]
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
