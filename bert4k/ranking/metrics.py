"""Ranking metrics over one list (numpy): NDCG@k with gain 2^rel − 1 and discount 1/log2(rank + 1), and MRR.

Ties in the scores are broken by input order (a stable sort). A list whose ideal DCG is 0 (no relevant document)
scores `empty` (1.0, LightGBM's convention: every order is ideal).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _order(scores) -> np.ndarray:
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def _dcg(gains_in_order: np.ndarray, k: int) -> float:
    top = gains_in_order[:k]
    return float(np.sum(top / np.log2(np.arange(2, len(top) + 2))))


def ndcg_at_k(labels, scores, k: int, empty: float = 1.0) -> float:
    """NDCG@k of one list: DCG of the top k by `scores` over the DCG of the top k by `labels`."""
    labels = np.asarray(labels, np.float64)
    if labels.shape != np.shape(scores) or labels.ndim != 1:
        raise ValueError(f"ndcg_at_k: labels {labels.shape} and scores {np.shape(scores)} must be equal 1-D shapes")
    if k < 1:
        raise ValueError(f"ndcg_at_k: k must be ≥ 1, got {k}")
    gains = 2.0 ** labels - 1.0
    ideal = _dcg(np.sort(gains)[::-1], k)
    return empty if ideal == 0 else _dcg(gains[_order(scores)], k) / ideal


def reciprocal_rank(labels, scores, relevant: int = 1) -> float:
    """1 / rank of the first document with label ≥ `relevant` (0 when there is none)."""
    hits = np.nonzero(np.asarray(labels)[_order(scores)] >= relevant)[0]
    return 0.0 if len(hits) == 0 else 1.0 / (hits[0] + 1)


def mean_ndcg(labels: Sequence, scores: Sequence, k: int, empty: float = 1.0) -> float:
    """Mean NDCG@k over lists (`labels[i]`, `scores[i]` are one list's arrays)."""
    return float(np.mean([ndcg_at_k(y, s, k, empty) for y, s in zip(labels, scores, strict=True)]))


def mean_reciprocal_rank(labels: Sequence, scores: Sequence, relevant: int = 1) -> float:
    """MRR over lists."""
    return float(np.mean([reciprocal_rank(y, s, relevant) for y, s in zip(labels, scores, strict=True)]))
