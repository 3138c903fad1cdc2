"""Metrics: hand-derived cases (derivations inline), the real CMRC 2018 trial set, and where
independent references (nltk BLEU, Google's rouge-score)."""
import importlib
import json
import math
import random
import re

import pytest

from bert4k.metrics import (
    accuracy,
    bleu,
    cmrc2018_corpus_score,
    cmrc2018_score,
    corpus_bleu,
    corpus_rouge_l,
    rouge_l,
)

# ---------------------------------------------------------------------------- CMRC 2018


@pytest.mark.parametrize(
    ("prediction", "answers", "em", "f1"),
    [
        # segments 北 京 大 学 vs 北 京: common run 2, P = 2/4, R = 2/2, F1 = 2PR/(P+R) = 2/3.
        ("北京大学", ["北京"], 0, 2 / 3),
        # 《》 are official punctuation: removed for both EM and F1.
        ("《红楼梦》", ["红楼梦"], 1, 1),
        # lower-cased; "iphone" and "6s" are one segment each: [iphone, 6s, 发, 布] vs
        # [iphone, 6s] -> 2/3. EM compares "iphone 6s发布" with "iphone 6s".
        ("iPhone 6s发布", ["iphone 6s"], 0, 2 / 3),
        # The official find_lcs is a longest common *substring*: 甲乙丙丁 vs 甲丙 share runs
        # of length 1 only (a subsequence would give 2). P = 1/4, R = 1/2 -> F1 = 1/3.
        ("甲乙丙丁", ["甲丙"], 0, 1 / 3),
        # Punctuation is deleted before segmentation, so "ab-cd" becomes the single word "abcd".
        ("ab-cd", ["abcd"], 1, 1),
        # Best of several answers.
        ("北京市", ["上海", "北京市"], 1, 1),
        ("", ["北京"], 0, 0),
        # "…" is not in the official list (its entry "……" is two characters): [好, …] vs [好].
        ("好…", ["好"], 0, 2 / 3),
        # "%" is split off like nltk does, "3.5" stays one token: [3.5, %] vs [3.5] -> 2/3.
        ("3.5%", ["3.5"], 0, 2 / 3),
        # Outer whitespace is stripped for both; inner whitespace only separates segments.
        (" 北京 ", ["北京"], 1, 1),
        ("北 京", ["北京"], 0, 1),
    ],
)
def test_cmrc2018_score_hand_cases(prediction, answers, em, f1):
    got_em, got_f1 = cmrc2018_score(prediction, answers)
    assert got_em == em
    assert got_f1 == pytest.approx(f1)


def test_cmrc2018_score_rejects_bare_string_answers():
    with pytest.raises(ValueError, match="answers"):
        cmrc2018_score("北京", "北京")


