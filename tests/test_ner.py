"""bert4k.tagging (IOB2 ↔ spans, tag set, windows, entity P/R/F1) against hand-checked cases and a brute count,
the bad-input rules of tasks/ner.py, and the NER script end to end on a small slice of MSRA NER."""
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bert4k import tagging
from tests.conftest import DATA

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def ner_module():
    if str(TASKS) not in sys.path:
        sys.path.insert(0, str(TASKS))
    return importlib.import_module("ner")


def test_tags_to_spans_and_back():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O", "B-ORG"]
    spans = tagging.tags_to_spans(tags)
    assert spans == [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5), ("ORG", 7, 7)]
    assert tagging.spans_to_tags(spans, len(tags)) == tags
    assert tagging.tags_to_spans([]) == [] and tagging.spans_to_tags([], 0) == []


def test_stray_inside_tags_follow_conlleval():
    # I-X after O, or after an entity of another type, starts a new entity
    assert tagging.tags_to_spans(["I-PER", "I-PER", "I-LOC", "O", "I-ORG"]) == [
        ("PER", 0, 1), ("LOC", 2, 2), ("ORG", 4, 4)]


def test_malformed_tags_raise():
    for bad in ("PER", "B-", "X-PER", "b-PER"):
        with pytest.raises(ValueError, match="not IOB2"):
            tagging.tags_to_spans(["O", bad])


def test_overlapping_and_out_of_range_spans_raise():
    with pytest.raises(ValueError, match=r"\('LOC', 0, 3\) and \('PER', 2, 4\) overlap"):
        tagging.spans_to_tags([("PER", 2, 4), ("LOC", 0, 3)], 6)
    with pytest.raises(ValueError, match="overlap"):
        tagging.spans_to_tags([("ORG", 0, 5), ("LOC", 1, 2)], 6)  # nested
    with pytest.raises(ValueError, match="outside positions 0..5"):
        tagging.spans_to_tags([("ORG", 4, 6)], 6)


def test_tag_set_rejects_labels_outside_it():
    tags = tagging.TagSet(["LOC", "PER"])
    assert tags.tags == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert tags.decode(tags.encode(["B-PER", "I-PER", "O"])) == ["B-PER", "I-PER", "O"]
    with pytest.raises(ValueError, match=r"f.txt:3: tag 'B-ORG' \(position 1\) is outside the tag set"):
        tags.encode(["O", "B-ORG"], where="f.txt:3")
    with pytest.raises(ValueError, match="distinct"):
        tagging.TagSet(["LOC", "LOC"])


def test_windows_cover_the_text_and_clip_spans():
    assert tagging.windows(0, 4) == [(0, 0)]
    assert tagging.windows(10, 4) == [(0, 4), (4, 8), (8, 10)]
    spans = [("PER", 2, 5), ("LOC", 8, 9)]
    assert tagging.clip_spans(spans, 4, 8) == [("PER", 0, 1)]
    assert tagging.clip_spans(spans, 0, 4) == [("PER", 2, 3)]
    with pytest.raises(ValueError):
        tagging.windows(3, 0)


def test_entity_scores_against_a_direct_count():
    rng = np.random.default_rng(0)
    gold, pred = [], []
    for _ in range(50):
        g = {(str(rng.choice(["A", "B"])), int(s), int(s) + int(rng.integers(0, 3))) for s in rng.integers(0, 20, 3)}
        p = {e for e in g if rng.random() < 0.6} | {("A", int(rng.integers(0, 20)), 25)}
        gold.append(g)
        pred.append(p)
    tp = sum(len(g & p) for g, p in zip(gold, pred))
    n_gold, n_pred = sum(map(len, gold)), sum(map(len, pred))
    scores = tagging.entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(tp / n_pred) and scores["recall"] == pytest.approx(tp / n_gold)
    assert scores["f1"] == pytest.approx(2 * tp / (n_gold + n_pred))
    tp_b = sum(len({e for e in g & p if e[0] == "B"}) for g, p in zip(gold, pred))
    assert scores["per_type"]["B"]["correct"] == tp_b
    # a wrong type or a shifted boundary is not a match
    assert tagging.entity_scores([[("A", 0, 1)]], [[("B", 0, 1), ("A", 0, 2)]])["f1"] == 0.0
    assert tagging.entity_scores([[]], [[]])["f1"] == 0.0


