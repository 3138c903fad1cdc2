"""A fresh initializer instance per weight.

Keras 3 fixes an unseeded initializer's seed when the instance is made, so one instance shared by the
Q and K kernels gives them identical values. Every weight here asks for its own instance.

Inside `bert4k.checkpoints.deferred.deferred_initialization()` these initializers give zeros and record the call
instead: a model about to be loaded from a checkpoint does not draw random values that the load overwrites. Since
each instance keeps its seed, the values it would have given can still be drawn afterwards, for the weights the
checkpoint does not hold.
"""
from __future__ import annotations

import contextvars
import dataclasses

import keras
from keras.src.backend.common.name_scope import current_path

# the list that records deferred calls, when deferring
DEFERRED_CALLS: contextvars.ContextVar[list | None] = contextvars.ContextVar("bert4k_deferred_calls", default=None)


@dataclasses.dataclass(frozen=True)
class DeferredCall:
    """One initializer call answered with zeros: the variable's parent path (its layer), shape and dtype."""

    parent_path: str
    shape: tuple[int, ...]
    dtype: str | None
    initializer: keras.initializers.Initializer


@keras.saving.register_keras_serializable("bert4k")
class TruncatedNormal(keras.initializers.TruncatedNormal):
    """Keras' truncated normal initializer, which gives zeros while a deferred initialization records calls."""

    def __call__(self, shape, dtype=None):
        calls = DEFERRED_CALLS.get()
        if calls is None:
            return super().__call__(shape, dtype=dtype)
        calls.append(DeferredCall(current_path(), tuple(shape), dtype, self))
        return keras.ops.zeros(shape, dtype=dtype)


def truncated_normal(stddev: float = 0.02) -> keras.initializers.Initializer:
    return TruncatedNormal(stddev=stddev)
