"""Talking-heads attention (Shazeer et al. 2020): learned mixing across heads of the logits before the softmax and
of the weights after it.

With `heads` = h_k query/key heads, `softmax_heads` = h_l and `value_heads` = h_v:

    L[b, k, i, j] = q_ik · k_jk / √d_k                  (h_k heads)
    L'[b, l, i, j] = Σ_k L[b, k, i, j] P_logits[k, l]  (+ position bias, − ∞ where the mask forbids)
    W = softmax_j(L')                                    (h_l heads)
    W'[b, v, i, j] = Σ_l W[b, l, i, j] P_weights[l, v]   (h_v heads)
    out_iv = Σ_j W'[b, v, i, j] v_jv

The mixing acts per (i, j), so every mask is honoured exactly (a forbidden (i, j) has weight 0 in every softmax head,
hence in every mixed head) and the KV cache works as for softmax attention. P_logits and P_weights start as
(rectangular) identities, so a fresh layer with equal head counts is plain multi-head attention.
"""
from __future__ import annotations

import keras
from keras import ops

from bert4k.layers.attention import NEG_INF, MultiHeadAttention
from bert4k.layers.kv_cache import write_cache


@keras.saving.register_keras_serializable("bert4k")
class TalkingHeadsAttention(MultiHeadAttention):
    """`MultiHeadAttention` with talking heads; `softmax_heads` / `value_heads` default to `heads`.

    The value projection has `value_heads × head_size` units, and the `position_bias` has `softmax_heads` heads."""

    def __init__(self, heads: int, head_size: int, softmax_heads: int | None = None, value_heads: int | None = None,
                 **kwargs):
        kwargs.pop("attention", None)
        super().__init__(heads, head_size, attention="softmax", **kwargs)
        self.softmax_heads = softmax_heads or heads
        self.value_heads = value_heads or heads

    def build(self, query_shape, key_value_shape=None):
        kv_dim = (key_value_shape or query_shape)[-1]
        self.query = self._dense(self.heads * self.key_size, "query", query_shape[-1])
        self.key = self._dense(self.heads * self.key_size, "key", kv_dim)
        self.value = self._dense(self.value_heads * self.head_size, "value", kv_dim)
        self.attention_output = self._dense(self.output_dim or query_shape[-1], "output",
                                            self.value_heads * self.head_size)
        self.logits_mixing = self.add_weight(name="logits_mixing", shape=(self.heads, self.softmax_heads),
                                             initializer="identity")
        self.weights_mixing = self.add_weight(name="weights_mixing", shape=(self.softmax_heads, self.value_heads),
                                              initializer="identity")
        self.attention_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def init_cache(self, batch: int, length: int, dtype=None):
        """A zeroed static cache `(k, v)`: `[batch, length, heads, key_size]`, `[batch, length, value_heads,
        head_size]`."""
        dtype = dtype or self.compute_dtype
        return (ops.zeros((batch, length, self.heads, self.key_size), dtype),
                ops.zeros((batch, length, self.value_heads, self.head_size), dtype))

    def project_key_value(self, key_value):
        batch, length = ops.shape(key_value)[0], ops.shape(key_value)[1]
        k = self._split_heads(self.key(key_value), self.key_size)
        v = ops.reshape(self.value(key_value), (batch, length, self.value_heads, self.head_size))
        return k, v

    def call(self, query, key_value=None, attention_mask=None, position_bias=None, cache=None, cache_index=None,
             cache_in_place=False, training=None):
        """As `MultiHeadAttention.call` (static `(k, v)` cache written at `cache_index`, or used as-is without it)."""
        key_value = query if key_value is None else key_value
        q = self._split_heads(self.query(query), self.key_size)
        if cache is not None and cache_index is None:
            k, v = cache
        else:
            k, v = self.project_key_value(key_value)
            if cache is not None:
                k = write_cache(cache[0], k, cache_index, in_place=cache_in_place)
                v = write_cache(cache[1], v, cache_index, in_place=cache_in_place)
        out = self.attention_output(self.attend(q, k, v, attention_mask, position_bias, training))
        return (out, (k, v)) if cache is not None else out

    def attend(self, q, k, v, mask=None, position_bias=None, training=None):
        """Talking-heads attention of `q`, `k` (`[b, n, heads, key_size]`), `v` (`[b, m, value_heads, head_size]`)."""
        if mask is not None and not hasattr(mask, "shape"):
            raise ValueError("attention='talking_heads' takes a boolean [batch, q, k] mask, got "
                             f"{type(mask).__name__}")
        logits = ops.einsum("bqhd,bkhd->bhqk", ops.cast(q, "float32"), ops.cast(k, "float32"))
        if self.scale:
            logits = logits / (self.key_size ** 0.5)
        logits = ops.einsum("bhqk,hl->blqk", logits, ops.cast(self.logits_mixing, "float32"))
        if position_bias is not None:
            logits = logits + ops.cast(position_bias, "float32")
        if mask is not None:
            logits = ops.where(ops.expand_dims(mask, 1), logits, NEG_INF)
        weights = ops.einsum("blqk,lv->bvqk", ops.softmax(logits, axis=-1),
                             ops.cast(self.weights_mixing, "float32"))
        weights = self.attention_dropout(ops.cast(weights, q.dtype), training=training)
        out = ops.einsum("bvqk,bkvd->bqvd", weights, ops.cast(v, q.dtype))
        batch, length = ops.shape(out)[0], ops.shape(out)[1]
        return ops.reshape(out, (batch, length, self.value_heads * self.head_size))

    def get_config(self):
        return {**super().get_config(), "softmax_heads": self.softmax_heads, "value_heads": self.value_heads}
