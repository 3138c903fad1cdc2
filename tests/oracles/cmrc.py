"""An independent CMRC 2018 EM/F1, written after the structure of the official evaluation script (cmrc2018_evaluate.py:
mixed segmentation with nltk's word tokenizer, punctuation removal, `find_lcs` over a full DP table), to check the
scores the task scripts report from their written predictions."""
from __future__ import annotations

import re

from nltk.tokenize import NLTKWordTokenizer

# the official sp_char list; "……" is one entry, two characters long, so it never matches one character
SP_CHAR = ["-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！", "“", "”", "；", "’", "《",
           "》", "……", "·", "、", "「", "」", "（", "）", "－", "～", "『", "』"]
_nltk_words = NLTKWordTokenizer().tokenize  # nltk.word_tokenize without punkt's sentence split (no data files)


def mixed_segmentation(text: str, rm_punc: bool = False) -> list[str]:
    text = str(text).lower().strip()
    segments, pending = [], ""
    for char in text:
        if rm_punc and char in SP_CHAR:
            continue
        if re.search(r"[\u4e00-\u9fa5]", char) or char in SP_CHAR:
            if pending:
                segments.extend(_nltk_words(pending))
                pending = ""
            segments.append(char)
        else:
            pending += char
    if pending:
        segments.extend(_nltk_words(pending))
    return segments


def remove_punctuation(text: str) -> str:
    return "".join(c for c in str(text).lower().strip() if c not in SP_CHAR)


def find_lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            if a[i] == b[j]:
                table[i + 1][j + 1] = table[i][j] + 1
                best = max(best, table[i + 1][j + 1])
    return best


def f1_score(answers: list[str], prediction: str) -> float:
    scores = []
    for answer in answers:
        gold, predicted = mixed_segmentation(answer, rm_punc=True), mixed_segmentation(prediction, rm_punc=True)
        common = find_lcs(gold, predicted)
        if common == 0:
            scores.append(0.0)
            continue
        precision, recall = common / len(predicted), common / len(gold)
        scores.append(2 * precision * recall / (precision + recall))
    return max(scores)


def em_score(answers: list[str], prediction: str) -> float:
    return float(any(remove_punctuation(a) == remove_punctuation(prediction) for a in answers))


def corpus_scores(predictions: dict[str, str], gold: dict[str, list[str]]) -> tuple[float, float]:
    """`(EM, F1)` in percent over the questions of `gold` (question id → answer texts); a missing prediction is 0."""
    em = sum(em_score(gold[q], predictions[q]) for q in gold if q in predictions)
    f1 = sum(f1_score(gold[q], predictions[q]) for q in gold if q in predictions)
    return 100 * em / len(gold), 100 * f1 / len(gold)
