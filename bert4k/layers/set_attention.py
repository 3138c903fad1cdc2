"""Induced set attention (ISAB, Lee et al. 2019, used by SetRank): a set of n items attends through m learned
inducing points, O(n·m) instead of O(n²), and stays permutation-equivariant."""
from __future__ import annotations

import keras
from keras import ops

from bert4k.layers.attention import MultiHeadAttention
from bert4k.layers.feed_forward import FeedForward
from bert4k.layers.initializers import truncated_normal
from bert4k.layers.norms import LayerNorm


@keras.saving.register_keras_serializable("bert4k")
class InducedSetAttention(keras.layers.Layer):
    """ISAB(X) = MAB(X, MAB(I, X)) with I `[m, d]` learned; MAB(Q, K) = N2(H + FFN(H)), H = N1(Q + Attn(Q, K)).

    `valid` (`[batch, n]`, True = real item) keeps padded items out of the inducing step, so they never change the
    outputs of real items (their own outputs are meaningless and should be ignored).
    """

    def __init__(self, heads: int, head_size: int, inducing_points: int, intermediate_size: int,
                 activation: str = "gelu_erf", dropout: float = 0.1, layer_norm_eps: float = 1e-12,
                 initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.head_size = head_size
        self.inducing_points = inducing_points
        self.intermediate_size = intermediate_size
        self.activation = activation
        self.dropout = dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range

    def _mab(self, name, dim):
        attention = MultiHeadAttention(self.heads, self.head_size, initializer_range=self.initializer_range,
                                       name=f"{name}-Attention", dtype=self.dtype_policy)
        attention.build((None, None, dim), (None, None, dim))
        ffn = FeedForward(self.intermediate_size, self.activation, initializer_range=self.initializer_range,
                          name=f"{name}-FeedForward", dtype=self.dtype_policy)
        ffn.build((None, None, dim))
        norms = [LayerNorm(self.layer_norm_eps, name=f"{name}-Norm{i}", dtype=self.dtype_policy) for i in (1, 2)]
        for norm in norms:
            norm.build((None, None, dim))
        return attention, ffn, norms

    def build(self, x_shape, valid_shape=None):
        dim = x_shape[-1]
        self.inducing = self.add_weight(name="inducing_points", shape=(self.inducing_points, dim),
                                        initializer=truncated_normal(self.initializer_range))
        self.induce = self._mab("Induce", dim)
        self.broadcast = self._mab("Broadcast", dim)
        self.residual_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def _apply(self, mab, q, kv, mask, training):
        attention, ffn, (norm1, norm2) = mab
        drop = lambda h: self.residual_dropout(h, training=training)
        h = norm1(q + drop(attention(q, key_value=kv, attention_mask=mask, training=training)))
        return norm2(h + drop(ffn(h)))

    def call(self, x, valid=None, training=None):
        batch, n = ops.shape(x)[0], ops.shape(x)[1]
        inducing = ops.broadcast_to(ops.cast(self.inducing, x.dtype)[None], (batch, self.inducing_points,
                                                                             ops.shape(x)[2]))
        mask = None
        if valid is not None:
            mask = ops.broadcast_to(ops.cast(valid, "bool")[:, None, :], (batch, self.inducing_points, n))
        summary = self._apply(self.induce, inducing, x, mask, training)
        return self._apply(self.broadcast, x, summary, None, training)

    def compute_output_shape(self, x_shape, valid_shape=None):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "head_size": self.head_size,
                "inducing_points": self.inducing_points, "intermediate_size": self.intermediate_size,
                "activation": self.activation, "dropout": self.dropout, "layer_norm_eps": self.layer_norm_eps,
                "initializer_range": self.initializer_range}
