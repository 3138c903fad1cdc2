"""Token embedding that doubles as the tied output projection."""
from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable("bert4k")
class TokenEmbedding(keras.layers.Embedding):
    """`call(ids)` looks rows up; `call(hidden, reverse=True)` multiplies by the table's transpose (tied head).

    One row of hidden states (batch-1 decoding) is multiplied as `table · h` (a matrix-vector product over the table
    as stored): written `h · tableᵀ`, XLA on CPU turns the vector-matrix product into a transposed copy of the
    whole `[vocab, hidden]` table (or a strided read of it) on every call."""

    def call(self, inputs, reverse: bool = False):
        if not reverse:
            return super().call(inputs)
        table = ops.cast(self.embeddings, self.compute_dtype)
        if None not in inputs.shape and math.prod(inputs.shape[:-1]) == 1:
            column = ops.reshape(inputs, (inputs.shape[-1], 1))
            return ops.reshape(ops.matmul(table, column), (*inputs.shape[:-1], self.input_dim))
        return ops.matmul(inputs, ops.transpose(table))

    def compute_output_spec(self, inputs, reverse: bool = False):
        if reverse:
            return keras.KerasTensor((*inputs.shape[:-1], self.input_dim), dtype=self.compute_dtype)
        return super().compute_output_spec(inputs)


@keras.saving.register_keras_serializable("bert4k")
class BiasAdd(keras.layers.Layer):
    """Adds a learned bias over the last axis (the MLM output bias)."""

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        return x + ops.cast(self.bias, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable("bert4k")
class HierarchicalPositionEmbedding(keras.layers.Embedding):
    """A learned table of `n` positions that also embeds positions `n ≤ p < n²` (bert4keras' hierarchical
    decomposition): with `u_i = (P_i - alpha·P_0) / (1 - alpha)`, position `p ≥ n` is `alpha·u[p // n] +
    (1 - alpha)·u[p % n]`; positions `p < n` are the table's rows unchanged."""

    def __init__(self, input_dim: int, output_dim: int, alpha: float = 0.4, **kwargs):
        if not 0 < alpha < 1:
            raise ValueError(f"hierarchical_position: alpha must be in (0, 1), got {alpha}")
        super().__init__(input_dim, output_dim, **kwargs)
        self.alpha = alpha

    def call(self, positions):
        n, alpha = self.input_dim, self.alpha
        table = self.embeddings
        positions = ops.cast(positions, "int32")
        direct = ops.take(table, ops.minimum(positions, n - 1), axis=0)
        u = (table - alpha * table[:1]) / (1 - alpha)
        decomposed = alpha * ops.take(u, positions // n, axis=0) + (1 - alpha) * ops.take(u, positions % n, axis=0)
        out = ops.where(ops.expand_dims(positions < n, -1), direct, decomposed)
        return ops.cast(out, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}