def test_log_prior_against_a_direct_count():
    rows = [[0, 0, 1, 0], [2, 0], []]
    counts = np.bincount(np.concatenate([np.array(r, dtype=int) for r in rows]), minlength=4) + 1
    np.testing.assert_allclose(tagging.log_prior(rows, 4), np.log(counts / counts.sum()), rtol=1e-12)
    with pytest.raises(ValueError, match=r"label id 4 is outside 0..3"):
        tagging.log_prior([[0, 4]], 4)


def valid_tags(tags, scheme: str) -> bool:
    """The scheme's rules, stated directly: I-X (and E-X) only right after B-X or I-X; with BIOES, B-X and I-X only
    right before I-X or E-X (so never last)."""
    for i, t in enumerate(tags):
        before = tags[i - 1] if i else "O"
        after = tags[i + 1] if i + 1 < len(tags) else "O"
        if t[:2] in ("I-", "E-") and not (before[:2] in ("B-", "I-") and before[2:] == t[2:]):
            return False
        if scheme == "BIOES" and t[:2] in ("B-", "I-") and not (after[:2] in ("I-", "E-") and after[2:] == t[2:]):
            return False
    return True


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
@pytest.mark.parametrize("with_transitions", [False, True])
def test_constrained_decoding_is_the_best_valid_sequence_by_enumeration(scheme, with_transitions):
    import itertools

    tagset = tagging.TagSet(["LOC", "PER"], scheme)
    rng = np.random.default_rng(1)
    trans = rng.normal(size=(len(tagset), len(tagset))) if with_transitions else np.zeros((len(tagset),) * 2)
    decoder = tagging.constrained_decoder(tagset, trans if with_transitions else None)
    candidates = [c for c in itertools.product(range(len(tagset)), repeat=4) if valid_tags(tagset.decode(c), scheme)]
    for _ in range(10):
        logp = np.log(rng.dirichlet(np.ones(len(tagset)), size=4))
        best = max(candidates, key=lambda c: logp[np.arange(4), c].sum() + sum(trans[a, b] for a, b in itertools.pairwise(c)))
        assert decoder.decode(logp).tolist() == list(best)


def test_bioes_tags_round_trip_and_lenient_reading():
    tagset = tagging.TagSet(["LOC", "PER"], "BIOES")
    assert tagset.tags == ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-PER", "I-PER", "E-PER", "S-PER"]
    spans = [("PER", 0, 2), ("LOC", 3, 3), ("LOC", 4, 5), ("PER", 7, 7)]
    tags = tagset.tags_of(spans, 8)
    assert tags == ["B-PER", "I-PER", "E-PER", "S-LOC", "B-LOC", "E-LOC", "O", "S-PER"]
    assert tagset.spans_of(tags) == spans and valid_tags(tags, "BIOES")
    rng = np.random.default_rng(2)
    for _ in range(30):  # random non-overlapping entities survive the round trip, and their tags are valid
        cuts = sorted(rng.choice(np.arange(1, 20), size=6, replace=False).tolist())
        spans = [(str(rng.choice(["LOC", "PER"])), a, b - 1) for a, b in zip(cuts[::2], cuts[1::2])]
        assert tagset.spans_of(tagset.tags_of(spans, 20)) == spans and valid_tags(tagset.tags_of(spans, 20), "BIOES")
    # a path that breaks the rules (B without E, a stray E) is read as IOB2 with S = B and E = I
    assert tagset.spans_of(["B-LOC", "I-LOC", "O", "E-PER", "S-PER"]) == [("LOC", 0, 1), ("PER", 3, 3), ("PER", 4, 4)]
    with pytest.raises(ValueError, match="one of"):
        tagging.TagSet(["LOC"], "IOBES")


