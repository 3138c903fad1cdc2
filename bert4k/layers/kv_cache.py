"""Writing new keys / values into a static KV cache `[batch, length, heads, size]`."""
from __future__ import annotations

import contextlib
import threading

import keras
from keras import ops

_STATE = threading.local()


@contextlib.contextmanager
def functional_cache_writes():
    """While active (e.g. while tracing a function XLA will compile), `write_cache` uses `slice_update`."""
    previous = getattr(_STATE, "functional", False)
    _STATE.functional = True
    try:
        yield
    finally:
        _STATE.functional = previous


def write_cache(cache, update, index):
    """`cache[:, index:index + q] = update` (`update`: `[batch, q, heads, size]`); returns the updated cache.

    On the TensorFlow backend the rows are written in place (TF's `InplaceUpdate` aliases its input), so a decoding
    step costs the new rows, not a copy of every layer's whole cache (`slice_update` = XlaDynamicUpdateSlice copies
    it: ~0.5 ms per layer per step at batch 4, GPT-2-small, on the 2-core CPUs). The tensor passed as `cache` is
    modified: use only the returned one afterwards (decoding states never go back to an old cache). Under
    `functional_cache_writes()` (XLA cannot compile `InplaceUpdate`) and on other backends it is `slice_update`.
    """
    update = ops.cast(update, cache.dtype)
    if keras.backend.backend() != "tensorflow" or getattr(_STATE, "functional", False):
        return ops.slice_update(cache, [0, index, 0, 0], update)
    import tensorflow as tf

    shape = tf.shape(cache)
    batch, length, q = shape[0], shape[1], tf.shape(update)[1]
    rows = tf.reshape(tf.range(batch)[:, None] * length + tf.cast(index, tf.int32) + tf.range(q)[None, :], [-1])
    flat = tf.reshape(cache, tf.concat([[batch * length], shape[2:]], 0))
    values = tf.reshape(update, tf.concat([[batch * q], shape[2:]], 0))
    return tf.reshape(tf.raw_ops.InplaceUpdate(x=flat, i=rows, v=values), shape)
