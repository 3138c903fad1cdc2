"""LayerNorm (optionally conditional) and T5's RMSNorm, both computed in float32."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable("bert4k")
class LayerNorm(keras.layers.Layer):
    """LayerNorm over the last axis.

    With `cond_size`, the layer takes `(x, cond)` and uses `γ + cond·W_γ` and `β + cond·W_β`; both W are
    bias-free and zero-initialised, so the layer starts identical to the unconditioned one.
    """

    def __init__(self, epsilon: float = 1e-12, center: bool = True, scale: bool = True,
                 cond_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.cond_size = cond_size

    def build(self, input_shape):
        dim = input_shape[-1]
        if self.scale:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        if self.center:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")
        if self.cond_size:
            if self.scale:
                self.gamma_dense = self.add_weight(name="gamma_dense", shape=(self.cond_size, dim), initializer="zeros")
            if self.center:
                self.beta_dense = self.add_weight(name="beta_dense", shape=(self.cond_size, dim), initializer="zeros")

    def call(self, x, cond=None):
        x32 = ops.cast(x, "float32")
        gamma = ops.cast(self.gamma, "float32") if self.scale else None
        beta = ops.cast(self.beta, "float32") if self.center else None
        y = self._fused(x32, gamma, beta)  # the backend's fused kernel (one on PyTorch)
        if self.cond_size and cond is not None:  # + x̂·(cond·W_γ) + cond·W_β: exactly 0 while the W are zero
            cond = ops.expand_dims(ops.cast(cond, "float32"), 1)  # [batch, 1, cond]
            if self.scale:
                y = y + self._fused(x32, None, None) * ops.matmul(cond, ops.cast(self.gamma_dense, "float32"))
            if self.center:
                y = y + ops.matmul(cond, ops.cast(self.beta_dense, "float32"))
        return ops.cast(y, x.dtype)

    def _fused(self, x, gamma, beta):
        return ops.layer_normalization(x, gamma, beta, axis=-1, epsilon=self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, "cond_size": self.cond_size}


@keras.saving.register_keras_serializable("bert4k")
class RMSNorm(LayerNorm):
    """T5 norm: x / sqrt(mean(x²) + ε) · γ, no mean subtraction and no bias (float32)."""

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        kwargs.setdefault("center", False)
        super().__init__(epsilon=epsilon, **kwargs)

    def _fused(self, x, gamma, beta):
        y = ops.rms_normalization(x, gamma, axis=-1, epsilon=self.epsilon)
        return y if beta is None else y + beta
