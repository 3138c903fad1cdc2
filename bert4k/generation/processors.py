"""Next-token score processing on numpy logits `[rows, vocab]`: penalties, warping, sampling (HF's order:
repetition penalty and min length first, then temperature → top-k → top-p)."""
from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - np.max(x, axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        return x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def seen_matrix(context: list | None, rows: int, vocab: int) -> np.ndarray:
    """`[rows, vocab]` bool: which ids each row has already seen (its context ids)."""
    seen = np.zeros((rows, vocab), bool)
    for row, ids in enumerate(context or []):
        ids = np.asarray(ids, dtype=np.int64)
        seen[row, ids[(ids >= 0) & (ids < vocab)]] = True
    return seen


def penalize(logits: np.ndarray, step: int, seen: np.ndarray | None, repetition_penalty: float,
             stop_ids: np.ndarray, min_new_tokens: int) -> np.ndarray:
    """CTRL repetition penalty (seen ids: positive logits ÷ p, negative × p) and no stop id before `min_new_tokens`."""
    scores = np.array(logits, dtype=np.float32, copy=True)
    if seen is not None and repetition_penalty != 1.0:
        penalized = np.where(scores > 0, scores / repetition_penalty, scores * repetition_penalty)
        scores = np.where(seen, penalized, scores)
    if step < min_new_tokens and stop_ids.size:
        scores[:, stop_ids] = -np.inf
    return scores


def warp(scores: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
         top_p: float | None = None) -> np.ndarray:
    """Temperature, then keep the `top_k` best (ties kept), then the smallest best set with mass ≥ `top_p`."""
    if temperature <= 0:
        raise ValueError(f"generate: temperature must be > 0, got {temperature}")
    scores = scores / temperature
    if top_k is not None and 0 < top_k < scores.shape[-1]:
        kth = -np.partition(-scores, top_k - 1, axis=-1)[:, top_k - 1:top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-scores, axis=-1, kind="stable")
        probs = np.take_along_axis(softmax(scores), order, axis=-1)
        before = np.cumsum(probs, axis=-1) - probs  # mass of the better tokens
        drop = before >= top_p
        drop[:, 0] = False
        removed = np.zeros_like(drop)
        np.put_along_axis(removed, order, drop, axis=-1)
        scores = np.where(removed, -np.inf, scores)
    return scores


def sample(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One id per row drawn from softmax(scores) by inverse CDF (one uniform per row)."""
    probs = softmax(scores.astype(np.float64))
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(len(scores))[:, None] * cdf[:, -1:]
    return np.minimum(np.sum(cdf <= u, axis=-1), scores.shape[-1] - 1)
