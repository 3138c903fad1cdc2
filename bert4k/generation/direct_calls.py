"""PyTorch decoding without Keras' per-layer call machinery: inside `direct_calls(model)`, calling one of the model's
layers from this thread runs its `call` directly.

Eager PyTorch pays Keras' `Layer.__call__` (input conversion, masks, call context, autocast, name scopes) on every
layer of every step, ≈ 170 calls per token for GPT-2-small. A decoding step needs none of it when every layer is
float32 throughout (nothing to convert or autocast), built, not quantized, not rematerialised, and takes no Keras
mask: those layers get a subclass whose `__call__` goes straight to `call` for the calling thread (other threads
still get `Layer.__call__`); the classes are restored on exit. Every other layer keeps its class.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Iterator

import keras

_DIRECT_CLASSES: dict[type, type] = {}


def _direct_class(cls: type) -> type:
    """`cls` with a `__call__` that runs `call` directly on the thread that entered `direct_calls`."""
    if cls not in _DIRECT_CLASSES:
        parameters = inspect.signature(cls.call).parameters
        takes_training = "training" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())

        def __call__(self, *args, **kwargs):
            if threading.get_ident() == self.__dict__.get("_bert4k_direct_thread"):
                if not takes_training:  # Keras passes `training` only to a `call` that takes it
                    kwargs.pop("training", None)
                return self.call(*args, **kwargs)
            return cls.__call__(self, *args, **kwargs)

        _DIRECT_CLASSES[cls] = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__,
                                                            "__qualname__": cls.__qualname__})
    return _DIRECT_CLASSES[cls]


@functools.cache
def _takes_keras_mask(cls: type) -> bool:
    """Whether `Layer.__call__` may fill a `mask` / `<argument>_mask` argument of `cls.call` from its inputs."""
    return any(name == "mask" or (name.endswith("_mask") and name != "attention_mask")
               for name in inspect.signature(cls.call).parameters)


def _can_call_directly(layer) -> bool:
    policy = layer.dtype_policy
    return (layer.built and not isinstance(layer, keras.Model) and type(layer) not in _DIRECT_CLASSES.values()
            and policy.compute_dtype == policy.variable_dtype == "float32"
            and getattr(layer, "quantization_mode", None) is None and not getattr(layer, "_remat_mode", None)
            and not _takes_keras_mask(type(layer)))


@contextlib.contextmanager
def direct_calls(model) -> Iterator[None]:
    """Run `model`'s eligible layers' `call` directly (this thread only) for the duration of the block."""
    layers = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
              if _can_call_directly(layer)]
    thread = threading.get_ident()
    for layer in layers:  # object.__setattr__: past Keras' and torch's attribute tracking
        layer.__dict__["_bert4k_direct_thread"] = thread
        object.__setattr__(layer, "__class__", _direct_class(type(layer)))
    try:
        yield
    finally:
        for layer in layers:
            object.__setattr__(layer, "__class__", type(layer).__mro__[1])
            layer.__dict__.pop("_bert4k_direct_thread", None)
