"""One Transformer block: self-attention and feed-forward with residuals and norms in three orders."""
from __future__ import annotations

import keras

from bert4k.layers.attention_kinds import make_attention
from bert4k.layers.feed_forward import FeedForward
from bert4k.layers.norms import LayerNorm
from bert4k.layers.recompute import recompute_grad, seed_states

# What `call(..., intermediates=True)` returns after the block output, in this order: the attention output, after
# the residual dropout, the residual sum, the first norm's output (N1, wherever it applies), the feed-forward output,
# after its dropout, its residual sum, and the second norm's output (N2; post-LN and GPT2-ML: the block output).
INTERMEDIATES = ("attention", "attention_dropout", "attention_residual", "attention_norm", "feed_forward",
                 "feed_forward_dropout", "feed_forward_residual", "feed_forward_norm")


@keras.saving.register_keras_serializable("bert4k")
class TransformerBlock(keras.layers.Layer):
    """Self-attention + feed-forward.

    `norm_position`:
      - "post" (BERT): h = N1(x + Attn(x)); y = N2(h + FFN(h))
      - "pre" (GPT-2): h = x + Attn(N1(x)); y = h + FFN(N2(h))
      - "gpt2_ml" (GPT2-ML): h = x + Attn(x); y = N2(h + FFN(N1(h)))
    N1 is `attention_norm`, N2 `ffn_norm`. `attention` names the self-attention kind and `attention_options` its
    settings (`bert4k.layers.attention_kinds`). Norms take the optional condition `cond` (conditional LayerNorm).
    `recompute=True`: the block's activations are recomputed in the backward pass instead of kept (gradient
    checkpointing, `bert4k.layers.recompute`), except in cached decoding.
    """

    def __init__(self, heads: int, head_size: int, intermediate_size: int, key_size: int | None = None,
                 activation: str = "gelu_erf", norm_position: str = "post", layer_norm_eps: float = 1e-12,
                 dropout: float = 0.1, attention_dropout: float = 0.1, initializer_range: float = 0.02,
                 cond_size: int | None = None, attention: str = "softmax", attention_options: dict | None = None,
                 recompute: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.head_size = head_size
        self.intermediate_size = intermediate_size
        self.key_size = key_size
        self.activation = activation
        self.norm_position = norm_position
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.cond_size = cond_size
        self.attention_kind = attention
        self.attention_options = attention_options
        self.recompute = recompute

    def build(self, input_shape):
        dtype = self.dtype_policy
        self.attention = make_attention(
            self.attention_kind, self.heads, self.head_size, self.attention_options, key_size=self.key_size,
            dropout=self.attention_dropout, initializer_range=self.initializer_range, name="MultiHeadSelfAttention",
            dtype=dtype)
        self.attention.build(input_shape)
        self.attention_norm = LayerNorm(self.layer_norm_eps, cond_size=self.cond_size,
                                        name="MultiHeadSelfAttention-Norm", dtype=dtype)
        self.attention_norm.build(input_shape)
        self.feed_forward = FeedForward(self.intermediate_size, self.activation,
                                        initializer_range=self.initializer_range, name="FeedForward", dtype=dtype)
        self.feed_forward.build(input_shape)
        self.ffn_norm = LayerNorm(self.layer_norm_eps, cond_size=self.cond_size, name="FeedForward-Norm", dtype=dtype)
        self.ffn_norm.build(input_shape)
        self.residual_dropout = keras.layers.Dropout(self.dropout, dtype=dtype)

    def call(self, x, attention_mask=None, cond=None, cache=None, cache_index=None, cache_in_place=False,
             causal: bool = False, intermediates: bool = False, training=None):
        """Returns the block output, and with `cache` also the layer's updated `(k, v)` cache.

        `attention_mask` broadcasts to `[batch, q, k]`; `causal=True` (softmax attention only) adds the causal
        structure inside the attention (see `MultiHeadAttention`). `intermediates=True` returns
        `[output, *INTERMEDIATES]` (the tensors inside the block, from the same pass; not with cache or recompute)."""
        if intermediates and (cache is not None or self.recompute):
            raise ValueError(f"{self.name}: intermediates=True is not available with a KV cache or recompute=True")
        if self.recompute and cache is None:
            return self._recomputed(x, attention_mask, cond, causal, training)
        return self._forward(x, attention_mask, cond, cache, cache_index, cache_in_place, causal, training,
                             intermediates)

    def _forward(self, x, attention_mask, cond, cache, cache_index, cache_in_place, causal, training,
                 intermediates=False):
        extra = {"causal": True} if causal else {}

        def attend(h):
            return self.attention(h, attention_mask=attention_mask, cache=cache, cache_index=cache_index,
                                  cache_in_place=cache_in_place, training=training, **extra)

        norm1 = lambda h: self.attention_norm(h, cond=cond)
        norm2 = lambda h: self.ffn_norm(h, cond=cond)
        drop = lambda h: self.residual_dropout(h, training=training)
        new_cache = None
        n1 = norm1(x) if self.norm_position == "pre" else None
        a = attend(x if n1 is None else n1)
        if cache is not None:
            a, new_cache = a
        da = drop(a)
        s1 = x + da
        if self.norm_position == "post":
            h = n1 = norm1(s1)
        else:
            h = s1
        if self.norm_position == "pre":
            f_in = n2 = norm2(h)
        elif self.norm_position == "gpt2_ml":
            f_in = n1 = norm1(h)
        else:
            f_in = h
        f = self.feed_forward(f_in)
        df = drop(f)
        s2 = h + df
        y = s2 if self.norm_position == "pre" else norm2(s2)
        if intermediates:
            return [y, a, da, s1, n1, f, df, s2, n2 if self.norm_position == "pre" else y]
        return y if cache is None else (y, new_cache)

    def _recomputed(self, x, attention_mask, cond, causal, training):
        """`_forward` under `recompute_grad`: the differentiable tensors are its arguments, the mask a constant."""
        if cond is None:
            forward = lambda h: self._forward(h, attention_mask, None, None, None, False, causal, training)
            return recompute_grad(forward, seed_states(self))(x)
        forward = lambda h, c: self._forward(h, attention_mask, c, None, None, False, causal, training)
        return recompute_grad(forward, seed_states(self))(x, cond)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, x, *args, intermediates: bool = False, **kwargs):
        if not intermediates:
            return super().compute_output_spec(x, *args, **kwargs)
        return [keras.KerasTensor(x.shape, dtype=self.compute_dtype) for _ in range(1 + len(INTERMEDIATES))]

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "head_size": self.head_size,
                "intermediate_size": self.intermediate_size, "key_size": self.key_size,
                "activation": self.activation, "norm_position": self.norm_position,
                "layer_norm_eps": self.layer_norm_eps, "dropout": self.dropout,
                "attention_dropout": self.attention_dropout, "initializer_range": self.initializer_range,
                "cond_size": self.cond_size, "attention": self.attention_kind,
                "attention_options": self.attention_options, "recompute": self.recompute}
