"""Evaluation metrics for Chinese NLP tasks.

- CMRC 2018 EM/F1 with the rules of the official evaluation script (v5).
- Accuracy.
- ROUGE-L and BLEU over characters, the usual choice for Chinese titles and summaries.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "accuracy",
    "bleu",
    "cmrc2018_corpus_score",
    "cmrc2018_score",
    "corpus_bleu",
    "corpus_rouge_l",
    "rouge_l",
]

# ---------------------------------------------------------------------------
# CMRC 2018
# ---------------------------------------------------------------------------

# The official script's punctuation list, compared one character at a time. Its entry "……" is two
# characters long and so never equals a single character: a lone "…" is *not* punctuation there,
# and is not here either.
CMRC_PUNCTUATION = frozenset("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』")

# Runs of non-Chinese characters are split into words as nltk's word_tokenize (the Penn Treebank
# rules, which the official script calls) does, without nltk or its punkt data: split at
# whitespace; the symbols ;@#$%&?!()[]{}<>"—–«» are tokens of their own, so are "," not followed
# by a digit, "..." runs, a period ending the run and a closing "'"; clitics 's 'm 'd 'll 're 've
# n't are split off.
# Everything else stays attached: "3.14", "1,000", "st.", "u.s", "50％".
# Known differences: nltk rewrites double quotes as `` and '', splits an opening "'" and a few
# more contractions ("cannot"), and first splits sentences with punkt, which can split off a
# period mid-run. On the CMRC 2018 trial and DRCD dev texts, 1 run in 14,000 differs.
_SPLIT_RULES = [
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"([^.])(\.)([\])}>\"']*)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"[;@#$%&?!()\[\]{}<>\"—–«»]"), r" \g<0> "),
    (re.compile(r"(?<=[^'\s])'(?=\s|$)"), r" ' "),
    (re.compile(r",(?!\d)"), r" , "),
    (re.compile(r"(?i)(?<=\w)('s|'m|'d|'ll|'re|'ve|n't)\b"), r" \1 "),
]


def _split_run(run: str) -> list[str]:
    for pattern, replacement in _SPLIT_RULES:
        run = pattern.sub(replacement, run)
    return run.split()


def _is_cmrc_chinese(char: str) -> bool:
    # The official script's range, narrower than the full CJK block.
    return "\u4e00" <= char <= "\u9fa5"


def _cmrc_strip_punctuation(text: str) -> str:
    return "".join(c for c in str(text).lower().strip() if c not in CMRC_PUNCTUATION)


def _cmrc_segments(text: str) -> list[str]:
    """Mixed segmentation with punctuation removed: each Chinese character is a segment,
    runs of other characters are split into words."""
    segments, run = [], []
    for char in _cmrc_strip_punctuation(text):
        if _is_cmrc_chinese(char):
            segments.extend(_split_run("".join(run)))
            run = []
            segments.append(char)
        else:
            run.append(char)
    segments.extend(_split_run("".join(run)))
    return segments


def _longest_common_substring(a: Sequence, b: Sequence) -> int:
    """Length of the longest *contiguous* run shared by a and b (the official `find_lcs`)."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def cmrc2018_score(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) in [0, 1] of one prediction against its gold answers, CMRC 2018 rules.

    Text is lower-cased and stripped, and the official punctuation removed. EM: the remaining
    strings are equal. F1: over the mixed segmentation (one segment per Chinese character, words
    for Latin letters and digits), from the longest common *substring* of segments, as the official
    `find_lcs` computes (not the longest common subsequence). Both take the best answer.
    """
    if isinstance(answers, str) or not answers:
        raise ValueError(f"answers must be a non-empty list of strings, got {answers!r}")
    predicted, stripped = _cmrc_segments(prediction), _cmrc_strip_punctuation(prediction)
    em = f1 = 0.0
    for answer in answers:
        if _cmrc_strip_punctuation(answer) == stripped:
            em = 1.0
        gold = _cmrc_segments(answer)
        common = _longest_common_substring(gold, predicted)
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            f1 = max(f1, 2 * precision * recall / (precision + recall))
    return em, f1


def cmrc2018_corpus_score(
    predictions: Mapping[str, str], dataset: Mapping | str | os.PathLike
) -> dict[str, float]:
    """Corpus EM/F1 in percent over a CMRC 2018 (SQuAD-style) dataset, as the official script.

    `dataset` is the parsed json or a path to it; `predictions` maps question id to answer text.
    Questions without a prediction count as 0 and are reported in `skipped`.
    Returns {"em", "f1", "total", "skipped"}.
    """
    if isinstance(dataset, (str, os.PathLike)):
        with open(dataset, encoding="utf-8") as f:
            dataset = json.load(f)
    if "data" not in dataset:
        raise ValueError("dataset must be a CMRC/SQuAD-style json with a 'data' list")
    em = f1 = 0.0
    total = skipped = 0
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                qid = qa["id"].strip()
                if qid not in predictions:
                    skipped += 1
                    continue
                q_em, q_f1 = cmrc2018_score(predictions[qid], [a["text"] for a in qa["answers"]])
                em, f1 = em + q_em, f1 + q_f1
    if total == 0:
        raise ValueError("dataset holds no questions")
    return {"em": 100 * em / total, "f1": 100 * f1 / total, "total": total, "skipped": skipped}


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------


def accuracy(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """Fraction of positions where `y_pred` equals `y_true` (same shapes)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true shape {y_true.shape} != y_pred shape {y_pred.shape}")
    if y_true.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean(y_true == y_pred))


