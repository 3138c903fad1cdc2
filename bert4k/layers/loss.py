"""bert4keras' `Loss` layer: computes a loss from its inputs inside the graph and passes one input through."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable("bert4k")
class Loss(keras.layers.Layer):
    """Subclass and implement `compute_loss(inputs, mask=None)`; the layer adds it with `add_loss` and returns
    `inputs[output_axis]` (all inputs when `output_axis` is None). Compile the model with no `loss=`.

    `compute_loss` sees integer inputs (token / segment ids) cast to float, as bert4keras' float32 inputs were, so
    the usual `K.sum(loss * y_mask)` works unchanged."""

    def __init__(self, output_axis: int | list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.output_axis = output_axis

    def call(self, inputs, mask=None):
        as_float = keras.tree.map_structure(
            lambda x: ops.cast(x, self.compute_dtype) if "int" in str(x.dtype) else x, inputs)
        self.add_loss(self.compute_loss(as_float, mask))
        if self.output_axis is None:
            return inputs
        if isinstance(self.output_axis, list):
            return [inputs[i] for i in self.output_axis]
        return inputs[self.output_axis]

    def compute_loss(self, inputs, mask=None):
        raise NotImplementedError("subclass Loss and implement compute_loss(inputs, mask=None)")

    def get_config(self):
        return {**super().get_config(), "output_axis": self.output_axis}