def test_cmrc2018_corpus_score_hand_case():
    dataset = {
        "data": [
            {
                "paragraphs": [
                    {
                        "qas": [
                            {"id": "q1 ", "answers": [{"text": "北京"}]},
                            {"id": "q2", "answers": [{"text": "北京"}]},
                            {"id": "q3", "answers": [{"text": "上海"}]},
                        ]
                    }
                ]
            }
        ]
    }
    # q1 (id stripped) exact: em 1, f1 1; q2 "北京大学": em 0, f1 2/3; q3 missing: counts as 0.
    got = cmrc2018_corpus_score({"q1": "北京", "q2": "北京大学"}, dataset)
    assert got["total"] == 3
    assert got["skipped"] == 1
    assert got["em"] == pytest.approx(100 / 3)
    assert got["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_cmrc2018_corpus_score_on_real_trial_set(data_dir):
    path = data_dir / "cmrc2018" / "cmrc2018_trial.json"
    dataset = json.loads(path.read_text(encoding="utf-8"))
    gold = {
        qa["id"]: qa["answers"][0]["text"]
        for article in dataset["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    }
    assert cmrc2018_corpus_score(gold, path) == {
        "em": 100.0, "f1": 100.0, "total": 1002, "skipped": 0,
    }
    # Official punctuation around an answer does not matter (inner spaces would: 3 answers
    # start or end with one, so strip it first).
    quoted = {qid: f"《{text.strip()}》。" for qid, text in gold.items()}
    assert cmrc2018_corpus_score(quoted, dataset)["em"] == 100.0
    half = dict(list(gold.items())[:501])
    assert cmrc2018_corpus_score(half, dataset) == {
        "em": 50.0, "f1": 50.0, "total": 1002, "skipped": 501,
    }


def test_latin_runs_split_like_nltk_on_real_text(data_dir):
    """The dependency-free splitter agrees with nltk's Treebank tokenizer (what the official
    script's word_tokenize applies) on every non-Chinese run of the CMRC trial set and the DRCD
    dev answers, once nltk's `` '' are read as plain double quotes."""
    tokenize = importlib.import_module("nltk.tokenize").NLTKWordTokenizer().tokenize
    from bert4k.metrics import CMRC_PUNCTUATION, _split_run

    def runs(text):
        text = "".join(c for c in text.lower().strip() if c not in CMRC_PUNCTUATION)
        return [r for r in re.split(r"[\u4e00-\u9fa5]", text) if r.strip()]

    texts = []
    trial = json.loads((data_dir / "cmrc2018" / "cmrc2018_trial.json").read_text(encoding="utf-8"))
    drcd = json.loads((data_dir / "drcd" / "DRCD_dev.json").read_text(encoding="utf-8"))
    for dataset, with_context in ((trial, True), (drcd, False)):
        for article in dataset["data"]:
            for paragraph in article["paragraphs"]:
                texts += [paragraph["context"]] if with_context else []
                texts += [a["text"] for qa in paragraph["qas"] for a in qa["answers"]]
    checked = 0
    for run in (r for t in texts for r in runs(t)):
        expected = ['"' if t in ("``", "''") else t for t in tokenize(run)]
        assert _split_run(run) == expected, run
        checked += 1
    assert checked > 6000


# ---------------------------------------------------------------------------- accuracy


def test_accuracy():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy(["a", "b"], ["a", "b"]) == 1.0
    with pytest.raises(ValueError, match="shape"):
        accuracy([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


# ---------------------------------------------------------------------------- ROUGE-L


@pytest.mark.parametrize(
    ("candidate", "reference", "f", "p", "r"),
    [
        # LCS 我·北·京 = 3 of 4 and 4 characters: P = R = F = 3/4.
        ("我爱北京", "我在北京", 0.75, 0.75, 0.75),
        # LCS of abc / acbd is "ab" (or "ac") = 2: P = 2/3, R = 2/4, F = 2PR/(P+R) = 4/7.
        ("abc", "acbd", 4 / 7, 2 / 3, 0.5),
        # Whitespace is not a character to match.
        ("我 爱", "我爱", 1.0, 1.0, 1.0),
        # Token lists are compared as given: LCS [北京, 你] = 2, P = 2/3, R = 1, F = 0.8.
        (["北京", "欢迎", "你"], ["北京", "你"], 0.8, 2 / 3, 1.0),
        ("", "北京", 0.0, 0.0, 0.0),
        ("上海", "北京", 0.0, 0.0, 0.0),
    ],
)
def test_rouge_l_hand_cases(candidate, reference, f, p, r):
    assert rouge_l(candidate, reference) == pytest.approx((f, p, r))


def test_corpus_rouge_l_is_the_mean_over_pairs():
    # (3/4, 3/4, 3/4) and (1, 1, 1) average to 7/8 each.
    assert corpus_rouge_l(["我爱北京", "好"], ["我在北京", "好"]) == pytest.approx((7 / 8,) * 3)
    with pytest.raises(ValueError, match="equally many"):
        corpus_rouge_l(["a"], ["a", "b"])


def _random_texts(seed, n, alphabet="天地人你我他的是不了"):
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 25))) for _ in range(n)]


def test_rouge_l_matches_google_rouge_score():
    rouge_scorer = importlib.import_module("rouge_score.rouge_scorer")

    class Characters:
        def tokenize(self, text):
            return list(text)

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Characters())
    for cand, ref in zip(_random_texts(0, 200), _random_texts(1, 200)):
        ref_score = scorer.score(ref, cand)["rougeL"]
        expected = (ref_score.fmeasure, ref_score.precision, ref_score.recall)
        assert rouge_l(cand, ref) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------- BLEU