# ---------------------------------------------------------------------------
# ROUGE-L and BLEU over characters
# ---------------------------------------------------------------------------

Text = str | Sequence[str]


def _tokens(text: Text) -> list[str]:
    """A string becomes its characters without whitespace; a list is taken as tokens already."""
    if isinstance(text, str):
        return [c for c in text if not c.isspace()]
    return list(text)


def _lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidate: Text, reference: Text) -> tuple[float, float, float]:
    """ROUGE-L (F, P, R) from the longest common subsequence, F with beta = 1.

    Strings are compared character by character, whitespace ignored; pass token lists to compare
    words instead. P = LCS / len(candidate), R = LCS / len(reference); empty input scores 0.
    """
    cand, ref = _tokens(candidate), _tokens(reference)
    common = _lcs_length(cand, ref)
    if common == 0:
        return 0.0, 0.0, 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall), precision, recall


def corpus_rouge_l(
    candidates: Sequence[Text], references: Sequence[Text]
) -> tuple[float, float, float]:
    """Mean ROUGE-L (F, P, R) over aligned candidate/reference pairs."""
    if len(candidates) != len(references) or not candidates:
        raise ValueError(
            f"need equally many candidates and references, got {len(candidates)} and {len(references)}"
        )
    scores = np.array([rouge_l(c, r) for c, r in zip(candidates, references)])
    f, p, r = scores.mean(axis=0)
    return float(f), float(p), float(r)


# Smoothing: method 1 of Chen & Cherry (2014), "A Systematic Comparison of Smoothing Techniques
# for Sentence-Level BLEU": an n-gram order with no match gets precision epsilon / count with
# epsilon = 0.1 (count = number of candidate n-grams, at least 1). This is nltk's
# SmoothingFunction().method1, the one bert4keras' CSL title example reports.
_BLEU_EPSILON = 0.1


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _bleu_statistics(candidate: Text, references: Sequence[Text], max_n: int):
    """Clipped n-gram matches and counts per order, candidate length, closest reference length."""
    cand = _tokens(candidate)
    refs = [_tokens(r) for r in references]
    if not refs:
        raise ValueError("each candidate needs at least one reference")
    matches, counts = [], []
    for n in range(1, max_n + 1):
        cand_ngrams = _ngrams(cand, n)
        max_ref = Counter()
        for ref in refs:
            max_ref |= _ngrams(ref, n)
        matches.append(sum(min(c, max_ref[g]) for g, c in cand_ngrams.items()))
        counts.append(max(1, sum(cand_ngrams.values())))
    closest = min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
    return np.array(matches), np.array(counts), len(cand), closest


def _bleu_from_statistics(matches, counts, cand_len, ref_len, smooth: bool) -> float:
    if cand_len == 0 or matches[0] == 0:
        return 0.0
    if not smooth and (matches == 0).any():
        return 0.0
    precisions = np.where(matches > 0, matches, _BLEU_EPSILON) / counts
    brevity = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    return float(brevity * math.exp(np.mean(np.log(precisions))))


def _check_max_n(max_n: int) -> None:
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")


def bleu(
    candidate: Text, references: Sequence[Text], max_n: int = 4, smooth: bool = True
) -> float:
    """Sentence BLEU with uniform weights over 1..max_n-grams, characters as tokens by default.

    `references` is a list of references. Clipped n-gram precision, brevity penalty against the
    reference closest in length (the shorter on ties). With `smooth`, orders without any match use
    Chen & Cherry's method 1 (epsilon 0.1); without it such a score is 0. No unigram match gives 0.
    """
    _check_max_n(max_n)
    if isinstance(references, str):
        raise TypeError("references must be a list of references, not one string")
    return _bleu_from_statistics(*_bleu_statistics(candidate, references, max_n), smooth)


def corpus_bleu(
    candidates: Sequence[Text],
    references: Sequence[Sequence[Text]],
    max_n: int = 4,
    smooth: bool = True,
) -> float:
    """Corpus BLEU: n-gram matches, counts and lengths summed over all pairs before combining.

    `references[i]` is the list of references for `candidates[i]`; smoothing as in `bleu`.
    """
    _check_max_n(max_n)
    if len(candidates) != len(references) or not candidates:
        raise ValueError(
            f"need equally many candidates and reference lists, got {len(candidates)} and {len(references)}"
        )
    matches, counts, cand_len, ref_len = np.zeros(max_n, int), np.zeros(max_n, int), 0, 0
    for candidate, refs in zip(candidates, references):
        if isinstance(refs, str):
            raise TypeError("each entry of references must be a list of references")
        m, c, lc, lr = _bleu_statistics(candidate, refs, max_n)
        matches, counts, cand_len, ref_len = matches + m, counts + c, cand_len + lc, ref_len + lr
    return _bleu_from_statistics(matches, counts, cand_len, ref_len, smooth)
