"""Cheap checks of a model's integer inputs on the host, before they reach a gather: ids in range, lengths within
the position table. Only concrete arrays are checked (numpy, lists, eager tensors), never symbolic or traced ones,
so compiled graphs are unchanged."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np


@dataclasses.dataclass(frozen=True)
class Limit:
    """Valid values `[0, high)` of an id input (`what` names the limit) and its longest length (None: any)."""

    high: int
    what: str
    max_length: int | None = None
    length_what: str = "max_position_embeddings"


def _concrete(x) -> np.ndarray | None:
    """`x` as numpy if it is concrete data, else None."""
    if isinstance(x, (np.ndarray, list, tuple)):
        try:
            return np.asarray(x)
        except ValueError:
            return None
    if x is None or isinstance(x, keras.KerasTensor) or not keras.ops.is_tensor(x):
        return None
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return x.numpy() if tf.executing_eagerly() and hasattr(x, "numpy") else None
    if backend == "jax":
        import jax

        return None if isinstance(x, jax.core.Tracer) else np.asarray(x)
    if backend == "torch":
        import torch

        return None if torch.compiler.is_compiling() else x.detach().cpu().numpy()
    return None


def _by_name(model: keras.Model, inputs) -> dict:
    names = [t.name for t in model.inputs]
    if isinstance(inputs, dict):
        return inputs
    if isinstance(inputs, (list, tuple)) and len(names) > 1:
        return dict(zip(names, inputs))
    return {names[0]: inputs}


def check_inputs(model: keras.Model, inputs, limits: dict[str, Limit]) -> None:
    """Raise `ValueError` naming the input, the bad value and the limit when an id input is out of range."""
    for name, value in _by_name(model, inputs).items():
        limit = limits.get(name)
        array = _concrete(value) if limit is not None else None
        if array is None or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
            continue
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= limit.high:
            bad = low if low < 0 else high
            raise ValueError(f"{model.name}: input '{name}' holds id {bad}, outside [0, {limit.high}) "
                             f"({limit.what} = {limit.high})")
        if limit.max_length is not None and array.ndim >= 2 and array.shape[-1] > limit.max_length:
            raise ValueError(f"{model.name}: input '{name}' has {array.shape[-1]} positions, more than "
                             f"{limit.length_what} = {limit.max_length}: truncate or split the input")
