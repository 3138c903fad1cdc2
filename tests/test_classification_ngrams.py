"""The classifier's fastText-style n-gram bag: `build_sequence_classifier(ngram_vocab_size=...)` against numpy (mean
of the table rows of the non-padding ids, concatenated with the [CLS] vector, then the classifier), and
tasks/classification.py's n-gram vocabulary, dev cut and a saved model with the branch scoring a file again."""
import importlib
import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from bert4k import build_transformer_model
from bert4k.heads import build_sequence_classifier
from tests.conftest import DATA

TASKS = Path(__file__).resolve().parents[1] / "tasks"
TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def classification():
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    return importlib.import_module("classification")


def test_ngram_bag_against_numpy():
    encoder = build_transformer_model(TINY)
    model = build_sequence_classifier(encoder, 3, ngram_vocab_size=7, ngram_dim=4, ngram_lr_multiplier=10.0)
    assert [i.name for i in model.inputs][-1] == "Ngram-Ids"
    rng = np.random.default_rng(0)
    table = rng.normal(size=(7, 4)).astype("float32")
    layer = model.get_layer("Ngram-Embedding")
    layer.embeddings.assign(table / 10.0)  # stored divided by the multiplier (so it learns 10 times faster)
    token_ids = rng.integers(1, 50, size=(3, 5)).astype("int32")
    segment_ids = np.zeros_like(token_ids)
    ngram_ids = np.array([[2, 3, 3, 1, 0, 0], [6, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], "int32")
    logits = np.asarray(model([token_ids, segment_ids, ngram_ids], training=False))

    bags = np.zeros((3, 4), "float32")  # mean over the non-padding ids; [UNK] (1) is a row like any other
    for b, row in enumerate(ngram_ids):
        kept = row[row != 0]
        if len(kept):
            bags[b] = table[kept].mean(0)
    assert np.allclose(bags[0], (table[2] + 2 * table[3] + table[1]) / 4) and not bags[2].any()
    cls = np.asarray(encoder([token_ids, segment_ids]))[:, 0]
    dense = model.get_layer("Classifier-Dense")
    kernel, bias = (np.asarray(w) for w in dense.weights)
    expected = np.concatenate([cls, bags], -1) @ kernel + bias
    assert kernel.shape == (16 + 4, 3)
    assert np.abs(logits - expected).max() < 1e-4
    # more padding changes nothing; the ids are what count, not their order
    padded = np.concatenate([ngram_ids, np.zeros((3, 3), "int32")], 1)
    assert np.abs(np.asarray(model([token_ids, segment_ids, padded])) - logits).max() < 1e-5
    shuffled = ngram_ids[:, ::-1].copy()
    assert np.abs(np.asarray(model([token_ids, segment_ids, shuffled])) - logits).max() < 1e-5


def test_the_bag_sees_lower_cased_text_cut_to_max_chars():
    c = classification()
    assert c.ngram_text("Ab吃") == "ab吃" and len(c.ngram_text("x" * 5000)) == c.NGRAM_MAX_CHARS
    vocab = c.NgramVocab(["a", "ab"], c.NGRAM_ORDERS)
    # the third column holds the bag ids: a, b, ab of "AB" (b unseen → [UNK] = 1)
    assert c.features(["AB"], FakeTokenizer(), 8, vocab)[2] == [[2, 1, 3]]


class FakeTokenizer:
    def encode(self, text, maxlen):
        return [1, 2], [0, 0]


def test_dev_cut_is_deterministic_and_disjoint():
    c = classification()
    texts = [f"评论{i}" for i in range(2000)]
    labels = np.arange(2000) % 2
    train, train_labels, (dev, dev_labels) = c.dev_cut(texts, labels, 0.1)
    assert len(train_labels) == len(train)
    assert sorted(train + dev) == sorted(texts) and not set(train) & set(dev)
    assert 150 < len(dev) < 250 and all(int(t[2:]) % 2 == y for t, y in zip(dev, dev_labels))
    assert c.dev_cut(texts[::-1], labels[::-1], 0.1)[2][0] == dev[::-1]  # by the text, not its position
    import common

    # independent of the test split: about 10 % of the held-out texts would be dev too
    held = [t for t in texts if common.held_out(t, 0.5)]
    assert 0.05 < len(set(held) & set(dev)) / len(dev) < 0.95


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")
def test_saved_model_with_ngram_bag_predicts_again(tmp_path):
    c = classification()
    lines = (DATA / "chnsenticorp" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:41]
    train, test = tmp_path / "mine.tsv", tmp_path / "mine_test.tsv"
    train.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for y, t in (r.split("\t", 1) for r in lines[:24])),
                     encoding="utf-8")
    test.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for y, t in (r.split("\t", 1) for r in lines[24:])),
                    encoding="utf-8")
    out = tmp_path / "run"
    m = c.main(["--tiny", "--epochs", "1", "--batch-size", "8", "--maxlen", "32", "--ngram-dim", "8",
                "--ngram-min-count", "1", "--dev-fraction", "0.25", "--train", str(train), "--test", str(test),
                "--out", str(out), "--data-dir", str(DATA)])
    assert m["dev_examples"] > 0 and m["dev_examples"] + m["train_examples"] == 24 and "dev_accuracy" in m
    saved = json.loads((out / "ngrams.json").read_text(encoding="utf-8"))["ngrams"]
    model = keras.saving.load_model(out / "model.keras", compile=False)
    assert model.get_layer("Ngram-Embedding").input_dim == len(saved) + 2
    scored = c.main(["--predict", str(test), "--saved", str(out), "--out", str(tmp_path / "scored")])
    assert scored["predicted"] == 16 and abs(scored["accuracy"] - m["accuracy"]) < 1e-9
    got = [r.split("\t")[:2] for r in (tmp_path / "scored" / "predictions.tsv").read_text().splitlines()[1:]]
    ran = [r.split("\t")[1:3] for r in (out / "predictions.tsv").read_text().splitlines()[1:]]
    assert got == ran  # the same class and confidence as the run itself