def overfit(tmp_path, head: str, *settings: str) -> dict:
    """Train a tiny model on 16 sentences (no dropout; `settings`: more arguments of tasks/ner.py, default 30
    epochs = 60 steps at lr 3e-3) and score it on those same sentences."""
    import keras

    ner = ner_module()
    common = importlib.import_module("common")  # tasks/common.py, on the path once ner is imported
    args = ner.parse_args(["--tiny", "--epochs", "30", "--batch-size", "8", "--lr", "3e-3", "--warmup", "0",
                           "--dropout", "0", "--limit", "16", "--out", str(tmp_path), "--no-resume",
                           "--data-dir", str(DATA), *settings])
    common.setup(args)
    sentences = ner.split(args)[0][:16]
    tagset = tagging.TagSet(["LOC", "ORG", "PER"])
    source = common.model_source(args)
    pieces = ner.featurize(sentences, source.tokenizer(), 64)
    keras.backend.clear_session()
    return ner.run_head(head, source, args, tmp_path, tagset, pieces, sentences, pieces, sentences, pieces)


# Before the heads started from the log tag prior, the softmax head collapsed here: every token's vector became
# alike (the encoder learnt the all-`O` prior faster than the zero-initialised bias), loss flat at ≈ 0.29, F1 0.
# (30 epochs: 1-5 min on the loaded 2-core machine, hence slow; the check below guards the fix in the default run)
@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")
@pytest.mark.parametrize("head", ["softmax", "crf", "gp"])
def test_a_tiny_model_overfits_a_handful_of_sentences(tmp_path, head):
    result = overfit(tmp_path, head)
    assert result["gold"] > 10 and result["f1"] == 1.0, result


# GlobalPointer scored 0.0 F1 after 150 steps of the MSRA run: its projections learn from a random start, a
# bilinear form, which is slow at the encoder's learning rate (here, with the head's at that rate too, F1 stayed
# 0.0 for 20 steps, 0.6 after 40, 0.92 after 60). The head now learns `--head-lr-multiplier` times faster.
@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")
@pytest.mark.parametrize("head", ["gp", "egp"])
def test_global_pointer_fits_a_handful_of_sentences_in_few_steps(tmp_path, head):
    result = overfit(tmp_path, head, "--epochs", "20", "--lr", "8e-4", "--warmup", "0.1")
    assert result["gold"] > 10 and result["f1"] == 1.0, result


@pytest.mark.parametrize("head, layer", [("softmax", "Token-Classifier-Dense"), ("crf", "Emissions")])
@pytest.mark.parametrize("multiplier", [1.0, 10.0])
def test_tagging_heads_start_from_the_tag_prior(head, layer, multiplier):
    """The head's logits are `x · kernel·m + bias·m` (weights stored ÷ m), its effective bias the tag prior."""
    import keras

    ner = ner_module()
    common = importlib.import_module("common")
    args = ner.parse_args(["--tiny", "--dropout", "0", "--head-lr-multiplier", str(multiplier)])
    tagset = tagging.TagSet(["LOC", "PER"])
    prior = tagging.log_prior([[0, 0, 0, 1, 2, 0]], len(tagset))
    model = ner.build(head, common.model_source(args), args, tagset, prior)[0]
    dense = model.get_layer(layer)
    np.testing.assert_allclose(np.asarray(dense.bias) * multiplier, prior, rtol=1e-6)
    ids = np.array([[2, 100, 200, 3]], dtype="int32")
    hidden = keras.Model(model.inputs, dense.input)((ids, np.zeros_like(ids)))
    logits = np.asarray(model((ids, np.zeros_like(ids))))[0]
    want = np.asarray(hidden)[0] @ (np.asarray(dense.kernel) * multiplier) + np.asarray(prior)
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)


def test_read_iob_skips_empty_sentences_and_names_bad_lines(tmp_path):
    ner = ner_module()
    good = tmp_path / "good.txt"
    good.write_text("\n\n张\tB-PER\n三\tI-PER\n去\tO\n\n\n\n北\tB-LOC\n京\tI-LOC\n", encoding="utf-8")
    sentences = ner.read_iob(good)
    assert [(s.text, s.spans) for s in sentences] == [("张三去", [("PER", 0, 1)]), ("北京", [("LOC", 0, 1)])]
    bad = tmp_path / "bad.txt"
    bad.write_text("张\tB-PER\n\n三\tPER\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:3: tag 'PER' is not IOB2"):
        ner.read_iob(bad)
    bad.write_text("张 B-PER\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 'char<TAB>tag'"):
        ner.read_iob(bad)


