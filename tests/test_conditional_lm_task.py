"""`tasks/conditional_lm.py` runs end to end on a slice of ChnSentiCorp and writes every artefact it promises."""
import csv
import json
import sys

import pytest
import torch
import transformers

from tests.conftest import REPO

if str(REPO / "tasks") not in sys.path:
    sys.path.insert(0, str(REPO / "tasks"))
import conditional_lm


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        conditional_lm.parse_args(["--help"])
    assert exit_info.value.code == 0 and "--checkpoint" in capsys.readouterr().out


def test_few_steps_on_a_slice(tmp_path):
    out = tmp_path / "run"
    metrics = conditional_lm.main(["--limit", "300", "--steps", "6", "--eval-every", "3", "--samples", "4",
                                   "--max-new-tokens", "8", "--layers", "1", "--hidden-size", "32", "--heads", "2",
                                   "--cond-size", "8", "--eager", "--out", str(out)])
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


def test_starts_from_a_bert_checkpoint(tmp_path, vocab_path):
    """`--config/--checkpoint`: a (tiny, random) HF BERT with the full Chinese vocab, trimmed by keep_tokens."""
    with open(vocab_path, encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    torch.manual_seed(0)
    bert = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
        max_position_embeddings=64))
    bert.save_pretrained(tmp_path / "bert", safe_serialization=True)
    metrics = conditional_lm.main(["--config", str(tmp_path / "bert" / "config.json"), "--checkpoint",
                                   str(tmp_path / "bert"), "--vocab", str(vocab_path), "--limit", "200",
                                   "--steps", "2", "--eval-every", "2", "--samples", "2", "--max-new-tokens", "6",
                                   "--cond-size", "8", "--eager", "--out", str(tmp_path / "run")])
    assert metrics["samples_per_model"] == 4
    assert all(0.0 <= metrics[name]["label_accuracy"] <= 1.0 for name in ("conditioned", "baseline"))
