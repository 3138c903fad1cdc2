"""Position-wise feed-forward: Dense → activation → Dense, or the gated T5.1.1 form."""
from __future__ import annotations

import keras

from bert4k.layers.activations import get_activation
from bert4k.layers.initializers import truncated_normal
from bert4k.layers.linear import Linear


@keras.saving.register_keras_serializable("bert4k")
class FeedForward(keras.layers.Layer):
    """`out(act(in(x)))`; with `gated=True`, `out(act(in(x)) * in_gate(x))` (T5.1.1 / mT5)."""

    def __init__(self, units: int, activation: str = "gelu_erf", use_bias: bool = True, gated: bool = False,
                 initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = activation
        self.use_bias = use_bias
        self.gated = gated
        self.initializer_range = initializer_range
        self.act = get_activation(activation)

    def _dense(self, units, name):
        return Linear(units, use_bias=self.use_bias, name=name, dtype=self.dtype_policy,
                      kernel_initializer=truncated_normal(self.initializer_range))

    def build(self, input_shape):
        self.inner = self._dense(self.units, "intermediate")
        self.inner.build(input_shape)
        if self.gated:
            self.gate = self._dense(self.units, "gate")
            self.gate.build(input_shape)
        self.outer = self._dense(input_shape[-1], "output")
        self.outer.build((*input_shape[:-1], self.units))

    def call(self, x):
        h = self.act(self.inner(x))
        if self.gated:
            h = h * self.gate(x)
        return self.outer(h)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias, "gated": self.gated, "initializer_range": self.initializer_range}