def test_bleu_hand_cases():
    # Identical: every precision 1, c = r so BP = exp(0) = 1.
    assert bleu("今天天气很好", ["今天天气很好"]) == pytest.approx(1.0)
    # 天气很好 inside 今天天气很好: all n-gram precisions 1 (4/4, 3/3, 2/2, 1/1);
    # c = 4 < r = 6 so BP = exp(1 - 6/4) = exp(-0.5).
    assert bleu("天气很好", ["今天天气很好"]) == pytest.approx(math.exp(-0.5))
    # 天好 vs 天气好: p1 = 2/2; no matching bigram (0/1) and no 3-, 4-grams (0/max(1, 0)):
    # each smoothed to 0.1. BP = exp(1 - 3/2). BLEU = exp(-0.5) * (1 * 0.1^3)^(1/4).
    assert bleu("天好", ["天气好"]) == pytest.approx(math.exp(-0.5) * 0.1**0.75)
    assert bleu("天好", ["天气好"], smooth=False) == 0.0
    # Clipping: 的 occurs once in the reference, 4 times in the candidate -> p1 = 1/4; c > r.
    assert bleu("的的的的", ["的一个"], max_n=1) == pytest.approx(0.25)
    # Closest reference length: 3 and 5 tie for c = 4, the shorter wins, so BP = 1.
    assert bleu("abcd", ["abc", "abcde"], max_n=1) == pytest.approx(1.0)
    # No unigram match, or an empty candidate: 0.
    assert bleu("xyz", ["abc"]) == 0.0
    assert bleu("", ["abc"]) == 0.0


def test_corpus_bleu_sums_statistics_before_combining():
    # ab|ab: unigrams 2/2, bigrams 1/1. cd|ce: unigrams 1/2, bigrams 0/1.
    # Corpus: p1 = 3/4, p2 = 1/2, c = r = 4 -> BLEU = sqrt(3/8), not the mean of sentence scores.
    assert corpus_bleu(["ab", "cd"], [["ab"], ["ce"]], max_n=2) == pytest.approx(math.sqrt(3 / 8))
    with pytest.raises(TypeError, match="list of references"):
        corpus_bleu(["ab"], ["ab"])
    with pytest.raises(ValueError, match="max_n"):
        bleu("ab", ["ab"], max_n=0)


def test_bleu_matches_nltk():
    nltk_bleu = importlib.import_module("nltk.translate.bleu_score")
    smooth = nltk_bleu.SmoothingFunction().method1
    candidates = _random_texts(2, 150, alphabet="天地人你我他的")
    references = [[r1, r2] for r1, r2 in zip(_random_texts(3, 150, "天地人你我他的"),
                                             _random_texts(4, 150, "天地人你我他的"))]
    for max_n in (2, 4):
        weights = (1 / max_n,) * max_n
        for cand, refs in zip(candidates, references):
            expected = nltk_bleu.sentence_bleu(
                [list(r) for r in refs], list(cand), weights, smoothing_function=smooth
            )
            assert bleu(cand, refs, max_n=max_n) == pytest.approx(expected, abs=1e-12)
        expected = nltk_bleu.corpus_bleu(
            [[list(r) for r in refs] for refs in references],
            [list(c) for c in candidates],
            weights,
            smoothing_function=smooth,
        )
        assert corpus_bleu(candidates, references, max_n=max_n) == pytest.approx(expected, abs=1e-12)
