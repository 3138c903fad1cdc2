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
class PaddingMask(keras.layers.Layer):
    """`[batch, n]` bool, True = real token: the `padding_mask` input when given (bool or 0/1), else
    `token_ids != pad_id`; with `keep_first`, position 0 is always real (T5's decoder start token is the pad id)."""

    def __init__(self, pad_id: int = 0, keep_first: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id
        self.keep_first = keep_first

    def call(self, token_ids, padding_mask=None):
        if padding_mask is not None:
            return ops.cast(padding_mask, "bool")
        real = ops.not_equal(token_ids, self.pad_id)
        if self.keep_first:
            real = ops.logical_or(real, ops.expand_dims(ops.arange(ops.shape(token_ids)[1]) == 0, 0))
        return real

    def compute_output_spec(self, token_ids, padding_mask=None):
        return keras.KerasTensor(token_ids.shape, dtype="bool")

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id, "keep_first": self.keep_first}


@keras.saving.register_keras_serializable("bert4k")
class AttentionMask(keras.layers.Layer):
    """The boolean attention mask of `application` (see `bert4k.masks.application_mask`), from the padding.

    encoder / mlm: the key-padding mask `[batch, 1, n]` only; lm: the same when the attention applies the causal
    structure itself (`causal_in_attention`, softmax attention), else `[batch, n, n]`; unilm: `[batch, n, n]`;
    plm: the two-stream `[batch, 2n, 2n]`.
    """

    def __init__(self, application: str, pad_id: int = 0, causal_in_attention: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.application = application
        self.pad_id = pad_id
        self.causal_in_attention = causal_in_attention

    def _key_padding_only(self) -> bool:
        return self.application in ("encoder", "mlm") or (self.application == "lm" and self.causal_in_attention)

    def call(self, token_ids, segment_ids=None, perm_ranks=None, padding=None):
        if self._key_padding_only():
            return masks.key_padding_mask(token_ids, self.pad_id, padding)
        return masks.application_mask(self.application, token_ids, segment_ids, perm_ranks, self.pad_id, padding)

    def compute_output_spec(self, token_ids, segment_ids=None, perm_ranks=None, padding=None):
        n = token_ids.shape[1]
        if self._key_padding_only():
            return keras.KerasTensor((token_ids.shape[0], 1, n), dtype="bool")
        n = None if n is None else (2 * n if self.application == "plm" else n)
        return keras.KerasTensor((token_ids.shape[0], n, n), dtype="bool")

    def get_config(self):
        return {**super().get_config(), "application": self.application, "pad_id": self.pad_id,
                "causal_in_attention": self.causal_in_attention}


@keras.saving.register_keras_serializable("bert4k")
class RestrictMask(keras.layers.Layer):
    """`application_mask & user_mask`: a user's mask (`[batch, q, k]` bool/0-1 input, or `mask_fn(token_ids)`)
    can only hide more keys, never reveal padding or break the application's structure."""

    def __init__(self, mask_fn=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(mask_fn, dict):
            mask_fn = keras.saving.deserialize_keras_object(mask_fn)
        self.mask_fn = mask_fn

    def call(self, mask, token_ids, user_mask=None):
        user = self.mask_fn(token_ids) if user_mask is None else user_mask
        return ops.logical_and(mask, ops.cast(user, "bool"))

    def compute_output_spec(self, mask, token_ids, user_mask=None):
        n = token_ids.shape[1]
        return keras.KerasTensor((token_ids.shape[0], n, n), dtype="bool")

    def get_config(self):
        fn = None if self.mask_fn is None else keras.saving.serialize_keras_object(self.mask_fn)
        return {**super().get_config(), "mask_fn": fn}


@keras.saving.register_keras_serializable("bert4k")
class OutputMask(keras.layers.Layer):
    """`[x, mask]` → `x` carrying the Keras mask `mask` (`[batch, n]` bool), so layers after the model (a loss
    layer's `compute_loss(inputs, mask)`) and Keras' losses see which positions are real."""

    def call(self, inputs):
        return inputs[0]

    def compute_mask(self, inputs, previous_mask=None):
        return ops.cast(inputs[1], "bool")

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[0].shape, dtype=inputs[0].dtype)


@keras.saving.register_keras_serializable("bert4k")
class QueryStream(keras.layers.Layer):
    """The second half `[:, n:]` of a `[content ; query]` sequence (permutation LM)."""

    def call(self, x):
        return x[:, ops.shape(x)[1] // 2:]

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        return (input_shape[0], None if n is None else n // 2, *input_shape[2:])
