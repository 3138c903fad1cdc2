"""`Linear`: a Keras `Dense` whose PyTorch call is one `addmm` (product and bias in one kernel).

Keras' `Dense` runs `matmul` then `add`: on PyTorch two kernels (and two dispatches per decoded token), the second a
full pass over the output; HF's `nn.Linear` fuses them. Every other backend (XLA fuses the add itself), LoRA,
quantised calls and the weights (`kernel` `[in, out]`, `bias`) are `Dense`'s own.
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable("bert4k")
class Linear(keras.layers.Dense):
    """`Dense`, fused into `torch.addmm` on the PyTorch backend when it has a bias."""

    def call(self, inputs, training=None):
        if keras.backend.backend() != "torch" or self.bias is None:
            return super().call(inputs, training=training)
        import torch

        kernel = ops.convert_to_tensor(self.kernel)
        flat = torch.addmm(ops.convert_to_tensor(self.bias), inputs.reshape(-1, kernel.shape[0]), kernel)
        x = flat.reshape(*inputs.shape[:-1], kernel.shape[1])
        return x if self.activation is None else self.activation(x)