def test_jsonl_reading_keeps_empty_texts_only_when_asked_and_rejects_overlaps(tmp_path):
    ner = ner_module()
    path = tmp_path / "t.jsonl"
    rows = [{"text": "张三去北京", "entities": [["LOC", 3, 4], ["PER", 0, 1, "张三"]]}, {"text": "", "entities": []},
            {"text": "好", "entities": []}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert [(s.text, s.spans) for s in ner.read_sentences(path)] == [
        ("张三去北京", [("PER", 0, 1), ("LOC", 3, 4)]), ("好", [])]
    assert [s.text for s in ner.read_sentences(path, keep_empty=True)] == ["张三去北京", "", "好"]
    for entities in ([["ORG", 0, 4], ["LOC", 3, 4]], [["PER", 0, 2], ["LOC", 2, 4]]):  # nested, overlapping
        path.write_text(json.dumps({"text": "张三去北京", "entities": entities}, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        with pytest.raises(ValueError, match=r"t.jsonl: record 1: entities .* overlap"):
            ner.read_sentences(path)


def test_unknown_test_types_raise():
    ner = ner_module()
    train = [ner.Sentence(list("张三"), [("PER", 0, 1)])]
    test = [ner.Sentence(list("联合国"), [("ORG", 0, 2)])]
    with pytest.raises(ValueError, match=r"t.txt: entity types \['ORG'\] do not occur in the training data"):
        ner.entity_types(train, test, "t.txt")


def test_long_sentences_are_windowed_with_offsets(vocab_path):
    from bert4k.tokenizers import Tokenizer

    ner = ner_module()
    tokenizer = Tokenizer(str(vocab_path), do_lower_case=True)
    s = ner.Sentence(list("我在北京大学读书也在上海工作"), [("ORG", 2, 5), ("LOC", 10, 11)])
    pieces = ner.featurize([s, ner.Sentence([], [])], tokenizer, maxlen=6)  # 4 chars per window
    first = [p for p in pieces if p.sentence == 0]
    assert [p.offset for p in first] == [0, 4, 8, 12]
    assert [len(p.token_ids) for p in first] == [6, 6, 6, 4]
    assert first[0].spans == [("ORG", 2, 3)] and first[1].spans == [("ORG", 0, 1)]
    assert first[2].spans == [("LOC", 2, 3)]
    assert tokenizer.ids_to_tokens(first[3].token_ids) == ["[CLS]", "工", "作", "[SEP]"]
    empty = [p for p in pieces if p.sentence == 1]
    assert len(empty) == 1 and len(empty[0].token_ids) == 2 and empty[0].spans == []
    tagset = tagging.TagSet(["LOC", "ORG"])
    assert ner.tag_labels(first[2], tagset) == [1, 1, 1, 2, 3, 1]  # [CLS] 也 在 上(B-LOC) 海(I-LOC) [SEP]
    targets = ner.span_targets(first[:3], ["LOC", "ORG"], 6)
    assert targets.sum() == 3 and targets[0, 1, 3, 4] == 1 and targets[2, 0, 3, 4] == 1
    with pytest.raises(ValueError, match="--maxlen must be ≥ 3"):
        ner.featurize([s], tokenizer, maxlen=2)


def run_script(tmp_path, heads: tuple[str, ...], *settings: str):
    ner = ner_module()
    out = tmp_path / "ner"
    ner.main(["--tiny", "--epochs", "1", "--batch-size", "16", "--limit", "48", "--maxlen", "24",
              "--baseline-iterations", "3", "--heads", ",".join(heads), "--out", str(out), "--data-dir", str(DATA),
              *settings])
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["train_sentences"] == m["test_sentences"] == 48 and m["train_windows"] > 48  # maxlen 24 splits
    assert set(m["results"]) == {"crfsuite", *heads} and m["types"] == ["LOC", "ORG", "PER"]
    for r in m["results"].values():
        assert 0.0 <= r["f1"] <= 1.0 and r["gold"] == m["results"]["crfsuite"]["gold"] > 0
        p, rec, f1 = r["dev_precision"], r["dev_recall"], r["dev_f1"]
        assert f1 == pytest.approx(2 * p * rec / (p + rec) if p + rec else 0.0)
        assert r["predict_sentences_per_s"] > 0 and r["peak_rss_mb"] > 0
    for head in heads:
        assert (out / head / "log.csv").read_text().startswith("epoch,dev_f1,")  # dev F1 after every epoch
        assert m["results"][head]["train_cpu_seconds"] > 0
    return out


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")
def test_ner_script_on_a_slice_with_bigrams_and_bioes(tmp_path):
    out = run_script(tmp_path, ("crf",), "--bigram-dim", "8", "--scheme", "BIOES", "--lr", "5e-3")
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 48 and all(e[3] == r["text"][e[1]:e[2] + 1] for r in rows for e in r["gold"] + r["crf"])
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["bigram_vocab"] == len(json.loads((out / "crf" / "bigrams.json").read_text(encoding="utf-8"))["ngrams"]) + 2
    # the saved model (3 inputs, its bigram vocabulary, BIOES) tags the test sentences as the run did
    # (with an empty text among them: it stays in its row, with no entities)
    test = tmp_path / "test.jsonl"
    texts = [r["text"] for r in rows[:5]] + [""] + [r["text"] for r in rows[5:]]
    test.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    ner_module().main(["--predict", str(test), "--saved", str(out), "--out", str(tmp_path / "tagged")])
    again = [json.loads(line) for line in (tmp_path / "tagged" / "predictions.jsonl").read_text().splitlines()]
    assert [r["text"] for r in again] == texts and again[5]["crf"] == []
    assert [r["crf"] for r in again[:5] + again[6:]] == [r["crf"] for r in rows]


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")
def test_ner_script_all_heads(tmp_path):
    run_script(tmp_path, ("softmax", "crf", "gp"))


def test_global_pointer_threshold_is_chosen_on_the_dev_set():
    ner = ner_module()
    tagset = tagging.TagSet(["LOC", "PER"])
    sentences = [ner.Sentence(list("张三去北京"), [("PER", 0, 1), ("LOC", 3, 4)])]
    pieces = [ner.Piece(0, 0, [2, 10, 11, 12, 13, 14, 3], sentences[0].spans)]
    logits = np.full((2, 7, 7), -9.0)
    logits[1, 1, 2] = -1.2  # 张三 PER: right, under-confident
    logits[0, 4, 5] = -0.8  # 北京 LOC: right
    logits[0, 3, 3] = -2.5  # 去 LOC: wrong, below -2
    assert ner.entities("gp", None, [logits], pieces, tagset, 1, 0.0) == [set()]
    assert ner.choose_threshold("gp", [logits], pieces, sentences, tagset, None) == -1.5
    assert ner.entities("gp", None, [logits], pieces, tagset, 1, -1.5) == [set(sentences[0].spans)]
    assert ner.choose_threshold("gp", [logits], pieces, sentences, tagset, -0.5) == -0.5
    assert ner.choose_threshold("crf", None, pieces, sentences, tagset, None) == 0.0


def test_the_bigram_table_takes_its_own_lr_multiplier():
    ner = ner_module()
    common = importlib.import_module("common")
    tagset, bigrams = tagging.TagSet(["LOC"]), tagging.BigramVocab(["北京"])
    for flags, want in (([], 10.0), (["--bigram-lr-multiplier", "100"], 100.0)):
        args = ner.parse_args(["--tiny", *flags])
        model = ner.build("crf", common.model_source(args), args, tagset, None, bigrams)[0]
        assert model.get_layer("Bigram-Embedding").lr_multiplier == want
    with pytest.raises(SystemExit):
        ner.parse_args(["--bigram-lr-multiplier", "-1"])
