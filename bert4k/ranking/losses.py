"""Listwise ranking losses in `keras.ops`, one value per list.

`y_true` `[batch, n]`: graded labels, padded documents `-1` (`data.PAD_LABEL`); `y_pred` `[batch, n]`: scores.
Gains are 2^label − 1. Lists with no relevant document give 0.
"""
from __future__ import annotations

import keras
from keras import ops

NEG = -1e4


def _prepare(y_true, y_pred):
    """valid `[b, n]` (float 0/1), gains `[b, n]` (0 on padding), scores `[b, n]` (float32)."""
    y_true = ops.cast(y_true, "float32")
    valid = ops.cast(y_true >= 0, "float32")
    gains = (ops.power(2.0, ops.maximum(y_true, 0.0)) - 1.0) * valid
    return valid, gains, ops.cast(y_pred, "float32")


def _ideal_dcg(gains):
    """DCG of the gains sorted in decreasing order, `[b]`."""
    ordered = ops.flip(ops.sort(gains, axis=-1), axis=-1)
    discounts = 1.0 / ops.log2(ops.arange(2, ops.shape(gains)[-1] + 2, dtype="float32"))
    return ops.sum(ordered * discounts, axis=-1)


@keras.saving.register_keras_serializable("bert4k")
def softmax_loss(y_true, y_pred):
    """Softmax cross-entropy (ListNet top-one): −Σ_i p_i log softmax(s)_i with p ∝ gains over the list."""
    valid, gains, scores = _prepare(y_true, y_pred)
    total = ops.sum(gains, axis=-1, keepdims=True)
    target = gains / ops.maximum(total, 1e-9)
    log_probs = ops.log_softmax(ops.where(valid > 0, scores, NEG), axis=-1)
    return -ops.sum(target * log_probs * valid, axis=-1)


def _pair_valid(valid):
    return valid[:, :, None] * valid[:, None, :]


@keras.saving.register_keras_serializable("bert4k")
def approx_ndcg_loss(y_true, y_pred, temperature: float = 0.1):
    """ApproxNDCG (Qin et al. 2010): −NDCG with each rank replaced by 1 + Σ_{j≠i} sigmoid((s_j − s_i) / T)."""
    valid, gains, scores = _prepare(y_true, y_pred)
    others = _pair_valid(valid) * (1.0 - ops.eye(ops.shape(scores)[-1], dtype="float32"))
    beats = ops.sigmoid((scores[:, None, :] - scores[:, :, None]) / temperature)  # [b, i, j]: j above i
    ranks = 1.0 + ops.sum(beats * others, axis=-1)
    dcg = ops.sum(gains / ops.log2(1.0 + ranks), axis=-1)
    ideal = _ideal_dcg(gains)
    return -ops.where(ideal > 0, dcg / ops.maximum(ideal, 1e-9), 0.0)


@keras.saving.register_keras_serializable("bert4k")
def lambda_loss(y_true, y_pred):
    """LambdaRank-style pairwise loss: Σ_{y_i > y_j} |ΔNDCG_ij| · log(1 + exp(−(s_i − s_j))).

    |ΔNDCG_ij| is the NDCG change of swapping i and j in the current ranking (no gradient through it)."""
    valid, gains, scores = _prepare(y_true, y_pred)
    masked = ops.stop_gradient(ops.where(valid > 0, scores, NEG))
    ranks = ops.cast(ops.argsort(ops.argsort(-masked, axis=-1), axis=-1), "float32") + 1.0
    discounts = 1.0 / ops.log2(1.0 + ranks)
    ideal = _ideal_dcg(gains)
    delta = (ops.abs(gains[:, :, None] - gains[:, None, :]) * ops.abs(discounts[:, :, None] - discounts[:, None, :])
             / ops.maximum(ideal, 1e-9)[:, None, None])
    y = ops.cast(y_true, "float32")
    better = ops.cast(y[:, :, None] > y[:, None, :], "float32") * _pair_valid(valid)
    pair_loss = ops.softplus(-(scores[:, :, None] - scores[:, None, :]))
    return ops.sum(better * delta * pair_loss, axis=(1, 2))
