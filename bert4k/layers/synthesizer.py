"""Synthesizer attention (Tay et al. 2020): attention weights that are not a query–key product.

For `max_length` = L (fixed when the layer is built; sequences may be at most L long) and a sequence of n ≤ L:

- "dense": B_h[i, :] = W2_h · relu(W1 · x_i + b1) + b2_h, an L-vector per token and head, cut to its first n keys
  (so each row depends on its own token and on key *positions*, never on the keys' content);
- "random": B_h = R_h[:n, :n] with R_h `[L, L]` learned (content-free);
- "factorized": B_h = (R1_h · R2_hᵀ)[:n, :n], R1_h, R2_h `[L, rank]` (factorized random, fewer parameters).

Then out_i = Σ_j softmax_j(B_h[i, j], masked) v_jh, and the heads are merged and projected as usual. The mask is
applied to B, so every application mask (encoder, mlm, lm, unilm, plm) is honoured exactly. There is no key
projection and no per-step form: a KV cache (and so `generate`) is refused, as is a position bias.
"""
from __future__ import annotations

import keras
from keras import ops

from bert4k.layers.attention import NEG_INF, MultiHeadAttention
from bert4k.layers.initializers import truncated_normal

KINDS = ("dense", "random", "factorized")


@keras.saving.register_keras_serializable("bert4k")
class SynthesizerAttention(MultiHeadAttention):
    """Synthesizer self-attention of kind `synthesizer` ("dense" | "random" | "factorized"), at most `max_length`
    positions; `rank` is the factorized kind's inner size."""

    def __init__(self, heads: int, head_size: int, synthesizer: str = "dense", max_length: int = 512,
                 rank: int = 8, **kwargs):
        kwargs.pop("attention", None)
        super().__init__(heads, head_size, attention="softmax", **kwargs)
        if synthesizer not in KINDS:
            raise ValueError(f"synthesizer must be one of {KINDS}, got {synthesizer!r}")
        self.synthesizer = synthesizer
        self.max_length = max_length
        self.rank = rank

    def _matrix(self, name, shape):
        return self.add_weight(name=name, shape=shape, initializer=truncated_normal(self.initializer_range))

    def build(self, query_shape, key_value_shape=None):
        dim = query_shape[-1]
        length = self.max_length
        if self.synthesizer == "dense":
            self.synth_hidden = self._dense(dim, "synthesizer_hidden", dim)
            self.synth_logits = self._dense(self.heads * length, "synthesizer_logits", dim)
        elif self.synthesizer == "random":
            self.random_logits = self._matrix("random_logits", (self.heads, length, length))
        else:
            self.factor_query = self._matrix("factor_query", (self.heads, length, self.rank))
            self.factor_key = self._matrix("factor_key", (self.heads, length, self.rank))
        self.value = self._dense(self.heads * self.head_size, "value", dim)
        self.attention_output = self._dense(self.output_dim or dim, "output", self.heads * self.head_size)
        self.attention_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def _logits(self, x, n):
        """B `[batch or 1, heads, n, n]` in float32."""
        if self.synthesizer == "dense":
            hidden = ops.relu(self.synth_hidden(x))
            batch = ops.shape(x)[0]
            logits = ops.reshape(self.synth_logits(hidden), (batch, n, self.heads, self.max_length))
            return ops.transpose(ops.cast(logits, "float32"), (0, 2, 1, 3))[..., :n]
        if self.synthesizer == "random":
            return ops.cast(self.random_logits, "float32")[None, :, :n, :n]
        a = ops.cast(self.factor_query, "float32")[:, :n]
        b = ops.cast(self.factor_key, "float32")[:, :n]
        return ops.einsum("hir,hjr->hij", a, b)[None]

    def call(self, query, key_value=None, attention_mask=None, position_bias=None, cache=None, cache_index=None,
             cache_in_place=False, training=None):
        """Self-attention only: `key_value`, `cache` and `position_bias` raise."""
        name = f"attention='synthesizer_{self.synthesizer}'"
        if cache is not None:
            raise ValueError(f"{name} has no KV-cache form (its weights are synthesized per position for the whole "
                             "sequence); decode by re-running the full sequence, or use softmax attention")
        if key_value is not None:
            raise ValueError(f"{name} is self-attention only: key_value must be None")
        if position_bias is not None:
            raise ValueError(f"{name} cannot add a position bias")
        if attention_mask is not None and not hasattr(attention_mask, "shape"):
            raise ValueError(f"{name} takes a boolean [batch, q, k] mask, got {type(attention_mask).__name__}")
        static_n = query.shape[1]
        if static_n is not None and static_n > self.max_length:
            raise ValueError(f"{name}: sequence length {static_n} exceeds max_length {self.max_length} (the synthesized "
                             "attention has a fixed maximum length)")
        n = ops.shape(query)[1]
        logits = self._logits(query, n)
        if attention_mask is not None:
            logits = ops.where(ops.expand_dims(attention_mask, 1), logits, NEG_INF)
        weights = self.attention_dropout(ops.cast(ops.softmax(logits, axis=-1), query.dtype), training=training)
        v = self._split_heads(self.value(query), self.head_size)
        out = ops.einsum("bhqk,bkhd->bqhd", ops.broadcast_to(weights, (ops.shape(v)[0], self.heads, n, n)), v)
        out = ops.reshape(out, (ops.shape(out)[0], n, self.heads * self.head_size))
        return self.attention_output(out)

    def get_config(self):
        return {**super().get_config(), "synthesizer": self.synthesizer, "max_length": self.max_length,
                "rank": self.rank}
