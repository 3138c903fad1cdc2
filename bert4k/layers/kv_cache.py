"""Writing new keys / values into a static KV cache along its length axis (axis 1: `[batch * heads, length, size]`
for `MultiHeadAttention`, `[batch, length, heads, size]` for talking heads), and the cache rows of batch rows."""
from __future__ import annotations

import keras
from keras import ops


def write_cache(cache, update, index, in_place: bool = False):
    """`cache[:, index:index + q] = update` (`update`: the cache's shape with `q` on axis 1); returns the updated
    cache.

    By default the write is functional (`slice_update`): `cache` itself is never modified, whatever the backend
    and wherever it was made (a cache allocated inside a compiled function may be a constant shared by every call).

    `in_place=True` is for a buffer the caller owns and never reads again under its old name (the decoding engine):
    on TensorFlow outside XLA the rows are written in place with `InplaceUpdate`, on PyTorch with `index_copy_` (no
    host read of `index`), so a step costs the new rows instead of a copy of the whole cache. JAX arrays are immutable: there it is
    `slice_update`, which XLA performs in place on a loop-carried or donated buffer. Do not pass `in_place=True`
    in a function TensorFlow compiles with XLA (XLA cannot compile `InplaceUpdate`).
    """
    update = ops.cast(update, cache.dtype)
    backend = keras.backend.backend()
    if not in_place or backend not in ("torch", "tensorflow"):
        return ops.slice_update(cache, [0, index] + [0] * (len(cache.shape) - 2), update)
    if backend == "torch":
        import torch

        rows = torch.arange(update.shape[1], device=cache.device) + torch.as_tensor(index, device=cache.device)
        return cache.index_copy_(1, rows, update)
    import tensorflow as tf

    shape = tf.shape(cache)
    batch, length, q = shape[0], shape[1], tf.shape(update)[1]
    rows = tf.reshape(tf.range(batch)[:, None] * length + tf.cast(index, tf.int32) + tf.range(q)[None, :], [-1])
    flat = tf.reshape(cache, tf.concat([[batch * length], shape[2:]], 0))
    values = tf.reshape(update, tf.concat([[batch * q], shape[2:]], 0))
    return tf.reshape(tf.raw_ops.InplaceUpdate(x=flat, i=rows, v=values), shape)


def cache_rows(rows, heads: int):
    """The cache rows (`[batch * heads, ...]` layout) of batch rows `rows` (`[n]` int32): `[n * heads]`."""
    rows = ops.cast(rows, "int32")
    return ops.reshape(rows[:, None] * heads + ops.arange(heads, dtype="int32")[None, :], (-1,))
