"""Multi-head attention with key_size ≠ head_size, a boolean mask, an additive position bias and a KV cache.

Plain attention (padding and/or causal mask, or none; no position bias; no attention dropout in training) runs on
`keras.ops.dot_product_attention`, the backend's fused kernel; the rest on explicit float32 scores. A KV cache is
stored `[batch * heads, length, size]`, the layout of the batched score and value products, so a decoding step
writes its new rows in place and copies nothing of the cache.
"""
from __future__ import annotations

import keras
from keras import ops

from bert4k.layers.initializers import truncated_normal
from bert4k.layers.kv_cache import write_cache
from bert4k.layers.linear import Linear
from bert4k.layers.linear_attention import initial_state, linear_attention

NEG_INF = -1e9


@keras.saving.register_keras_serializable("bert4k")
class MultiHeadAttention(keras.layers.Layer):
    """Scaled dot-product attention over `heads` heads.

    Queries and keys have `key_size` per head, values `head_size`. `attention_mask` is boolean, broadcastable to
    `[batch, q, k]` (True = may attend): a key-padding mask `[batch, 1, k]` is never expanded. `causal=True` adds
    "query i sees keys j ≤ i" (full-sequence calls; a cached step passes its mask instead). `position_bias` (`[batch or 1, heads, q, k]`) is added to the scores (T5).
    `scale=False` drops the 1/√key_size factor (T5).
    `attention="linear"`: φ(q)·φ(k) linear attention (see `bert4k.layers.linear_attention`); `attention_mask` is then
    the mask structure and `cache` the running state `(S, Z)`.
    """

    def __init__(self, heads: int, head_size: int, key_size: int | None = None, use_bias: bool = True,
                 scale: bool = True, output_dim: int | None = None, dropout: float = 0.0,
                 initializer_range: float = 0.02, attention: str = "softmax", **kwargs):
        super().__init__(**kwargs)
        if attention not in ("softmax", "linear"):
            raise ValueError(f"attention must be 'softmax' or 'linear', got {attention!r}")
        self.attention = attention
        self.heads = heads
        self.head_size = head_size
        self.key_size = key_size or head_size
        self.use_bias = use_bias
        self.scale = scale
        self.output_dim = output_dim
        self.dropout = dropout
        self.initializer_range = initializer_range

    def _dense(self, units, name, input_dim):
        layer = Linear(units, use_bias=self.use_bias, name=name, dtype=self.dtype_policy,
                       kernel_initializer=truncated_normal(self.initializer_range))
        layer.build((None, input_dim))
        return layer

    def build(self, query_shape, key_value_shape=None):
        kv_dim = (key_value_shape or query_shape)[-1]
        self.query = self._dense(self.heads * self.key_size, "query", query_shape[-1])
        self.key = self._dense(self.heads * self.key_size, "key", kv_dim)
        self.value = self._dense(self.heads * self.head_size, "value", kv_dim)
        self.attention_output = self._dense(self.output_dim or query_shape[-1], "output", self.heads * self.head_size)
        self.attention_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def _split_heads(self, x, size):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        return ops.reshape(x, (batch, length, self.heads, size))

    def project_key_value(self, key_value):
        """K and V of `key_value`, `[batch, len, heads, size]` each (also used to pre-fill cross-attention caches)."""
        k = self._split_heads(self.key(key_value), self.key_size)
        v = self._split_heads(self.value(key_value), self.head_size)
        return k, v

    def init_cache(self, batch: int, length: int, dtype=None):
        """A zeroed static cache for `length` positions: `(k, v)` of shape `[batch * heads, length, key_size /
        head_size]` (row `b * heads + h` is head h of row b; linear attention: its empty running state, float32
        sums whatever `dtype`)."""
        if self.attention == "linear":
            return initial_state(batch, self.heads, self.key_size, self.head_size)
        dtype = dtype or self.compute_dtype
        return (ops.zeros((batch * self.heads, length, self.key_size), dtype),
                ops.zeros((batch * self.heads, length, self.head_size), dtype))

    def _heads_first(self, x, size):
        """`[batch, len, heads, size]` → the cache layout `[batch * heads, len, size]`."""
        x = ops.transpose(x, (0, 2, 1, 3))
        return ops.reshape(x, (-1, ops.shape(x)[2], size))

    def cache_key_value(self, key_value):
        """K and V of `key_value` in the cache layout `[batch * heads, len, size]` (pre-computed cross-attention)."""
        k, v = self.project_key_value(key_value)
        return self._heads_first(k, self.key_size), self._heads_first(v, self.head_size)

    def call(self, query, key_value=None, attention_mask=None, position_bias=None, cache=None, cache_index=None,
             causal: bool = False, cache_in_place=False, training=None):
        """Returns the attention output, and with `cache` also the updated `(k, v)` cache.

        `cache=(k, v)` (see `init_cache`) with `cache_index`: the new K/V of `key_value` are written into the
        static cache at `cache_index` and attention runs over the whole cache. `cache` without `cache_index`: the
        cache is used as-is (pre-computed cross-attention K/V, `cache_key_value`). `cache_in_place`: see
        `bert4k.layers.kv_cache.write_cache` (only for a cache the caller owns).
        """
        key_value = query if key_value is None else key_value
        q = self._split_heads(self.query(query), self.key_size)
        if self.attention == "linear":
            return self._linear_call(q, key_value, attention_mask, position_bias, cache)
        if cache is None:
            k, v = self.project_key_value(key_value)
            return self.attention_output(self.attend(q, k, v, attention_mask, position_bias, training,
                                                     causal=causal))
        self._check_cache(cache)
        if cache_index is None:
            k, v = cache
        else:
            k, v = self.cache_key_value(key_value)
            k = write_cache(cache[0], k, cache_index, in_place=cache_in_place)
            v = write_cache(cache[1], v, cache_index, in_place=cache_in_place)
        out = self.attend_cached(q, k, v, attention_mask, position_bias, training)
        return self.attention_output(out), (k, v)

    def _check_cache(self, cache):
        for tensor, size, name in zip(cache, (self.key_size, self.head_size), ("key", "value")):
            shape = tuple(tensor.shape)
            if len(shape) != 3 or shape[2] != size or (shape[0] is not None and shape[0] % self.heads):
                raise ValueError(f"{self.name}: the {name} cache must be [batch * heads ({self.heads}), length, "
                                 f"size={size}] (see init_cache), got shape {shape}")

    def _linear_call(self, q, key_value, linear_mask, position_bias, state):
        if position_bias is not None:
            raise ValueError("attention='linear' cannot add a position bias to scores it never forms")
        k, v = self.project_key_value(key_value)
        out, new_state = linear_attention(q, k, v, linear_mask, state)
        batch, length = ops.shape(out)[0], ops.shape(out)[1]
        out = self.attention_output(ops.reshape(out, (batch, length, self.heads * self.head_size)))
        return (out, new_state) if state is not None else out

    def _fused(self, training) -> bool:
        return self.key_size == self.head_size and not (training and self.dropout > 0)

    @staticmethod
    def _no_empty_rows(mask):
        """A query that may see no key (a fully padded row) sees every key: fused kernels disagree on empty rows
        (NaN, zeros, or per-dtype differences on PyTorch), a full row is defined everywhere."""
        return ops.logical_or(mask, ops.logical_not(ops.any(mask, axis=-1, keepdims=True)))

    def attend(self, q, k, v, mask=None, position_bias=None, training=None, causal: bool = False):
        """softmax(q·kᵀ [/√d] + bias, masked) · v, heads merged: `[batch, q, heads*head_size]`."""
        batch, length = ops.shape(q)[0], ops.shape(q)[1]
        if position_bias is None and self._fused(training):
            mask4 = None if mask is None else self._no_empty_rows(ops.expand_dims(ops.cast(mask, "bool"), 1))
            out = ops.dot_product_attention(q, ops.cast(k, q.dtype), ops.cast(v, q.dtype), mask=mask4,
                                            scale=self.key_size ** -0.5 if self.scale else 1.0, is_causal=causal)
            return ops.reshape(out, (batch, length, self.heads * self.head_size))
        if causal:
            i = ops.arange(ops.shape(q)[1])[:, None]
            j = ops.arange(ops.shape(k)[1])[None, :]
            causal_mask = ops.expand_dims(j <= i, 0)
            mask = causal_mask if mask is None else ops.logical_and(ops.cast(mask, "bool"), causal_mask)
        scores = ops.einsum("bqhd,bkhd->bhqk", q, ops.cast(k, q.dtype))
        probs = self._probabilities(scores, mask, position_bias, training, q.dtype)
        out = ops.einsum("bhqk,bkhd->bqhd", probs, ops.cast(v, q.dtype))
        return ops.reshape(out, (batch, length, self.heads * self.head_size))

    def _probabilities(self, scores, mask, position_bias, training, dtype):
        """`[batch, heads, q, k]` scores → attention probabilities in `dtype`: float32 softmax of the scaled scores
        plus the position bias, masked positions excluded, attention dropout in training."""
        scores = ops.cast(scores, "float32")
        if self.scale:
            scores = scores / (self.key_size ** 0.5)
        if position_bias is not None:
            scores = scores + ops.cast(position_bias, "float32")
        if mask is not None:
            scores = ops.where(ops.expand_dims(ops.cast(mask, "bool"), 1), scores, NEG_INF)
        probs = ops.softmax(scores, axis=-1)
        return self.attention_dropout(ops.cast(probs, dtype), training=training)

    def attend_cached(self, q, k, v, mask=None, position_bias=None, training=None):
        """`attend` over keys / values in the cache layout `[batch * heads, k, size]`: one batched product each,
        reading the cache where it lies (no reshape or transpose of it: XLA would copy it every step); only the
        queries, the scores and the output (a few rows per step) change shape."""
        batch, length = ops.shape(q)[0], ops.shape(q)[1]
        q = self._heads_first(q, self.key_size)
        scores = ops.einsum("nqd,nkd->nqk", q, ops.cast(k, q.dtype))
        scores = ops.reshape(scores, (batch, self.heads, length, ops.shape(k)[1]))
        probs = self._probabilities(scores, mask, position_bias, training, q.dtype)
        probs = ops.reshape(probs, (-1, length, ops.shape(k)[1]))
        out = ops.reshape(ops.einsum("nqk,nkd->nqd", probs, ops.cast(v, q.dtype)),
                          (batch, self.heads, length, self.head_size))
        return ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (batch, length, self.heads * self.head_size))

    def compute_output_shape(self, query_shape, key_value_shape=None):
        return (*query_shape[:-1], self.output_dim or query_shape[-1])

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "head_size": self.head_size,
                "key_size": self.key_size, "use_bias": self.use_bias, "scale": self.scale,
                "output_dim": self.output_dim, "dropout": self.dropout,
                "initializer_range": self.initializer_range, "attention": self.attention}
