"""Activation functions by the exact name the config resolved to (see `config.ACTIVATIONS`)."""
from __future__ import annotations

from collections.abc import Callable

from keras import ops


def gelu_erf(x):
    """Exact GELU, x·Φ(x) (HF `gelu`), on the backend's fused kernel."""
    return ops.gelu(x, approximate=False)


def gelu_tanh(x):
    """Tanh approximation 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) (GPT-2 `gelu_new`, T5.1.1 gated-gelu)."""
    return ops.gelu(x, approximate=True)


def linear(x):
    return x


ACTIVATION_FUNCTIONS: dict[str, Callable] = {
    "gelu_erf": gelu_erf,
    "gelu_tanh": gelu_tanh,
    "relu": ops.relu,
    "tanh": ops.tanh,
    "silu": ops.silu,
    "linear": linear,
}


def get_activation(name: str) -> Callable:
    try:
        return ACTIVATION_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATION_FUNCTIONS)}") from None
