"""tasks/pretrain.py: batches carry the right labels for each objective, and a few training steps on the real corpus
lower the held-out loss and leave a checkpoint that `build_transformer_model` loads."""
import csv
import importlib.util
import json

import numpy as np
import pytest

from tests.conftest import DATA, REPO, VOCAB

spec = importlib.util.spec_from_file_location("pretrain", REPO / "tasks" / "pretrain.py")
pretrain = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pretrain)

CORPUS = DATA / "zh-plain-corpus" / "zh_corpus.txt"
TINY = ["--layers", "1", "--hidden-size", "32", "--heads", "2", "--maxlen", "32", "--batch-size", "8",
        "--max-docs", "40", "--heldout-docs", "8", "--eval-batches", "1", "--lr", "1e-2", "--warmup", "0"]


@pytest.fixture(scope="module")
def tokenizer():
    return pretrain.Tokenizer(str(VOCAB), do_lower_case=True)


def test_defaults_point_at_the_shared_data():
    args = pretrain.parse_args([])
    assert args.train == str(CORPUS) and args.vocab == str(VOCAB)
    assert (args.layers, args.hidden_size) == (4, 256)


def test_pieces_respect_the_size_and_keep_the_text():
    doc = "今天天气很好。我们去公园散步！" + "长" * 25 + "。结束"
    pieces = pretrain.pieces_of(doc, 10)
    assert all(0 < len(p) <= 10 for p in pieces)
    assert "".join(pieces) == doc


@pytest.mark.parametrize("objective", ["mlm", "lm", "unilm", "plm"])
def test_batches_have_the_objectives_labels(objective, tokenizer):
    args = pretrain.parse_args(["--objective", objective, "--maxlen", "32", "--plm-predict", "4"])
    docs = pretrain.read_documents(str(CORPUS), max_docs=5)
    examples = pretrain.examples_of(docs, objective, args.maxlen)[:6]
    inputs, labels = pretrain.encode_batch(objective, examples, tokenizer, args, np.random.default_rng(0))
    tokens, segments = inputs[0], inputs[1]
    assert tokens.shape == labels.shape and tokens.shape[1] <= 32
    real = tokens != 0
    if objective == "mlm":
        chosen = labels != 0
        assert chosen.any() and not (chosen & ~real).any()
        assert (tokens[chosen] == tokenizer.token_to_id("[MASK]")).mean() > 0.5
    elif objective == "lm":
        np.testing.assert_array_equal(labels, np.where(real, tokens, 0))
    elif objective == "unilm":
        assert (segments == 1).any(axis=1).all(), "every pair has a target"
        np.testing.assert_array_equal(labels, np.where(real & (segments == 1), tokens, 0))
    else:
        ranks = inputs[2]
        for row in range(len(tokens)):
            n = real[row].sum()
            assert sorted(ranks[row, :n]) == list(range(n))
            assert (labels[row] != 0).sum() == min(4, n)


@pytest.mark.parametrize("objective", ["mlm", "lm", "unilm", "plm"])
def test_a_few_steps_lower_the_heldout_loss(objective, tmp_path):
    from bert4k import build_transformer_model

    out = tmp_path / objective
    eager = [] if objective == "plm" else ["--run-eagerly"]  # tracing costs more than 4 steps; plm checks it
    summary = pretrain.main(["--objective", objective, "--steps", "4", "--log-every", "2", "--out", str(out), *TINY,
                             *eager])
    assert np.isfinite(summary["heldout_loss_end"])
    assert summary["heldout_loss_end"] < summary["heldout_loss_start"]
    with open(out / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4] and all(np.isfinite(float(r["loss"])) for r in rows)
    assert json.loads((out / "run.json").read_text())["args"]["objective"] == objective
    build_transformer_model(out / "config.json", out / "model.safetensors", application=objective)
