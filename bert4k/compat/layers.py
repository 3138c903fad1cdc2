"""bert4keras' layer names on Keras 3: the `Loss` layer and `LayerNormalization` (a conditional LayerNorm); importing
it also lets the native `GlobalPointer` / `EfficientGlobalPointer` take bert4keras' `RoPE=` spelling."""
from __future__ import annotations

import functools

import keras
from keras import ops

from bert4k.layers.global_pointer import GlobalPointer
from bert4k.layers.norms import LayerNorm


def _exact_float(x):
    """Integer tensors → float32, which holds every id below 2**24 exactly (bert4keras' inputs were float32);
    other tensors unchanged. (The compute dtype is no choice: bfloat16 turns id 21127 into 21120.)"""
    if "int" in keras.backend.standardize_dtype(x.dtype):
        return ops.cast(x, "float32")
    return x


@keras.saving.register_keras_serializable("bert4k")
class Loss(keras.layers.Layer):
    """Subclass and implement `compute_loss(inputs, mask=None)`; the layer adds it with `add_loss` and returns
    `inputs[output_axis]` (all inputs when `output_axis` is None). Compile the model with no `loss=`.

    `compute_loss` sees integer inputs (token / segment ids) as exact float32 values, as bert4keras' float32
    inputs were, so the usual `K.sum(loss * y_mask)` works unchanged; `mask` holds the inputs' Keras masks."""

    def __init__(self, output_axis: int | list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.output_axis = output_axis
        self.supports_masking = True

    def call(self, inputs, mask=None):
        self.add_loss(self.compute_loss(keras.tree.map_structure(_exact_float, inputs), mask))
        return self._select(inputs)

    def _select(self, values):
        if self.output_axis is None or values is None:
            return values
        if isinstance(self.output_axis, list):
            return [values[i] for i in self.output_axis]
        return values[self.output_axis]

    def compute_loss(self, inputs, mask=None):
        raise NotImplementedError("subclass Loss and implement compute_loss(inputs, mask=None)")

    def compute_mask(self, inputs, mask=None):
        return self._select(mask) if isinstance(mask, (list, tuple)) else mask

    def compute_output_shape(self, input_shape):
        return self._select(input_shape)

    def get_config(self):
        return {**super().get_config(), "output_axis": self.output_axis}


@keras.saving.register_keras_serializable("bert4k")
class LayerNormalization(LayerNorm):
    """bert4keras' `LayerNormalization`: with `conditional=True` it is called on `[x, cond]` (`cond`
    `[batch, size]`, optionally through a `hidden_units` Dense first) and scales/shifts by `γ + cond·W_γ`,
    `β + cond·W_β` (both W zero-initialised)."""

    def __init__(self, center: bool = True, scale: bool = True, epsilon: float | None = None,
                 conditional: bool = False, hidden_units: int | None = None, hidden_activation="linear",
                 hidden_initializer="glorot_uniform", **kwargs):
        kwargs.pop("cond_size", None)
        super().__init__(epsilon=epsilon or 1e-12, center=center, scale=scale, **kwargs)
        self.conditional, self.hidden_units = conditional, hidden_units
        self.hidden_activation, self.hidden_initializer = hidden_activation, hidden_initializer
        self.hidden_dense = None

    def build(self, input_shape):
        if not self.conditional:
            return super().build(input_shape)
        x_shape, cond_shape = input_shape
        if len(cond_shape) != 2:
            raise ValueError(f"bert4k LayerNormalization(conditional=True): the condition must be [batch, size], got "
                             f"shape {tuple(cond_shape)}; reduce it to one vector per example first")
        if self.hidden_units:
            self.hidden_dense = keras.layers.Dense(self.hidden_units, activation=self.hidden_activation,
                                                   use_bias=False, kernel_initializer=self.hidden_initializer,
                                                   name="hidden_dense")
            self.hidden_dense.build(cond_shape)
        self.cond_size = self.hidden_units or cond_shape[-1]
        super().build(x_shape)

    def call(self, inputs):
        if not self.conditional:
            return super().call(inputs)
        x, cond = inputs
        return super().call(x, self.hidden_dense(cond) if self.hidden_dense is not None else cond)

    def compute_output_shape(self, input_shape):
        return input_shape[0] if self.conditional else input_shape

    def get_config(self):
        config = super().get_config()
        config.pop("cond_size", None)
        return {**config, "conditional": self.conditional, "hidden_units": self.hidden_units,
                "hidden_activation": self.hidden_activation, "hidden_initializer": self.hidden_initializer}


def _bert4keras_keywords(init):
    @functools.wraps(init)
    def wrapper(self, heads, head_size, **kwargs):  # named arguments: Keras' auto-config reads the signature
        if "RoPE" in kwargs:
            if "rope" in kwargs:
                raise TypeError(f"{type(self).__name__}: pass RoPE (bert4keras) or rope, not both")
            kwargs["rope"] = kwargs.pop("RoPE")
        init(self, heads, head_size, **kwargs)

    wrapper.__bert4k_compat__ = True
    return wrapper


if not getattr(GlobalPointer.__init__, "__bert4k_compat__", False):  # EfficientGlobalPointer inherits it
    GlobalPointer.__init__ = _bert4keras_keywords(GlobalPointer.__init__)


__all__ = ["LayerNormalization", "Loss"]
