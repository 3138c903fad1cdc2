"""Each task script runs end to end on a slice of the real data (tiny random model, one epoch) and writes its
predictions, a metrics JSON with sane values, the CSV log and the PNG learning curve."""
import hashlib
import importlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA

TASKS = Path(__file__).resolve().parents[1] / "tasks"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")


def run_task(name: str, tmp_path: Path, *extra: str) -> dict:
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    module = importlib.import_module(name)
    out = Path(extra[extra.index("--out") + 1]) if "--out" in extra else tmp_path / name
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
    assert len(rows) == 1 + 48 and rows[0].split("\t")[:2] == ["gold", "predicted"]
    sys.path.insert(0, str(TASKS))
    import classification

    _, _, texts, labels, names = classification.load("chnsenticorp", limit=48)
    columns = [row.split("\t", 3) for row in rows[1:]]
    assert [c[3] for c in columns] == texts and [c[0] for c in columns] == [names[y] for y in labels]
    # the reported accuracy is the share of rows whose prediction equals the data's own label
    assert m["accuracy"] == pytest.approx(sum(c[0] == c[1] for c in columns) / 48, abs=1e-9)


@pytest.mark.slow
def test_classification_csl(tmp_path):
    out, m = run_task("classification", tmp_path, "--dataset", "csl", "--limit", "32", "--maxlen", "32",
                      "--pooling", "mean", "--no-baseline")
    assert len(m["labels"]) == 13
    # the gold column is csl-category/dev.tsv's first 32 labels, and the accuracy is the share of rows predicted so
    dev = [line.split("\t") for line in (DATA / "csl-category" / "dev.tsv").read_text(encoding="utf-8").splitlines()
           if line.strip()][:32]
    rows = [r.split("\t", 3) for r in (out / "predictions.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    assert [(r[0], r[3]) for r in rows] == [(label, text) for _, text, label in dev]
    assert m["accuracy"] == pytest.approx(sum(r[0] == r[1] for r in rows) / 32, abs=1e-12)


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
    loss = classification.WeightedCrossEntropy(weights.tolist(), reduction=None)
    logits = np.zeros((4, 3), "float32")
    got = np.asarray(loss(labels, logits))
    assert np.allclose(got, np.log(3) * weights[labels], atol=1e-6)


def test_qa(tmp_path):
    from tests.oracles import cmrc

    out, m = run_task("qa", tmp_path, "--limit", "12", "--maxlen", "128", "--stride", "64")
    assert m["eval_questions"] == 12 and m["train_windows"] >= 12
    answers = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert len(answers) == 12 and all(isinstance(a, str) for a in answers.values())
    # EM / F1 recomputed from the written answers by the official script's rules (tests/oracles/cmrc.py), over the
    # first 12 questions of the trial set
    data = json.loads((DATA / "cmrc2018" / "cmrc2018_trial.json").read_text(encoding="utf-8"))
    gold = [(qa["id"].strip(), [a["text"] for a in qa["answers"]]) for article in data["data"]
            for paragraph in article["paragraphs"] for qa in paragraph["qas"]][:12]
    assert sorted(answers) == sorted(q for q, _ in gold)
    em, f1 = cmrc.corpus_scores(answers, dict(gold))
    assert m["em"] == pytest.approx(em, abs=1e-9) and m["f1"] == pytest.approx(f1, abs=1e-9)
    assert set(m["baselines"]) == {"lead", "overlap"} and all(0 <= b["f1"] <= 100 for b in m["baselines"].values())


def test_qa_baselines_take_the_context_start_and_the_span_after_the_question_words():
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    qa = importlib.import_module("qa")
    question = qa.Question("q1", "李白出生在哪里", "据记载，李白出生在碎叶城，后来迁居四川。", ["碎叶城"], 9)
    guesses = qa.baseline_answers([question], 3)
    assert guesses == {"lead": {"q1": "据记载"}, "overlap": {"q1": "碎叶城"}}


def test_qa_match_features_by_hand():
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    qa = importlib.import_module("qa")
    question, context = list("李白在哪"), ["据", "说", "李", "白", "在", "碎", "##叶"]
    f = qa.match_features(question, context)
    assert f.shape == (7, qa.MATCH_FEATURES)
    at = list(qa.MATCH_OFFSETS).index(0)
    width = len(qa.MATCH_OFFSETS)
    assert f[:, at].tolist() == [0, 0, 1, 1, 1, 0, 0]  # the token is a question word
    assert f[:, width + at].tolist() == [0, 0, 1, 1, 0, 0, 0]  # 李白, 白在 start at 2 and 3
    assert f[5, at - 1] == 1 and f[5, at + 1] == 0  # 碎: its left neighbour 在 is a question word, 叶 is not
    # the share of the question's bigrams (李白 白在 在哪) inside the 4 tokens before / after a token
    assert f[5, -3] == pytest.approx(2 / 3, rel=1e-6) and f[3, -3] == 0  # before 碎: 说李白在; before 白: 据说李
    assert f[0, -2] == pytest.approx(2 / 3, rel=1e-6) and f[4, -2] == 0  # after 据: 说李白在; after 在: 碎叶
    assert f[:, -1].tolist() == [1] * 7


def test_seq2seq(tmp_path):
    out, m = run_task("seq2seq", tmp_path, "--limit", "8", "--maxlen", "96", "--max-title-tokens", "6",
                      "--beams", "2")
    rows = [r.split("\t", 2) for r in (out / "predictions.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    from rouge_score.rouge_scorer import _score_lcs  # the reference package's LCS F-measure, per character

    expected = sum(_score_lcs(list(ref), list(gen)).fmeasure for ref, gen, _ in rows) / len(rows)
    assert m["rouge_l"] == pytest.approx(expected, abs=1e-6) and 0.0 <= m["bleu"] <= 1.0
    assert 0.2 < m["baselines"]["lead20"]["rouge_l"] < 0.6  # DESIGN: ≈ 0.32 on a larger split
    assert len((out / "predictions.tsv").read_text(encoding="utf-8").splitlines()) == 1 + 8
    assert 0.0 < m["distinct_1"] <= 1.0 and 0.0 <= m["distinct_2"] <= 1.0 and 0.0 < m["unique_outputs"] <= 1.0


def test_seq2seq_copy_only_and_dev_cut(tmp_path):
    """`--copy-only` titles use the abstract's characters only; the dev cut is scored every epoch, both ways, and
    the best epoch's record is in metrics.json."""
    out, m = run_task("seq2seq", tmp_path, "--limit", "10", "--maxlen", "96", "--max-title-tokens", "6",
                      "--beams", "2", "--copy-only", "--dev-fraction", "0.4", "--dev-every", "1", "--epochs", "2")
    rows = [r.split("\t", 2) for r in (out / "predictions.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    assert all(set(generated.lower()) <= set(abstract.lower()) for _, generated, abstract in rows)
    assert m["dev"]["monitor"] == "dev_rouge_l_copy" and 1 <= m["dev"]["epoch"] <= 2
    assert m["dev"]["value"] == pytest.approx(m["dev"]["dev_rouge_l_copy"])  # the kept weights give the best score
    log = (out / "log.csv").read_text(encoding="utf-8")
    assert "dev_rouge_l_copy" in log and "dev_rouge_l" in log


def test_distinct_n_counts_repetition():
    sys.path.insert(0, str(TASKS))
    import seq2seq

    assert seq2seq.distinct_n(["基于于于于"], 1) == 2 / 5  # 基, 于 out of five chars
    assert seq2seq.distinct_n(["基于于于于"], 2) == 2 / 4  # 基于, 于于 out of four bigrams
    assert seq2seq.distinct_n(["ab", "ab"], 2) == 0.5 and seq2seq.distinct_n(["a"], 2) == 0.0


def test_lm(tmp_path):
    # the Chinese BERT vocab ([UNK] is id 100 there): unseen held-out characters must become the compact [UNK]
    out, m = run_task("lm", tmp_path, "--limit", "48", "--maxlen", "40", "--samples", "2", "--vocab",
                      str(DATA / "bert-chinese-vocab" / "vocab.txt"))
    assert m["eval_unk_rate"] > 0
    # perplexity recomputed from the saved model's own log-probabilities, one unpadded held-out poem at a time
    from bert4k.pretrained import load_model
    from bert4k.tokenizers import Tokenizer

    model = load_model(out / "model.keras", compile=False)
    tokenizer = Tokenizer(str(out / "vocab.txt"), do_lower_case=True)
    poems = []
    with open(DATA / "tang-poems" / "tang_poems_train.jsonl", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if hashlib.md5(record["id"].encode("utf-8")).digest()[:8] < bytes.fromhex("0ccccccccccccccd"):  # < 5%
                poems.append("".join(record["paragraphs"]))
            if len(poems) == 48:
                break
    nll, count = 0.0, 0
    for poem in poems:
        ids = np.array([tokenizer.encode(poem, maxlen=40)[0]], "int32")
        logits = np.asarray(model.predict_on_batch([ids, np.zeros_like(ids)]), np.float64)[0, :-1]
        log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        nll -= log_probs[np.arange(len(log_probs)), ids[0, 1:]].sum()
        count += ids.shape[1] - 1
    assert m["eval_poems"] == 48 and m["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
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


@pytest.mark.parametrize("name,fields", [("ner", "text and entities"), ("relation_extraction", "spo_list"),
                                         ("rank", "FILE.query"), ("conditional_lm", "text, label"),
                                         ("pretrain", "one document a line")])
def test_help_documents_the_data_files(name, fields, capsys):
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(name).parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0 and "--train FILE" in text and fields in text
    assert ("--test FILE" in text) == (name != "pretrain") and ("--predict FILE" in text) == (name not in (
        "rank", "pretrain"))


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


# === the user's own files, saved models, resume only with the same settings ===

def _own_files(tmp_path: Path, n: int = 40) -> tuple[Path, Path]:
    lines = (DATA / "chnsenticorp" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:n + 1]
    rows = [line.split("\t", 1) for line in lines]
    names = {"0": "差评", "1": "好评"}
    train = tmp_path / "mine.tsv"
    train.write_text("text\tlabel\n" + "".join(f"{t}\t{names[y]}\n" for y, t in rows[:n // 2]), encoding="utf-8")
    test = tmp_path / "mine_test.jsonl"
    test.write_text("".join(json.dumps({"text": t, "label": names[y]}, ensure_ascii=False) + "\n"
                            for y, t in rows[n // 2:]), encoding="utf-8")
    return train, test


def test_classification_on_own_files_saves_and_predicts(tmp_path, capsys):
    train, test = _own_files(tmp_path)
    out, m = run_task("classification", tmp_path, "--train", str(train), "--test", str(test), "--maxlen", "32")
    assert m["labels"] == ["好评", "差评"] and m["train_examples"] == m["eval_examples"] == 20
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith(f"model accuracy {m['accuracy']:.4g} | baselines: majority")
    assert (out / "model.keras").exists() and (out / "vocab.txt").exists()
    module = importlib.import_module("classification")
    scored = module.main(["--predict", str(test), "--saved", str(out), "--out", str(tmp_path / "scored")])
    assert scored["predicted"] == 20 and abs(scored["accuracy"] - m["accuracy"]) < 1e-9
    got = [row.split("\t")[0] for row in (tmp_path / "scored" / "predictions.tsv").read_text().splitlines()[1:]]
    expected = [row.split("\t")[1] for row in (out / "predictions.tsv").read_text().splitlines()[1:]]
    assert got == expected  # the saved model predicts what the run predicted
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\nx\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv: header row \['sentence', 'label'\] lacks column\(s\) \['text'\]"):
        module.main(["--tiny", "--train", str(bad), "--out", str(tmp_path / "bad")])


def test_backup_from_other_settings_is_not_resumed(tmp_path, capsys):
    """An interrupted ChnSentiCorp run's backup must not be restored into a CSL model (it crashed before): the
    backup is kept only when the saved settings equal the new run's."""
    import common

    module = importlib.import_module("classification")
    chnsenticorp = module.parse_args(["--tiny", "--out", str(tmp_path)])
    csl = module.parse_args(["--tiny", "--dataset", "csl", "--out", str(tmp_path / "elsewhere")])
    common.check_resume(tmp_path, chnsenticorp)
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "latest.weights.h5").write_bytes(b"weights of the chnsenticorp model")
    common.check_resume(tmp_path, module.parse_args(["--tiny", "--out", str(tmp_path / "x")]))  # --out is neutral
    assert "resuming the interrupted run with the same settings" in capsys.readouterr().out
    assert (tmp_path / "backup" / "latest.weights.h5").exists()
    common.check_resume(tmp_path, csl)
    said = capsys.readouterr().out  # the per-dataset recipes differ too (epochs, lr, maxlen, class weighting)
    assert "used other settings (" in said and "dataset: 'chnsenticorp' → 'csl'" in said and "starting fresh" in said
    assert not (tmp_path / "backup").exists()
    assert json.loads((tmp_path / "settings.json").read_text())["dataset"] == "csl"
    assert common.default_out(csl) == common.REPO / "runs" / "classification-csl-tiny"


@pytest.mark.slow
def test_seq2seq_and_lm_on_own_files_save_and_predict(tmp_path):
    rows = [line.split("\t") for line in (DATA / "csl-title" / "dev.tsv").read_text(encoding="utf-8").splitlines()]
    papers = tmp_path / "papers.jsonl"
    papers.write_text("".join(json.dumps({"source": a[:120], "target": t}, ensure_ascii=False) + "\n"
                              for _, a, t in rows[:24]), encoding="utf-8")
    out, m = run_task("seq2seq", tmp_path, "--train", str(papers), "--maxlen", "64", "--max-title-tokens", "6",
                      "--beams", "2")
    assert m["dataset"] == str(papers) and m["train_examples"] + m["eval_examples"] == 24
    scored = importlib.import_module("seq2seq").main(["--predict", str(papers), "--saved", str(out), "--maxlen", "64",
                                                       "--max-title-tokens", "6", "--beams", "2",
                                                       "--out", str(tmp_path / "titles")])
    generated = {r.split("\t")[1] for r in (out / "predictions.tsv").read_text().splitlines()[1:]}
    again = {r.split("\t")[0] for r in (tmp_path / "titles" / "predictions.tsv").read_text().splitlines()[1:]}
    assert scored["predicted"] == 24 and generated <= again  # the saved model decodes what the run decoded

    texts = tmp_path / "texts.tsv"
    texts.write_text("text\n" + "".join(f"{t}\n" for _, _, t in rows[:60]), encoding="utf-8")
    out, m = run_task("lm", tmp_path, "--train", str(texts), "--maxlen", "40", "--samples", "2")
    test = tmp_path / "held_out.jsonl"
    import common

    held = [t for _, _, t in rows[:60] if common.held_out(t, common.SPLITS["tang-poems"])]
    test.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in held), encoding="utf-8")
    scored = importlib.import_module("lm").main(["--predict", str(test), "--saved", str(out), "--maxlen", "40",
                                                  "--out", str(tmp_path / "ppl")])
    assert abs(scored["perplexity"] - m["perplexity"]) / m["perplexity"] < 1e-4


@pytest.mark.slow
def test_qa_on_own_file_saves_and_predicts(tmp_path):
    data = json.loads((DATA / "cmrc2018" / "cmrc2018_trial.json").read_text(encoding="utf-8"))
    paragraph = data["data"][0]["paragraphs"][0]
    paragraph["qas"] = paragraph["qas"][:4]
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"data": [{"paragraphs": [paragraph]}]}, ensure_ascii=False), encoding="utf-8")
    out, m = run_task("qa", tmp_path, "--train", str(mine), "--test", str(mine), "--maxlen", "128", "--stride", "64")
    assert m["dataset"] == str(mine) and m["eval_questions"] == 4
    unanswered = json.loads(mine.read_text(encoding="utf-8"))
    for qa in unanswered["data"][0]["paragraphs"][0]["qas"]:
        del qa["answers"]
    (tmp_path / "questions.json").write_text(json.dumps(unanswered, ensure_ascii=False), encoding="utf-8")
    scored = importlib.import_module("qa").main(["--predict", str(tmp_path / "questions.json"), "--saved", str(out),
                                                  "--maxlen", "128", "--stride", "64", "--out", str(tmp_path / "a")])
    assert scored["predicted"] == 4 and "f1" not in scored
    assert (json.loads((tmp_path / "a" / "predictions.json").read_text()) ==
            json.loads((out / "predictions.json").read_text()))


def _classification_command(out: Path) -> list[str]:
    return [sys.executable, str(TASKS / "classification.py"), "--tiny", "--limit", "64", "--maxlen", "32",
            "--batch-size", "8", "--epochs", "3", "--no-baseline", "--seed", "3", "--out", str(out),
            "--data-dir", str(DATA)]


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL during epoch 2, then the same command again: it resumes from the epoch-1 backup and ends with the
    metrics and weights of a run that was never interrupted (same seed)."""
    import signal
    import subprocess
    import time

    import numpy as np

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_classification_command(whole), check=True, env=env, capture_output=True, timeout=600)
    process = subprocess.Popen(_classification_command(killed), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    metadata = killed / "backup" / "training_metadata.json"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch") == 1:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed in epoch 2"
    assert not (killed / "metrics.json").exists()
    resumed = subprocess.run(_classification_command(killed), check=True, env=env, capture_output=True, text=True,
                             timeout=600)
    assert "resuming the interrupted run with the same settings" in resumed.stdout
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert a["accuracy"] == b["accuracy"]
    log_a = (whole / "log.csv").read_text().splitlines()
    log_b = (killed / "log.csv").read_text().splitlines()
    assert log_a[0] == log_b[0] and len(log_b) == len(log_a) == 4
    numbers = [[[float(v) for v in line.split(",")] for line in log[1:]] for log in (log_a, log_b)]
    np.testing.assert_allclose(numbers[0], numbers[1], atol=1e-5)  # every epoch's loss, accuracy, val_*
    from bert4k.pretrained import load_model

    for u, v in zip(load_model(whole / "model.keras").weights, load_model(killed / "model.keras").weights):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-5, err_msg=u.path)


# === --train/--dev/--test and --predict on the other scripts ===

def test_ner_on_own_files_saves_and_predicts(tmp_path):
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    ner = importlib.import_module("ner")
    from bert4k import tagging

    head = tmp_path / "head.txt"
    with open(DATA / "msra-ner" / "train.txt", encoding="utf-8") as f:
        head.write_text("".join(line for _, line in zip(range(20000), f)), encoding="utf-8")
    sentences = [s for s in ner.read_iob(head) if s.spans][:60]
    assert len(sentences) == 60
    train = tmp_path / "mine.txt"  # IOB2, as msra-ner/train.txt
    train.write_text("\n".join("".join(f"{c}\t{t}\n" for c, t in zip(s.chars, tagging.spans_to_tags(s.spans, len(s.chars)))) for s in sentences[:40]),
                     encoding="utf-8")

    def jsonl(path, rows, entities=True):
        path.write_text("".join(json.dumps({"text": s.text, **({"entities": [[k, a, b, s.text[a:b + 1]] for k, a, b
                                            in s.spans]} if entities else {})}, ensure_ascii=False) + "\n"
                                for s in rows), encoding="utf-8")
        return path

    dev, test = jsonl(tmp_path / "dev.jsonl", sentences[40:48]), jsonl(tmp_path / "test.jsonl", sentences[48:60])
    out = tmp_path / "run"
    m = ner.main(["--tiny", "--epochs", "1", "--batch-size", "8", "--maxlen", "32", "--heads", "crf", "--no-baseline",
                  "--train", str(train), "--dev", str(dev), "--test", str(test), "--out", str(out),
                  "--data-dir", str(DATA)])
    assert (m["dataset"], m["train_sentences"], m["dev_sentences"], m["test_sentences"]) == (str(train), 40, 8, 12)
    assert m["results"]["crf"]["gold"] == sum(len(s.spans) for s in sentences[48:60])
    assert (out / "crf" / "model.keras").exists() and (out / "crf" / "vocab.txt").exists()
    run_rows = [json.loads(r) for r in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    scored = ner.main(["--predict", str(test), "--saved", str(out), "--out", str(tmp_path / "tagged")])
    rows = [json.loads(r) for r in (tmp_path / "tagged" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert scored["predicted"] == 12 and [r["crf"] for r in rows] == [r["crf"] for r in run_rows]
    assert scored["f1_crf"] == pytest.approx(m["results"]["crf"]["f1"], abs=1e-12)
    unlabelled = ner.main(["--predict", str(jsonl(tmp_path / "new.jsonl", sentences[48:60], entities=False)),
                           "--saved", str(out), "--out", str(tmp_path / "new")])
    rows = [json.loads(r) for r in (tmp_path / "new" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert "f1_crf" not in unlabelled and [r["crf"] for r in rows] == [r["crf"] for r in run_rows]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "张三去北京", "entities": [["PER", 0, 1, "张"]]}, ensure_ascii=False) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: record 1: entity \['PER', 0, 1, '张'\] says '张' but the text "
                                         r"there is '张三'"):
        ner.read_sentences(bad)


def test_relation_extraction_on_own_files_saves_and_predicts(tmp_path):
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    task = importlib.import_module("relation_extraction")
    rows = task.make_demo(60, seed=1)

    def jsonl(path, part, labelled=True):
        task.write_jsonl(path, [{"text": r["text"], **({"spo_list": [dict(zip(("subject", "predicate", "object"), t))
                                                                     for t in r["spo"]]} if labelled else {})}
                                for r in part])
        return path

    train, test = jsonl(tmp_path / "mine.jsonl", rows[:48]), jsonl(tmp_path / "mine_test.jsonl", rows[48:])
    out = tmp_path / "run"
    m = task.main(["--tiny", "--epochs", "1", "--batch-size", "8", "--maxlen", "32", "--threshold", "0.2",
                   "--train", str(train), "--test", str(test), "--out", str(out), "--data-dir", str(DATA)])
    assert (m["data"], m["train_texts"], m["test_texts"]) == (str(train), 48, 12)
    run_rows = [json.loads(r) for r in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(r["predicted"] for r in run_rows)  # threshold 0.2: the untrained model predicts something
    scored = task.main(["--predict", str(test), "--saved", str(out), "--out", str(tmp_path / "scored")])
    rows_again = [json.loads(r) for r in (tmp_path / "scored" / "predictions.jsonl").read_text().splitlines()]
    assert [r["predicted"] for r in rows_again] == [r["predicted"] for r in run_rows]
    assert (scored["texts"], scored["predicted"], scored["f1"]) == (12, m["predicted"], m["f1"])
    new = task.main(["--predict", str(jsonl(tmp_path / "new.jsonl", rows[48:], labelled=False)), "--saved", str(out),
                     "--out", str(tmp_path / "new")])
    rows_new = [json.loads(r) for r in (tmp_path / "new" / "predictions.jsonl").read_text().splitlines()]
    assert "f1" not in new and [r["predicted"] for r in rows_new] == [r["predicted"] for r in run_rows]


def test_rank_on_own_files(tmp_path):
    """LIBSVM ranking files (+ .query) as --train/--dev/--test: the lists read are the files' lists."""
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    lines = (DATA / "lambdarank" / "rank.train").read_text().splitlines()
    sizes = [int(n) for n in (DATA / "lambdarank" / "rank.train.query").read_text().split()]
    files, start = {}, 0
    for name, count in (("mine.train", 20), ("mine.dev", 6), ("mine.test", 6)):
        chunk = sizes[:count]
        sizes = sizes[count:]
        (tmp_path / name).write_text("\n".join(lines[start:start + sum(chunk)]) + "\n")
        (tmp_path / f"{name}.query").write_text("".join(f"{n}\n" for n in chunk))
        files[name], start = chunk, start + sum(chunk)
    m = importlib.import_module("rank").main(
        ["--tiny", "--epochs", "1", "--synthetic-lists", "8", "--variants", "per_document_mlp", "--out",
         str(tmp_path / "run"), "--train", str(tmp_path / "mine.train"), "--dev", str(tmp_path / "mine.dev"),
         "--test", str(tmp_path / "mine.test")])
    assert (m["train_queries"], m["dev_queries"], m["test_queries"]) == (20, 6, 6)
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["train"] == str(tmp_path / "mine.train")
    import common

    assert common.default_out(common.argparse.Namespace(task_name="rank", train="x/mine.train"), "tiny") == \
        common.REPO / "runs" / "rank-mine-tiny"


def test_conditional_lm_on_own_files_saves_and_samples(tmp_path):
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    task = importlib.import_module("conditional_lm")
    train, test = _own_files(tmp_path, 60)
    out = tmp_path / "run"
    m = task.main(["--train", str(train), "--test", str(test), "--steps", "2", "--eval-every", "2", "--samples", "2",
                   "--max-new-tokens", "6", "--layers", "1", "--hidden-size", "32", "--heads", "2", "--cond-size",
                   "8", "--min-count", "1", "--eager", "--out", str(out)])
    assert (m["labels"], m["train_reviews"], m["heldout_reviews"]) == (["好评", "差评"], 30, 30)
    rows = (out / "samples.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0].split("\t") == ["model", "requested", "classified", "p_差评", "text"]
    assert [r.split("\t")[1] for r in rows[1:5]] == ["好评", "好评", "差评", "差评"]
    vocab = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] and len(vocab) == m["vocab_size"]
    labels = tmp_path / "labels.tsv"
    labels.write_text("label\n好评\n好评\n差评\n差评\n", encoding="utf-8")
    scored = task.main(["--predict", str(labels), "--saved", str(out), "--out", str(tmp_path / "new")])
    again = (tmp_path / "new" / "samples.tsv").read_text(encoding="utf-8").splitlines()
    # the saved model with the run's seed samples what the run sampled for the same conditions
    assert scored["predicted"] == 4 and [r.split("\t") for r in again[1:]] == [
        [r.split("\t")[1], r.split("\t")[4]] for r in rows[1:5]]
    labels.write_text("label\n中评\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"labels.tsv: labels \['中评'\] are not conditions of the saved model"):
        task.main(["--predict", str(labels), "--saved", str(out), "--out", str(tmp_path / "new")])


def test_pretrain_on_own_text_files(tmp_path):
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    task = importlib.import_module("pretrain")
    with open(DATA / "zh-plain-corpus" / "zh_corpus.txt", encoding="utf-8") as f:
        docs = [line for _, line in zip(range(40), f) if line.strip()][:36]
    (tmp_path / "mine.txt").write_text("".join(docs[:30]), encoding="utf-8")
    (tmp_path / "held.txt").write_text("".join(docs[30:]), encoding="utf-8")
    summary = task.main(["--train", str(tmp_path / "mine.txt"), "--dev", str(tmp_path / "held.txt"), "--steps", "2",
                         "--log-every", "2", "--layers", "1", "--hidden-size", "32", "--heads", "2", "--maxlen", "32",
                         "--batch-size", "8", "--eval-batches", "1", "--run-eagerly", "--out", str(tmp_path / "run")])
    assert (summary["train_documents"], summary["heldout_documents"]) == (30, 6)
    assert summary["train_examples"] == len(task.examples_of([d.strip() for d in docs[:30]], "mlm", 32))
    assert task.parse_args(["--train", "x/mine.txt"]).out is None
    args = task.parse_args(["--train", "x/mine.txt", "--layers", "2"])
    import common

    assert common.default_out(args, "mlm-L2-H256") == common.REPO / "runs" / "pretrain-mine-mlm-L2-H256"


def test_per_part_backups_are_dropped_with_other_settings(tmp_path, capsys):
    """ner.py keeps one backup per head (out/<head>/backup): other settings drop them all, the same keep them."""
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    import common

    ner = importlib.import_module("ner")
    common.check_resume(tmp_path, ner.parse_args(["--tiny", "--heads", "crf"]))
    for head in ("crf", "gp"):
        (tmp_path / head / "backup").mkdir(parents=True)
        (tmp_path / head / "backup" / "latest.weights.h5").write_bytes(b"weights")
    common.check_resume(tmp_path, ner.parse_args(["--tiny", "--heads", "crf"]))
    assert "resuming" in capsys.readouterr().out and (tmp_path / "gp" / "backup").exists()
    common.check_resume(tmp_path, ner.parse_args(["--tiny", "--heads", "crf", "--maxlen", "64"]))
    assert "maxlen: 128 → 64" in capsys.readouterr().out
    assert not (tmp_path / "crf" / "backup").exists() and not (tmp_path / "gp" / "backup").exists()
