"""Small shape-dependent steps of the functional graph, as layers (Keras needs a layer for dynamic shapes)."""
from __future__ import annotations

import keras
from keras import ops

from bert4k import masks


@keras.saving.register_keras_serializable("bert4k")
class PositionIds(keras.layers.Layer):
    """0..n-1 per row; with `offset` (original RoBERTa, `offset = pad + 1`) `offset - 1 + cumsum(non-pad)` on
    tokens (the first token at `offset`) and `offset - 1` (the padding row) on padding."""

    def __init__(self, offset: int = 0, pad_id: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset
        self.pad_id = pad_id

    def call(self, token_ids):
        if self.offset:
            real = ops.cast(ops.not_equal(token_ids, self.pad_id), "int32")
            return ops.cumsum(real, axis=1) * real + (self.offset - 1)
        n = ops.shape(token_ids)[1]
        return ops.broadcast_to(ops.arange(n, dtype="int32")[None, :], ops.shape(token_ids))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "offset": self.offset, "pad_id": self.pad_id}


@keras.saving.register_keras_serializable("bert4k")
class AttentionMask(keras.layers.Layer):
    """The boolean attention mask of `application` (see `bert4k.masks.application_mask`)."""

    def __init__(self, application: str, pad_id: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.application = application
        self.pad_id = pad_id

    def call(self, token_ids, segment_ids=None, perm_ranks=None):
        return masks.application_mask(self.application, token_ids, segment_ids, perm_ranks, self.pad_id)

    def compute_output_spec(self, token_ids, segment_ids=None, perm_ranks=None):
        n = token_ids.shape[1]
        n = None if n is None else (2 * n if self.application == "plm" else n)
        return keras.KerasTensor((token_ids.shape[0], n, n), dtype="bool")

    def get_config(self):
        return {**super().get_config(), "application": self.application, "pad_id": self.pad_id}


@keras.saving.register_keras_serializable("bert4k")
class QueryStream(keras.layers.Layer):
    """The second half `[:, n:]` of a `[content ; query]` sequence (permutation LM)."""

    def call(self, x):
        return x[:, ops.shape(x)[1] // 2:]

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        return (input_shape[0], None if n is None else n // 2, *input_shape[2:])
