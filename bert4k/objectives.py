"""Pretraining objectives as plain Keras losses and metrics, and the numpy label builders that feed them.

Every loss and metric takes `(y_true, y_pred)`: `y_true` is `[batch, seq]` integer labels in which **0 means
"ignore"**, `y_pred` the model's head output `[batch, seq, vocab]` (probabilities, or logits with
`from_logits=True`). The loss is the mean cross-entropy over the labelled positions of the whole batch, so
`model.fit(inputs, labels)` works without a custom train step.

| objective | application | `y_true` | loss |
|---|---|---|---|
| `mlm` | `mlm` | original id at masked positions (`bert4k.data.mlm_mask`) | `MaskedLMLoss` |
| `lm` | `lm` | the token ids, padding 0 (`lm_labels`) | `CausalLMLoss`: position t predicts label t+1 |
| `unilm` | `unilm` | target-segment ids, 0 on the source (`unilm_labels`) | `CausalLMLoss` |
| `plm` | `plm` | ids at the last K positions of the order (`plm_labels`) | `MaskedLMLoss`: query stream at i predicts x_i |
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

OBJECTIVES = ("mlm", "lm", "unilm", "plm")
_SHIFT = {"mlm": 0, "lm": 1, "unilm": 1, "plm": 0}


def _shifted(y_true, y_pred, shift: int):
    """Pair the prediction at t with the label at t + shift."""
    if shift:
        return y_true[:, shift:], y_pred[:, :-shift]
    return y_true, y_pred


@keras.saving.register_keras_serializable("bert4k")
class MaskedLMLoss(keras.losses.Loss):
    """Mean sparse cross-entropy over positions whose label is not 0; the prediction at t scores label t."""

    shift = 0

    def __init__(self, from_logits: bool = False, name: str | None = None, **kwargs):
        super().__init__(name=name or type(self).__name__, **kwargs)
        self.from_logits = from_logits

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Shift before Keras reads the output's padding mask: the slice carries none, so an unshifted `[b, n]` mask
        # never meets `[b, n - shift]` losses (label 0 = ignore already leaves padding out).
        y_true, y_pred = _shifted(y_true, y_pred, self.shift)
        return super().__call__(y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        # ignore_class attaches the label mask to the per-token losses; the default reduction then averages
        # over the labelled positions only.
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=self.from_logits,
                                                            ignore_class=0)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


@keras.saving.register_keras_serializable("bert4k")
class CausalLMLoss(MaskedLMLoss):
    """`MaskedLMLoss` shifted by one: the prediction at t scores label t + 1 (LM and UniLM)."""

    shift = 1


@keras.saving.register_keras_serializable("bert4k")
class MaskedAccuracy(keras.metrics.Metric):
    """Token accuracy of the argmax over positions whose label is not 0 (counted over all batches seen)."""

    def __init__(self, shift: int = 0, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.shift = shift
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _shifted(ops.cast(y_true, "int32"), y_pred, self.shift)
        valid = ops.not_equal(y_true, 0)
        hit = ops.logical_and(valid, ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true))
        self.correct.assign_add(ops.sum(ops.cast(hit, self.dtype)))
        self.total.assign_add(ops.sum(ops.cast(valid, self.dtype)))

    def result(self):
        return ops.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "shift": self.shift}


def compile_kwargs(objective: str, from_logits: bool = False) -> dict:
    """`loss` and `metrics` for `model.compile(optimizer, **compile_kwargs("mlm"))`."""
    if objective not in _SHIFT:
        raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")
    shift = _SHIFT[objective]
    loss = (CausalLMLoss if shift else MaskedLMLoss)(from_logits=from_logits)
    return {"loss": loss, "metrics": [MaskedAccuracy(shift=shift)]}


# --- label builders (numpy, for data pipelines) ---

def _real(token_ids, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(token_ids)
    if ids.ndim != 2:
        raise ValueError(f"token_ids must be [batch, seq], got shape {ids.shape}")
    return ids, ids != pad_id


def lm_labels(token_ids, pad_id: int = 0) -> np.ndarray:
    """LM labels: the token ids themselves, 0 on padding (use with `CausalLMLoss`)."""
    ids, real = _real(token_ids, pad_id)
    return np.where(real, ids, 0).astype("int32")


def unilm_labels(token_ids, segment_ids, pad_id: int = 0) -> np.ndarray:
    """UniLM labels: the target-segment (segment 1) ids, 0 on the source and padding (use with `CausalLMLoss`)."""
    ids, real = _real(token_ids, pad_id)
    segments = np.asarray(segment_ids)
    if segments.shape != ids.shape:
        raise ValueError(f"segment_ids shape {segments.shape} differs from token_ids shape {ids.shape}")
    return np.where(real & (segments == 1), ids, 0).astype("int32")


def sample_perm_ranks(token_ids, rng: np.random.Generator | int | None = None, pad_id: int = 0) -> np.ndarray:
    """Random factorisation orders as ranks `[batch, seq]`: each row's L real tokens get a random permutation of
    0..L-1, its padding positions the ranks L, L+1, … (last, in position order)."""
    ids, real = _real(token_ids, pad_id)
    rng = np.random.default_rng(rng)
    ranks = np.empty(ids.shape, dtype="int32")
    for row, is_real in zip(ranks, real):
        n_real = int(is_real.sum())
        row[is_real] = rng.permutation(n_real)
        row[~is_real] = np.arange(n_real, len(row))
    return ranks


def plm_labels(token_ids, perm_ranks, num_predict: int, pad_id: int = 0) -> np.ndarray:
    """PLM labels: the ids of the last `num_predict` real tokens of each row's order (all of them in rows with
    fewer), 0 elsewhere (use with `MaskedLMLoss` on the query stream). The L real tokens of a row must carry the
    ranks 0..L-1, as `sample_perm_ranks` gives them."""
    ids, real = _real(token_ids, pad_id)
    ranks = np.asarray(perm_ranks)
    if ranks.shape != ids.shape:
        raise ValueError(f"perm_ranks shape {ranks.shape} differs from token_ids shape {ids.shape}")
    if num_predict < 1:
        raise ValueError(f"num_predict must be ≥ 1, got {num_predict}")
    first = real.sum(axis=1, keepdims=True) - num_predict
    return np.where(real & (ranks >= first), ids, 0).astype("int32")
