"""Writing new keys / values into a static KV cache `[batch, length, heads, size]`."""
from __future__ import annotations

import keras
from keras import ops


def write_cache(cache, update, index, in_place: bool = False):
    """`cache[:, index:index + q] = update` (`update`: `[batch, q, heads, size]`); returns the updated cache.

    By default the write is functional (`slice_update`): `cache` itself is never modified, whatever the backend
    and wherever it was made (a cache allocated inside a compiled function may be a constant shared by every call).

    `in_place=True` is for a buffer the caller owns and never reads again under its old name (the decoding engine):
    on TensorFlow outside XLA the rows are written in place with `InplaceUpdate`, on PyTorch with `copy_` into the
    slice, so a step costs the new rows instead of a copy of the whole cache. JAX arrays are immutable: there it is
    `slice_update`, which XLA performs in place on a loop-carried or donated buffer. Do not pass `in_place=True`
    in a function TensorFlow compiles with XLA (XLA cannot compile `InplaceUpdate`).
    """
    update = ops.cast(update, cache.dtype)
    backend = keras.backend.backend()
    if not in_place or backend == "jax":
        return ops.slice_update(cache, [0, index, 0, 0], update)
    if backend == "torch":
        cache.narrow(1, int(index), update.shape[1]).copy_(update)
        return cache
    if backend != "tensorflow":
        return ops.slice_update(cache, [0, index, 0, 0], update)
    import tensorflow as tf

    shape = tf.shape(cache)
    batch, length, q = shape[0], shape[1], tf.shape(update)[1]
    rows = tf.reshape(tf.range(batch)[:, None] * length + tf.cast(index, tf.int32) + tf.range(q)[None, :], [-1])
    flat = tf.reshape(cache, tf.concat([[batch * length], shape[2:]], 0))
    values = tf.reshape(update, tf.concat([[batch * q], shape[2:]], 0))
    return tf.reshape(tf.raw_ops.InplaceUpdate(x=flat, i=rows, v=values), shape)
