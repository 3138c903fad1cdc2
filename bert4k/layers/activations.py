"""Activation functions by the exact name the config resolved to (see `config.ACTIVATIONS`)."""
from __future__ import annotations

import math
from collections.abc import Callable

from keras import ops


def gelu_erf(x):
    """Exact GELU, x·Φ(x) (HF `gelu`, Google BERT)."""
    return 0.5 * x * (1.0 + ops.erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    """Tanh approximation of GELU (GPT-2 `gelu_new`, T5.1.1 gated-gelu)."""
    return 0.5 * x * (1.0 + ops.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * ops.power(x, 3))))


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
