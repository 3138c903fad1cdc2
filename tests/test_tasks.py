"""Each task script runs end to end on a slice of the real data (tiny random model, one epoch) and writes its
predictions, a metrics JSON with sane values, the CSV log and the PNG learning curve."""
import importlib
import json
import math
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA

TASKS = Path(__file__).resolve().parents[1] / "tasks"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")


def run_task(name: str, tmp_path: Path, *extra: str) -> dict:
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    module = importlib.import_module(name)
    out = tmp_path / name
    module.main(["--tiny", "--epochs", "1", "--batch-size", "8", "--out", str(out), "--data-dir", str(DATA),
                 *extra])
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (out / "log.csv").read_text().startswith("epoch,")
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert metrics["settings"]["tiny"] and metrics["model_source"] == "scratch:tiny"
    return out, metrics


def test_classification(tmp_path):
    out, m = run_task("classification", tmp_path, "--limit", "48", "--maxlen", "48")
    assert m["train_examples"] == m["eval_examples"] == 48
    assert 0.0 <= m["accuracy"] <= 1.0
    assert 0.0 <= m["baselines"]["majority"] <= 1.0 and 0.0 <= m["baselines"]["tfidf_logreg"] <= 1.0
    rows = (out / "predictions.tsv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 48 and rows[1].split("\t")[0] in ("negative", "positive")


def test_classification_csl(tmp_path):
    _, m = run_task("classification", tmp_path, "--dataset", "csl", "--limit", "32", "--maxlen", "32",
                    "--pooling", "mean", "--no-baseline")
    assert len(m["labels"]) == 13 and 0.0 <= m["accuracy"] <= 1.0


@pytest.mark.parametrize("dataset,n_labels", [("online-shopping", 7), ("waimai", 2)])
def test_classification_review_datasets(tmp_path, dataset, n_labels):
    """The review datasets load with their labels and held-out split, and the TF-IDF baseline beats chance."""
    sys.path.insert(0, str(TASKS))
    import classification

    train_texts, train_labels, test_texts, test_labels, names = classification.load(dataset)
    assert len(names) == n_labels and set(train_labels.tolist()) == set(range(n_labels))
    assert not set(train_texts) & set(test_texts) and 0.15 < len(test_texts) / (len(train_texts) + len(test_texts)) < 0.25
    base = classification.baselines(dataset, train_texts[::8], train_labels[::8], test_texts[::8],
                                    test_labels[::8])
    tfidf = base["tfidf_logreg" if dataset == "waimai" else "tfidf_linear_svm"]
    assert tfidf > base["majority"] + 0.05


def test_class_weights_balance_the_loss():
    sys.path.insert(0, str(TASKS))
    import classification
    import numpy as np

    labels = np.array([0, 0, 0, 1])
    weights = classification.class_weights(labels, 3)
    assert np.allclose(weights[:2] * np.bincount(labels, minlength=3)[:2], len(labels) / 3) and weights[2] == 1.0
    loss = classification.weighted_cross_entropy(weights)
    logits = np.zeros((4, 3), "float32")
    got = np.asarray(loss(labels, logits))
    assert np.allclose(got, np.log(3) * weights[labels], atol=1e-6)


def test_qa(tmp_path):
    out, m = run_task("qa", tmp_path, "--limit", "12", "--maxlen", "128", "--stride", "64")
    assert m["eval_questions"] == 12 and m["train_windows"] >= 12
    assert 0.0 <= m["em"] <= m["f1"] <= 100.0
    answers = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert len(answers) == 12 and all(isinstance(a, str) for a in answers.values())


def test_seq2seq(tmp_path):
    out, m = run_task("seq2seq", tmp_path, "--limit", "8", "--maxlen", "96", "--max-title-tokens", "6",
                      "--beams", "2")
    assert 0.0 <= m["rouge_l"] <= 1.0 and 0.0 <= m["bleu"] <= 1.0
    assert 0.2 < m["baselines"]["lead20"]["rouge_l"] < 0.6  # DESIGN: ≈ 0.32 on a larger split
    assert len((out / "predictions.tsv").read_text(encoding="utf-8").splitlines()) == 1 + 8
    assert 0.0 < m["distinct_1"] <= 1.0 and 0.0 <= m["distinct_2"] <= 1.0 and 0.0 < m["unique_outputs"] <= 1.0


def test_distinct_n_counts_repetition():
    sys.path.insert(0, str(TASKS))
    import seq2seq

    assert seq2seq.distinct_n(["基于于于于"], 1) == 2 / 5  # 基, 于 out of five chars
    assert seq2seq.distinct_n(["基于于于于"], 2) == 2 / 4  # 基于, 于于 out of four bigrams
    assert seq2seq.distinct_n(["ab", "ab"], 2) == 0.5 and seq2seq.distinct_n(["a"], 2) == 0.0


def test_lm(tmp_path):
    out, m = run_task("lm", tmp_path, "--limit", "48", "--maxlen", "40", "--samples", "2")
    assert 1.0 < m["perplexity"] < 10 * m["vocab_size"] and math.isfinite(m["perplexity"])
    samples = (out / "samples.txt").read_text(encoding="utf-8").splitlines()
    assert len(samples) == 2 and m["samples_in_form"] == 1.0  # a tiny random model, yet every sample in form
    sys.path.insert(0, str(TASKS))
    import lm

    assert all(lm.poem_form(s) in ((5, 4), (5, 8), (7, 4), (7, 8)) for s in samples)


def test_poem_form_and_visible_unk():
    sys.path.insert(0, str(TASKS))
    import lm

    from bert4k.tokenizers import Tokenizer

    assert lm.poem_form("秦川雄帝宅，函谷壯皇居。") == (5, 2)
    assert lm.poem_form("秦川雄帝宅，函谷壯皇。") is None and lm.poem_form("秦川雄帝宅，函谷") is None
    tokenizer = Tokenizer(str(DATA / "bert-chinese-vocab" / "vocab.txt"), do_lower_case=True)
    ids = tokenizer.tokens_to_ids(["秦", "[UNK]", "雄"])
    assert lm.visible_text(tokenizer, ids) == "秦□雄" and tokenizer.decode(ids) == "秦雄"


@pytest.mark.parametrize("name", ["classification", "qa", "seq2seq", "lm"])
def test_help(name, capsys):
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(name).parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--config", "--checkpoint", "--vocab", "--out", "--epochs", "--limit"))


PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"


def test_registry_entries_name_known_families():
    from bert4k.models.families import get_family

    registry = json.loads((PRETRAINED / "registry.json").read_text(encoding="utf-8"))["checkpoints"]
    assert {"bert-base-chinese", "hfl/chinese-roberta-wwm-ext", "uer/gpt2-chinese-cluecorpussmall",
            "google/mt5-small", "voidful/albert_chinese_tiny"} <= set(registry)
    for name, entry in registry.items():
        get_family(entry["model"])  # raises for an unknown family
        assert entry["files"] and entry["config"] and ("source" in entry or "local" in entry), name


def test_our_pretrained_checkpoint_loads_in_bert4k_and_transformers():
    """The committed small checkpoint is a real HF BERT: transformers' BertForMaskedLM gives the same MLM logits."""
    import numpy as np
    import torch
    from transformers import BertForMaskedLM

    from bert4k import Tokenizer, build_transformer_model

    folder = PRETRAINED / "bert4k-small-zh"
    tokenizer = Tokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    ids, segments = tokenizer.encode("这家酒店的服务很好，房间也干净。")
    assert tokenizer.token_to_id("[UNK]") not in ids
    ours = build_transformer_model(str(folder / "config.json"), str(folder / "model.safetensors"),
                                   application="mlm", logits=True)
    got = ours.predict([np.array([ids]), np.array([segments])], verbose=0)
    reference = BertForMaskedLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([segments])).logits.numpy()
    assert np.abs(got - expected).max() < 1e-4
