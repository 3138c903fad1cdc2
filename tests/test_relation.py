"""The half-pointer / half-tagging relation extractor: its pieces against numpy (span vectors, conditional LayerNorm
injection, masked BCE), the decoding rules, bad input, and the task script learning a synthetic corpus whose
triples are known (tasks/relation_extraction.py --demo)."""
import importlib
import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from bert4k import heads_relation as rel

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def task():
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    return importlib.import_module("relation_extraction")


def toy_models(hidden=8, predicates=3, vocab=20):
    ids = keras.Input((None,), dtype="int32")
    encoder = keras.Model(ids, keras.layers.Embedding(vocab, hidden)(ids))
    return encoder, rel.build_relation_extractor(encoder, predicates)


def test_span_vectors_and_conditional_injection_match_numpy():
    encoder, models = toy_models()
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 20, size=(2, 6))
    spans = np.array([[1, 3], [0, 0]], "int32")
    h = encoder.predict(ids, verbose=0)
    vectors = rel.SpanVectors()(h, spans)
    np.testing.assert_allclose(vectors, np.concatenate([h[[0, 1], spans[:, 0]], h[[0, 1], spans[:, 1]]], -1))
    norm = models.object.get_layer("Subject-Conditional-LayerNorm")
    gamma_w, beta_w = (rng.normal(size=w.shape).astype("float32") for w in (norm.gamma_dense, norm.beta_dense))
    norm.gamma_dense.assign(gamma_w)
    norm.beta_dense.assign(beta_w)
    dense = models.object.get_layer("Object-Logits")
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in dense.weights)
    got = models.object.predict([ids, spans], verbose=0)
    c = np.asarray(vectors)
    gamma = keras.ops.convert_to_numpy(norm.gamma) + c @ gamma_w
    beta = keras.ops.convert_to_numpy(norm.beta) + c @ beta_w
    z = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + norm.epsilon)
    ref = (z * gamma[:, None] + beta[:, None]) @ kernel + bias
    np.testing.assert_allclose(got, ref.reshape(2, 6, 3, 2), rtol=1e-4, atol=1e-5)
    # a different subject changes the object logits of the same text
    other = models.object.predict([ids, np.array([[2, 2], [4, 5]], "int32")], verbose=0)
    assert np.abs(other - got).max() > 1e-3


def test_masked_bce_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 3, 2)).astype("float32") * 4
    y = (rng.random((2, 5, 3, 2)) < 0.3).astype("float32")
    y[1, 3:] = rel.IGNORE
    got = keras.ops.convert_to_numpy(rel.masked_binary_crossentropy(y, logits))
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    ce = -(np.where(y > 0, np.log(p), np.log(1 - p)))
    ref = ce.sum(axis=(2, 3)) / 2
    ref[1, 3:] = 0
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_pair_spans_takes_the_nearest_end():
    start = np.array([0.9, 0.1, 0.7, 0.2, 0.9, 0.8])
    end = np.array([0.1, 0.8, 0.1, 0.9, 0.1, 0.2])
    assert rel.pair_spans(start, end) == [(0, 1), (2, 3)]  # starts 4 and 5 have no end after them
    assert rel.pair_spans(start, end, start_threshold=0.75) == [(0, 1)]
    assert rel.pair_spans(start, end, allowed=[0, 1, 1, 1, 1, 1]) == [(2, 3)]


def test_labels_and_bad_spans():
    subject, obj = rel.relation_labels(5, [(1, 2), (4, 4)], [(3, 4, 1)], 2)
    assert subject[:, 0].tolist() == [0, 1, 0, 0, 1] and subject[:, 1].tolist() == [0, 0, 1, 0, 1]
    assert obj.sum() == 2 and obj[3, 1, 0] == 1 and obj[4, 1, 1] == 1
    with pytest.raises(ValueError, match=r"subject span \(3, 5\) lies outside positions 0..4"):
        rel.relation_labels(5, [(3, 5)], [], 2)
    with pytest.raises(ValueError, match="predicate id 2 is outside 0..1"):
        rel.relation_labels(5, [], [(0, 0, 2)], 2)
    with pytest.raises(ValueError, match="num_predicates"):
        toy_models(predicates=0)


def test_triple_scores():
    gold = [{("a", "p", "b"), ("a", "q", "c")}, set()]
    pred = [{("a", "p", "b")}, {("x", "p", "y")}]
    s = rel.triple_scores(gold, pred)
    assert (s["precision"], s["recall"], s["f1"]) == (0.5, 0.5, 0.5)


def test_reader_and_truncation(tmp_path, vocab_path):
    from bert4k.tokenizers import Tokenizer

    re_task = task()
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"text": "张伟出生于北京。", "spo_list": [
        {"subject": "张伟", "predicate": "出生地", "object": {"@value": "北京"}}]}, ensure_ascii=False) + "\n\n"
        + json.dumps({"text": "x", "spo_list": [{"subject": "x"}]}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"d.json:3: expected .*KeyError"):
        re_task.read_spo(path)
    path.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    rows = re_task.read_spo(path)
    assert rows == [{"text": "张伟出生于北京。", "spo": [("张伟", "出生地", "北京")]}]
    tokenizer = Tokenizer(str(vocab_path), do_lower_case=True)
    full = re_task.encode(rows[0], tokenizer, 32, {"出生地": 0})
    assert full.triples == {(1, 2): [(6, 7, 0)]} and full.unreachable == 0
    cut = re_task.encode(rows[0], tokenizer, 7, {"出生地": 0})  # [CLS] 张 伟 出 生 于 [SEP]: 北京 is cut off
    assert cut.triples == {} and cut.unreachable == 1
    assert re_task.encode({"text": "", "spo": []}, tokenizer, 8, {}).triples == {}


@pytest.mark.slow
def test_learns_the_synthetic_triples(tmp_path):
    """From random weights, the tiny model must recover the held-out synthetic triples (F1 > 0.9)."""
    out = tmp_path / "re"
    task().main(["--demo", "400", "--tiny", "--epochs", "15", "--batch-size", "16", "--lr", "2e-3", "--out", str(out)])
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["synthetic_demo"] and m["predicates"] == sorted(["出生地", "创始人", "总部"])
    assert m["unreachable_test_triples"] == 0 and m["test_texts"] > 50
    assert m["f1"] > 0.9, m
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == m["test_texts"]


def test_relation_builder_is_reachable_from_heads():
    from bert4k import heads

    assert heads.build_relation_extractor is rel.build_relation_extractor
    assert heads.relation_losses is rel.relation_losses and heads.extract_relations is rel.extract_relations
    assert heads.RelationModels is rel.RelationModels
