"""Writing a checkpoint array into a Keras variable without further whole copies of it."""
from __future__ import annotations

import numpy as np

BLOCK_BYTES = 8 << 20


def _tf_resource_variable(variable):
    """The plain eager TF resource variable behind `variable`, or None (other backends, distributed variables,
    graph mode: those are assigned whole)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf
    from tensorflow.python.ops.resource_variable_ops import ResourceVariable

    value = getattr(variable, "value", None)
    if not tf.executing_eagerly() or tf.distribute.has_strategy() or type(value) is not ResourceVariable:
        return None
    return value


def assign_array(variable, value: np.ndarray, block_bytes: int = BLOCK_BYTES) -> None:
    """`variable.assign(value)` (cast to the variable's dtype only if it differs).

    On TensorFlow a tensor larger than `block_bytes` is written in place in blocks of rows: TF's conversion of a
    whole numpy array holds two more copies of it, so the word embeddings alone would transiently cost three
    times their size."""
    import keras  # not at module level: `bert4k.checkpoints` (the CLI's `info`) must not import Keras

    value = np.asarray(value)
    value = value.astype(keras.backend.standardize_dtype(variable.dtype), copy=False)
    target = _tf_resource_variable(variable) if value.ndim and value.nbytes > block_bytes else None
    if target is None:
        variable.assign(value)
        return
    import tensorflow as tf

    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"assign {variable.path}: shape {tuple(value.shape)} vs variable {tuple(target.shape)}")
    rows = max(1, block_bytes // max(1, value[0].nbytes))
    for start in range(0, value.shape[0], rows):
        stop = min(start + rows, value.shape[0])
        tf.raw_ops.ResourceStridedSliceAssign(ref=target.handle, begin=[start], end=[stop], strides=[1],
                                              value=value[start:stop])
