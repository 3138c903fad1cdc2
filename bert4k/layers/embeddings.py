"""Token embedding that doubles as the tied output projection."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable("bert4k")
class TokenEmbedding(keras.layers.Embedding):
    """`call(ids)` looks rows up; `call(hidden, reverse=True)` multiplies by the table's transpose (tied head)."""

    def call(self, inputs, reverse: bool = False):
        if not reverse:
            return super().call(inputs)
        table = ops.cast(self.embeddings, self.compute_dtype)
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
