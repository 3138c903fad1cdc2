"""Compiling the decoding functions the backend's way, once per adapter and key.

- TensorFlow: `tf.function`, XLA when `jit` (`reduce_retracing` for functions whose shapes vary, e.g. the prompt).
- JAX: `jax.jit` of a stateless function: the model's variables are arguments (mapped in with
  `keras.StatelessScope`), not constants folded into the program; `donate` hands the first argument's buffers
  (the decoding state) to XLA, so the cache is updated in place.
- PyTorch: eager, under `torch.no_grad()` (the in-place cache writes are explicit there); with `direct`, the
  model's float32 layers run their `call` without Keras' `Layer.__call__` machinery (`direct_calls`).
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import keras

from bert4k.generation.direct_calls import direct_calls


def backend() -> str:
    return keras.backend.backend()


def default_in_place(jit: bool) -> bool:
    """Whether the engine's cache writes may be in place: TensorFlow outside XLA and PyTorch (JAX: XLA decides)."""
    return backend() == "torch" or (backend() == "tensorflow" and not jit)


def compiled(adapter, key, make: Callable[[], Callable], jit: bool, *, donate: bool = False,
             relaxed: bool = False, direct: bool = True) -> Callable:
    """`make()` compiled once per `(adapter, key)` (cached on the adapter). `direct`: on PyTorch, the adapter's model
    runs its layers' `call` directly while the function runs (for the decoding steps; not the prefill, which takes
    host arrays)."""
    cache = adapter.__dict__.setdefault("_bert4k_compiled", {})
    full_key = (key, jit, donate, relaxed, direct)
    if full_key not in cache:
        cache[full_key] = _compile(make(), jit, adapter, donate, relaxed, direct)
    return cache[full_key]


def _compile(fn: Callable, jit: bool, adapter, donate: bool, relaxed: bool, direct: bool) -> Callable:
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=bool(jit), reduce_retracing=relaxed)
    if name == "jax":
        return _jax_compile(fn, list(getattr(adapter, "variables", [])), donate)
    if name == "torch":
        import torch

        @functools.wraps(fn)
        def no_grad(*args):
            model = getattr(adapter, "model", None) if direct else None
            layers = direct_calls(model) if isinstance(model, keras.Layer) else contextlib.nullcontext()
            with torch.no_grad(), layers:
                return fn(*args)
        return no_grad
    return fn


def _jax_compile(fn: Callable, variables: list, donate: bool) -> Callable:
    import jax

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(stateless, donate_argnums=(1,) if donate else ())

    @functools.wraps(fn)
    def call(*args):
        return jitted([v.value for v in variables], *args)
    return call
