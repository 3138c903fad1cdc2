"""T5 pieces: bucketed relative position bias, its masks, and the pre-RMSNorm encoder/decoder block."""
from __future__ import annotations

import math

import keras
from keras import ops

from bert4k.layers.attention import MultiHeadAttention
from bert4k.layers.feed_forward import FeedForward
from bert4k.layers.initializers import truncated_normal
from bert4k.layers.norms import RMSNorm


def relative_position_bucket(relative, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128):
    """Bucket of `relative = key_position - query_position` (int tensor), as mesh-TF T5 computes it.

    Bidirectional: half the buckets for keys after the query. Causal: keys after the query share bucket 0.
    Within each half, distances below `num_buckets // 4` (resp. `// 2`) get their own bucket, larger ones share
    logarithmically wider buckets up to `max_distance`; farther keys share the last bucket.
    """
    relative = ops.cast(relative, "int32")
    if bidirectional:
        num_buckets //= 2
        offset = ops.where(relative > 0, num_buckets, 0)
        distance = ops.abs(relative)
    else:
        offset = 0
        distance = ops.maximum(-relative, 0)
    max_exact = num_buckets // 2
    # float32 in the same order as mesh-TF / HF, so bucket edges (e.g. distance 16 → exactly 2.0) agree.
    scaled = ops.log(ops.cast(ops.maximum(distance, max_exact), "float32") / max_exact)
    scaled = scaled / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    large = ops.minimum(max_exact + ops.cast(scaled, "int32"), num_buckets - 1)
    return offset + ops.where(distance < max_exact, distance, large)


@keras.saving.register_keras_serializable("bert4k")
class RelativePositionBias(keras.layers.Layer):
    """Learned `[num_buckets, heads]` table → additive attention bias `[1, heads, q, k]`.

    `call(query_ids, key_ids)` uses positions `0..q-1` and `0..k-1` (the token ids only give the lengths);
    `bias(query_positions, key_positions)` takes explicit positions (cached decoding).
    """

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True,
                 initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.initializer_range = initializer_range

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.num_buckets, self.heads),
                                          initializer=truncated_normal(self.initializer_range))

    def call(self, query_ids, key_ids=None):
        key_ids = query_ids if key_ids is None else key_ids
        return self.bias(ops.arange(ops.shape(query_ids)[1]), ops.arange(ops.shape(key_ids)[1]))

    def bias(self, query_positions, key_positions):
        relative = ops.expand_dims(key_positions, 0) - ops.expand_dims(query_positions, 1)
        buckets = relative_position_bucket(relative, self.bidirectional, self.num_buckets, self.max_distance)
        values = ops.take(ops.cast(self.embeddings, self.compute_dtype), buckets, axis=0)  # [q, k, heads]
        return ops.expand_dims(ops.transpose(values, (2, 0, 1)), 0)

    def compute_output_spec(self, query_ids, key_ids=None):
        key_ids = query_ids if key_ids is None else key_ids
        return keras.KerasTensor((1, self.heads, query_ids.shape[1], key_ids.shape[1]), dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "num_buckets": self.num_buckets,
                "max_distance": self.max_distance, "bidirectional": self.bidirectional,
                "initializer_range": self.initializer_range}


