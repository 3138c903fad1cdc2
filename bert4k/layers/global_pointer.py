"""GlobalPointer span scoring (every `(start, end)` pair scored at once per entity type) with rotary position
embeddings on the span query/key, its multilabel categorical cross-entropy, and numpy span decoding.

`GlobalPointer`: per type `h`, `q_h = W_q,h x`, `k_h = W_k,h x` (one `Dense`), RoPE on both, then
`logits[b, h, i, j] = <q_h[i], k_h[j]> / √head_size` (span `i..j`). `EfficientGlobalPointer` shares `q, k`
across types and adds per-type start/end biases from a small second `Dense`. Padded rows/columns and, with
`tril_mask`, spans with `end < start` are `-inf`. Layouts follow bert4keras (interleaved RoPE pairs; the
same weight order), so its trained weights load unchanged.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops


def sinusoidal(positions, dim: int, base: float = 10000.0):
    """`[..., dim]` interleaved `sin, cos` of `positions · base^(-2i/dim)` for `i < dim / 2`."""
    if dim % 2:
        raise ValueError(f"rotary embeddings need an even size, got {dim}")
    freqs = ops.power(base, -2.0 * ops.arange(dim // 2, dtype="float32") / dim)
    angles = ops.cast(positions, "float32")[..., None] * freqs
    return ops.reshape(ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1),
                       (*ops.shape(angles)[:-1], dim))


def apply_rotary(x, positions=None):
    """RoPE on `x` `[batch, seq, ..., dim]`: each pair `(x[2i], x[2i+1])` at position p rotated by `p·θ_i`.
    `positions` defaults to `0..seq-1`."""
    seq, dim = ops.shape(x)[1], x.shape[-1]
    if positions is None:
        positions = ops.arange(seq, dtype="float32")[None]
    table = sinusoidal(positions, dim)  # [batch or 1, seq, dim]
    table = ops.reshape(table, (ops.shape(table)[0], seq) + (1,) * (len(x.shape) - 3) + (dim,))
    cos = ops.repeat(table[..., 1::2], 2, axis=-1)
    sin = ops.repeat(table[..., ::2], 2, axis=-1)
    rotated = ops.reshape(ops.stack([-x[..., 1::2], x[..., ::2]], axis=-1), ops.shape(x))
    return x * cos + rotated * sin


def _span_mask(logits, mask, tril_mask: bool):
    """`logits [b, h, n, n]` with padded rows/columns (mask `[b, n]`) and, if asked, `end < start` at -inf."""
    n = ops.shape(logits)[-1]
    keep = None
    if mask is not None:
        real = ops.cast(mask, "bool")
        keep = ops.logical_and(real[:, None, :, None], real[:, None, None, :])
    if tril_mask:
        rows = ops.arange(n)[:, None]
        cols = ops.arange(n)[None, :]
        upper = ops.greater_equal(cols, rows)[None, None]
        keep = upper if keep is None else ops.logical_and(keep, upper)
    if keep is None:
        return logits
    return ops.where(keep, logits, ops.full_like(logits, -np.inf))


@keras.saving.register_keras_serializable("bert4k")
class GlobalPointer(keras.layers.Layer):
    """`call(x, mask=None)`: `x` `[batch, seq, hidden]`, `mask` `[batch, seq]` (True = real token) →
    float32 span logits `[batch, heads, seq, seq]`; span `i..j` of type `h` is predicted where the logit is > 0.
    Train with `global_pointer_crossentropy`.

    `lr_multiplier` (as the CRF's): the projection weights are stored divided by it and used multiplied by it, so
    under Adam-type optimisers they learn `lr_multiplier` times faster than the encoder (same initial outputs).
    """

    def __init__(self, heads: int, head_size: int, rope: bool = True, use_bias: bool = True, tril_mask: bool = True,
                 kernel_initializer="lecun_normal", lr_multiplier: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if heads < 1 or head_size < 2 or head_size % 2:
            raise ValueError(f"GlobalPointer needs heads ≥ 1 and an even head_size ≥ 2, got {heads}, {head_size}")
        if lr_multiplier <= 0:
            raise ValueError(f"lr_multiplier must be > 0, got {lr_multiplier}")
        self.lr_multiplier = float(lr_multiplier)
        self.heads = heads
        self.head_size = head_size
        self.rope = rope
        self.use_bias = use_bias
        self.tril_mask = tril_mask
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _dense(self, units: int, name: str):
        initializer = keras.initializers.get(keras.initializers.serialize(self.kernel_initializer))
        scale = 1.0 / self.lr_multiplier

        def stored(shape, dtype=None):
            return initializer(shape, dtype=dtype) * scale

        return keras.layers.Dense(units, use_bias=self.use_bias, kernel_initializer=stored if scale != 1 else
                                  initializer, dtype="float32", name=name)

    def _project(self, dense, x):
        """`dense(x)` with its stored weights × `lr_multiplier`."""
        y = dense(x)
        return y * self.lr_multiplier if self.lr_multiplier != 1 else y

    def build(self, x_shape, mask_shape=None):
        self.dense = self._dense(self.heads * self.head_size * 2, "dense")
        self.dense.build(x_shape)

    def _query_key(self, x):
        """`(q, k)` `[batch, seq, heads, head_size]`."""
        x = self._project(self.dense, ops.cast(x, "float32"))
        x = ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], self.heads, 2 * self.head_size))
        return x[..., :self.head_size], x[..., self.head_size:]

    def call(self, x, mask=None):
        q, k = self._query_key(x)
        if self.rope:
            q, k = apply_rotary(q), apply_rotary(k)
        logits = ops.einsum("bmhd,bnhd->bhmn", q, k) / self.head_size ** 0.5
        return _span_mask(logits, mask, self.tril_mask)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, x, mask=None):
        return keras.KerasTensor((x.shape[0], self.heads, x.shape[1], x.shape[1]), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "head_size": self.head_size, "rope": self.rope,
                "use_bias": self.use_bias, "tril_mask": self.tril_mask,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "lr_multiplier": self.lr_multiplier}


@keras.saving.register_keras_serializable("bert4k")
class EfficientGlobalPointer(GlobalPointer):
    """GlobalPointer with one shared `q, k` of size `head_size` (interleaved in a `Dense(2·head_size)`) and, per
    type, a start bias and an end bias read from that `Dense`'s output by a `Dense(2·heads)`:
    `logits[b, h, i, j] = <q[i], k[j]> / √head_size + (s_h[i] + e_h[j]) / 2`."""

    def build(self, x_shape, mask_shape=None):
        self.p_dense = self._dense(self.head_size * 2, "p_dense")
        self.p_dense.build(x_shape)
        self.q_dense = self._dense(self.heads * 2, "q_dense")
        self.q_dense.build((*x_shape[:-1], self.head_size * 2))

    def call(self, x, mask=None):
        x = self._project(self.p_dense, ops.cast(x, "float32"))
        q, k = x[..., ::2], x[..., 1::2]
        if self.rope:
            q, k = apply_rotary(q), apply_rotary(k)
        logits = ops.einsum("bmd,bnd->bmn", q, k) / self.head_size ** 0.5
        bias = ops.transpose(self._project(self.q_dense, x), (0, 2, 1)) / 2.0  # [b, 2·heads, n]
        logits = logits[:, None] + bias[:, ::2, None, :] + bias[:, 1::2, :, None]
        return _span_mask(logits, mask, self.tril_mask)


# === loss ===

def multilabel_categorical_crossentropy(y_true, y_pred):
    """`log(1 + Σ_neg e^{s}) + log(1 + Σ_pos e^{-s})` over the last axis: targets (`y_true` = 1) should score
    above 0, the rest below 0; `-inf` scores are excluded. Returns `[...]` (the last axis reduced)."""
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "float32")
    real = ops.not_equal(y_pred, -np.inf)
    positive = ops.logical_and(real, ops.greater(y_true, 0.5))
    negative = ops.logical_and(real, ops.logical_not(positive))
    ninf = ops.full_like(y_pred, -np.inf)
    zeros = ops.zeros_like(y_pred[..., :1])
    neg = ops.concatenate([ops.where(negative, y_pred, ninf), zeros], axis=-1)
    pos = ops.concatenate([ops.where(positive, -y_pred, ninf), zeros], axis=-1)
    return ops.logsumexp(neg, axis=-1) + ops.logsumexp(pos, axis=-1)


def global_pointer_crossentropy(y_true, y_pred):
    """Keras loss for `GlobalPointer` logits `[batch, heads, n, n]` and 0/1 targets of that shape: the multilabel
    cross-entropy over all `n·n` spans of each (row, type), averaged over types → `[batch]`."""
    shape = ops.shape(y_pred)
    flat = (shape[0], shape[1], shape[2] * shape[3])
    loss = multilabel_categorical_crossentropy(ops.reshape(y_true, flat), ops.reshape(y_pred, flat))
    return ops.mean(loss, axis=1)


# === decoding (numpy) ===

def decode_spans(logits, threshold: float = 0.0, nested: bool = True) -> list[tuple[int, int, int, float]]:
    """Spans `(type, start, end, score)` of one sequence's logits `[heads, n, n]` scoring above `threshold`,
    best first. `nested=False` keeps a flat labelling: spans are taken best first, skipping any that overlaps one
    already taken (whatever its type)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3 or logits.shape[1] != logits.shape[2]:
        raise ValueError(f"expected logits [heads, n, n], got shape {logits.shape}")
    types, starts, ends = np.nonzero(logits > threshold)
    spans = sorted(((int(h), int(s), int(e), float(logits[h, s, e])) for h, s, e in zip(types, starts, ends)
                    if e >= s), key=lambda span: (-span[3], span[1], span[2], span[0]))
    if nested:
        return spans
    taken, used = [], np.zeros(logits.shape[1], dtype=bool)
    for span in spans:
        if not used[span[1]:span[2] + 1].any():
            taken.append(span)
            used[span[1]:span[2] + 1] = True
    return taken
