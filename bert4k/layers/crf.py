"""A linear-chain conditional random field over per-token label scores, in `keras.ops` (every backend).

The layer holds one transition matrix `trans[i, j]` (score of label `i` followed by label `j`); a label path
`y` of a sequence with emission scores `x[t, label]` scores `Σ_t x[t, y_t] + Σ_t trans[y_{t-1}, y_t]`, and
`p(y | x) = exp(score(y)) / Z(x)`. There are no separate start/end scores (as in bert4keras).

Padding follows bert4keras: `call(emissions, mask)` returns the emissions with every label of a padded position
set to `-inf`, and the loss, accuracy and decode read the padding back from those `-inf` rows. Padding must be
at the end of each row (a prefix of real positions, e.g. `token_ids != 0` of a right-padded batch).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops


def _padding_mask(scores):
    """`[batch, seq]` True where the position is real (not every label `-inf`)."""
    return ops.any(ops.not_equal(scores, -np.inf), axis=-1)


def _time_major_steps(scores, mask):
    """`[seq, batch, labels + 1]`: the emissions of steps 1.. with the mask as a last channel, then one masked
    no-op step (the TF backend's scan fails on several `xs` of unknown length, and on zero steps)."""
    steps = ops.concatenate([scores, mask[:, :, None]], axis=-1)
    steps = ops.concatenate([steps[:, 1:], ops.zeros_like(steps[:, :1])], axis=1)
    return ops.moveaxis(steps, 1, 0)


def _check_labels(scores, num_labels: int):
    last = scores.shape[-1]
    if last is not None and last != num_labels:
        raise ValueError(f"ConditionalRandomField: emissions have {last} labels on the last axis, the transition "
                         f"matrix has {num_labels}")


@keras.saving.register_keras_serializable("bert4k")
class ConditionalRandomField(keras.layers.Layer):
    """Linear-chain CRF: a trainable transition matrix, its negative log-likelihood and Viterbi decoding.

    `call(emissions, mask=None)`: emissions `[batch, seq, num_labels]` (any real scores, e.g. a `Dense` output),
    `mask` `[batch, seq]` (True / nonzero = real token, padding at the end). Returns float32 emissions with padded
    positions at `-inf`; use `sparse_loss` / `dense_loss` as the Keras loss and `sparse_accuracy` as a metric on that
    output, and `decode` (in the graph) or `bert4k.viterbi.ViterbiDecoder(crf.trans)` (numpy) for the best path.

    `lr_multiplier` (as bert4keras' `crf_lr_multiplier`): the variable is stored divided by it and used multiplied
    by it, so the transitions move `lr_multiplier` times faster under Adam-type optimisers than the encoder.
    """

    def __init__(self, lr_multiplier: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if lr_multiplier <= 0:
            raise ValueError(f"lr_multiplier must be > 0, got {lr_multiplier}")
        self.lr_multiplier = float(lr_multiplier)

    def build(self, emissions_shape, mask_shape=None):
        num_labels = emissions_shape[-1]
        if num_labels is None:
            raise ValueError(f"ConditionalRandomField needs a known number of labels, got shape {emissions_shape}")
        init = keras.initializers.GlorotUniform(seed=None)
        scale = 1.0 / self.lr_multiplier

        def initializer(shape, dtype=None):
            return init(shape, dtype=dtype) * scale

        self._trans = self.add_weight(name="trans", shape=(num_labels, num_labels), initializer=initializer,
                                      dtype="float32")

    @property
    def num_labels(self) -> int:
        return int(self._trans.shape[0])

    @property
    def trans(self):
        """The effective transition matrix `[num_labels, num_labels]` (the variable × `lr_multiplier`)."""
        return self._trans * self.lr_multiplier if self.lr_multiplier != 1 else ops.convert_to_tensor(self._trans)

    def call(self, emissions, mask=None):
        emissions = ops.cast(emissions, "float32")
        _check_labels(emissions, self.num_labels)
        if mask is None:
            return emissions
        keep = ops.cast(mask, "bool")[:, :, None]
        return ops.where(keep, emissions, ops.full_like(emissions, -np.inf))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, emissions, mask=None):
        return keras.KerasTensor(emissions.shape, dtype="float32")

    # --- scores ---

    def _masked(self, y_pred):
        """`(scores with padding zeroed, mask [batch, seq] float32)`."""
        y_pred = ops.cast(y_pred, "float32")
        _check_labels(y_pred, self.num_labels)
        mask = _padding_mask(y_pred)
        return ops.where(mask[:, :, None], y_pred, ops.zeros_like(y_pred)), ops.cast(mask, "float32")

    def path_score(self, y_true_one_hot, scores, mask):
        """Unnormalised score of the one-hot label path `[batch, seq, labels]` (padded positions zero)."""
        y = y_true_one_hot * mask[:, :, None]
        emission = ops.sum(y * scores, axis=(1, 2))
        transition = ops.einsum("bti,ij,btj->b", y[:, :-1], self.trans, y[:, 1:])
        return emission + transition

    def log_partition(self, scores, mask):
        """`log Z` per row `[batch]` by the forward algorithm (log-sum-exp over previous labels)."""
        trans = self.trans[None]  # [1, from, to]
        steps = _time_major_steps(scores, mask)

        def step(alpha, inputs):
            emission, keep = inputs[:, :-1], inputs[:, -1]
            new = ops.logsumexp(alpha[:, :, None] + trans, axis=1) + emission
            keep = keep[:, None]
            alpha = keep * new + (1.0 - keep) * alpha
            return alpha, alpha  # the TF backend's scan needs ys shaped like the carry

        alpha, _ = ops.scan(step, scores[:, 0], steps)
        return ops.logsumexp(alpha, axis=-1)

    # --- losses and metrics (Keras signature: y_true, y_pred) ---

    def dense_loss(self, y_true, y_pred):
        """`-log p(y | x)` per row; `y_true` one-hot `[batch, seq, labels]`, `y_pred` this layer's output."""
        scores, mask = self._masked(y_pred)
        y_true = ops.cast(y_true, "float32")
        return self.log_partition(scores, mask) - self.path_score(y_true, scores, mask)

    def sparse_loss(self, y_true, y_pred):
        """`-log p(y | x)` per row; `y_true` integer labels `[batch, seq]` (any value at padded positions). A row
        with a label outside `0..num_labels-1` at a real position gets a NaN loss (a graph cannot raise)."""
        y_true = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
        y_true = ops.where(_padding_mask(ops.cast(y_pred, "float32")), y_true, ops.zeros_like(y_true))
        outside = ops.any(ops.logical_or(ops.less(y_true, 0), ops.greater_equal(y_true, self.num_labels)), axis=1)
        loss = self.dense_loss(ops.one_hot(y_true, self.num_labels), y_pred)
        return ops.where(outside, ops.full_like(loss, np.nan), loss)

    def sparse_accuracy(self, y_true, y_pred):
        """Per-token accuracy of the emission argmax over real positions (a cheap training-time signal)."""
        y_pred = ops.cast(y_pred, "float32")
        mask = ops.cast(_padding_mask(y_pred), "float32")
        y_true = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
        hit = ops.cast(ops.equal(y_true, ops.cast(ops.argmax(y_pred, axis=-1), "int32")), "float32")
        return ops.sum(hit * mask) / ops.maximum(ops.sum(mask), 1.0)

    def dense_accuracy(self, y_true, y_pred):
        return self.sparse_accuracy(ops.argmax(y_true, axis=-1), y_pred)

    # --- decoding ---

    def decode(self, y_pred):
        """Viterbi best paths `[batch, seq]` int32 of this layer's output; padded positions get label 0."""
        scores, mask = self._masked(y_pred)
        trans = self.trans[None]
        num_labels = self.num_labels
        identity = ops.arange(num_labels, dtype="int32")[None, :]
        steps = _time_major_steps(scores, mask)

        def forward(carry, inputs):  # the TF backend's scan needs ys shaped like the carry: carry the pointers
            delta, _ = carry
            emission, keep = inputs[:, :-1], inputs[:, -1]
            total = delta[:, :, None] + trans  # [batch, from, to]
            best_from = ops.cast(ops.argmax(total, axis=1), "int32")
            new = ops.max(total, axis=1) + emission
            real = ops.cast(keep, "bool")[:, None]
            pointer = ops.where(real, best_from, ops.broadcast_to(identity, ops.shape(best_from)))
            delta = ops.where(real, new, delta)
            return (delta, pointer), (delta, pointer)

        start = (scores[:, 0], ops.zeros_like(ops.cast(scores[:, 0], "int32")))
        (delta, _), (_, pointers) = ops.scan(forward, start, steps)  # pointers [seq-1, batch, labels]
        last = ops.cast(ops.argmax(delta, axis=-1), "int32")

        def backward(label, pointer):
            previous = ops.take_along_axis(pointer, label[:, None], axis=1)[:, 0]
            return previous, label

        first, later = ops.scan(backward, last, pointers, reverse=True)  # later[t] = label at t + 1
        path = ops.concatenate([first[:, None], ops.moveaxis(later, 0, 1)], axis=1)[:, :-1]  # drop the no-op step
        return ops.where(ops.cast(mask, "bool"), path, ops.zeros_like(path))

    def get_config(self):
        return {**super().get_config(), "lr_multiplier": self.lr_multiplier}