@keras.saving.register_keras_serializable("bert4k")
class T5AttentionMask(keras.layers.Layer):
    """Boolean attention masks of T5 (True = may attend).

    `causal=False`: `[batch, 1, k]`, key j is not padding (encoder self-attention and cross-attention).
    `causal=True`: `[1, q, q]`, j ≤ i. The decoder's own tokens are never masked as padding: id 0 is also its
    start token, and later padding cannot reach earlier positions through a causal mask.
    `padding_mask` (`[batch, k]` bool or 0/1, True = real; None: derived as above) replaces the ids as the source of
    key padding: non-causal `[batch, 1, k]` is the mask itself; causal `[batch, q, q]` is j ≤ i and key j real (as
    Hugging Face's `decoder_attention_mask`).
    """

    def __init__(self, causal: bool = False, pad_id: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.causal = causal
        self.pad_id = pad_id

    def call(self, token_ids, padding_mask=None):
        if self.causal:
            idx = ops.arange(ops.shape(token_ids)[1])
            causal = ops.expand_dims(idx[None, :] <= idx[:, None], 0)
            if padding_mask is None:
                return causal
            return ops.logical_and(causal, ops.expand_dims(ops.cast(padding_mask, "bool"), 1))
        if padding_mask is not None:
            return ops.expand_dims(ops.cast(padding_mask, "bool"), 1)
        return ops.expand_dims(ops.not_equal(token_ids, self.pad_id), 1)

    def compute_output_spec(self, token_ids, padding_mask=None):
        n = token_ids.shape[1]
        if self.causal:
            shape = (1, n, n) if padding_mask is None else (token_ids.shape[0], n, n)
        else:
            shape = (token_ids.shape[0], 1, n)
        return keras.KerasTensor(shape, dtype="bool")

    def get_config(self):
        return {**super().get_config(), "causal": self.causal, "pad_id": self.pad_id}


@keras.saving.register_keras_serializable("bert4k")
class T5Block(keras.layers.Layer):
    """Pre-RMSNorm T5 layer: x += SelfAttn(N(x)); [x += CrossAttn(N(x), context)]; x += FFN(N(x)).

    Attention has no biases and no 1/√d scaling; queries/keys/values have `key_size` (T5's `d_kv`) per head,
    independent of the model width. The FFN is `relu` (T5 1.0) or gated (`act(wi_0 x) * wi_1 x`, T5.1.1 / mT5).
    With `cond_size`, every norm is conditional (`γ + cond·W_γ`, W zero-initialised) and `call` takes `cond`.
    """

    def __init__(self, heads: int, key_size: int, intermediate_size: int, activation: str = "relu",
                 gated: bool = False, cross_attention: bool = False, layer_norm_eps: float = 1e-6,
                 dropout: float = 0.1, initializer_range: float = 0.02, cond_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.key_size = key_size
        self.intermediate_size = intermediate_size
        self.activation = activation
        self.gated = gated
        self.cross_attention = cross_attention
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.cond_size = cond_size

    def _attention(self, name, input_shape):
        layer = MultiHeadAttention(self.heads, self.key_size, key_size=self.key_size, use_bias=False, scale=False,
                                   dropout=self.dropout, initializer_range=self.initializer_range, name=name,
                                   dtype=self.dtype_policy)
        layer.build(input_shape, input_shape)
        return layer

    def _norm(self, name, input_shape):
        layer = RMSNorm(self.layer_norm_eps, cond_size=self.cond_size, name=name, dtype=self.dtype_policy)
        layer.build(input_shape)
        return layer

    def build(self, input_shape):
        self.self_attention = self._attention("MultiHeadSelfAttention", input_shape)
        self.self_attention_norm = self._norm("MultiHeadSelfAttention-Norm", input_shape)
        if self.cross_attention:
            self.cross_attention_layer = self._attention("MultiHeadCrossAttention", input_shape)
            self.cross_attention_norm = self._norm("MultiHeadCrossAttention-Norm", input_shape)
        self.feed_forward = FeedForward(self.intermediate_size, self.activation, use_bias=False, gated=self.gated,
                                        initializer_range=self.initializer_range, name="FeedForward",
                                        dtype=self.dtype_policy)
        self.feed_forward.build(input_shape)
        self.ffn_norm = self._norm("FeedForward-Norm", input_shape)
        self.residual_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def call(self, x, attention_mask=None, position_bias=None, context=None, context_mask=None, cache=None,
             cache_index=None, context_cache=None, cond=None, cache_in_place=False, training=None):
        """Returns the block output, and with `cache` also the updated self-attention `(k, v)` cache.

        `context`: encoder output (decoder blocks); `context_cache`: its pre-computed cross-attention `(k, v)`,
        used instead of `context` when given; `cond`: `[batch, cond_size]` for the conditional norms.
        """
        drop = lambda h: self.residual_dropout(h, training=training)
        a = self.self_attention(self.self_attention_norm(x, cond=cond), attention_mask=attention_mask,
                                position_bias=position_bias, cache=cache, cache_index=cache_index,
                                cache_in_place=cache_in_place, training=training)
        new_cache = None
        if cache is not None:
            a, new_cache = a
        x = x + drop(a)
        if self.cross_attention:
            a = self.cross_attention_layer(self.cross_attention_norm(x, cond=cond), key_value=context,
                                           attention_mask=context_mask, cache=context_cache, training=training)
            if context_cache is not None:
                a = a[0]
            x = x + drop(a)
        x = x + drop(self.feed_forward(self.ffn_norm(x, cond=cond)))
        return x if cache is None else (x, new_cache)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "key_size": self.key_size,
                "intermediate_size": self.intermediate_size, "activation": self.activation, "gated": self.gated,
                "cross_attention": self.cross_attention, "layer_norm_eps": self.layer_norm_eps,
                "dropout": self.dropout, "initializer_range": self.initializer_range, "cond_size": self.cond_size}
