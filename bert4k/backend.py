"""bert4keras' `backend` entry point on Keras 3: `keras`, a small `K` shim over `keras.ops`, and `set_gelu`."""
from __future__ import annotations

import types

import keras
from keras import ops

from bert4k import config as _config


def _int_shape(x):
    return tuple(x.shape)


def _batch_dot(x, y, axes=None):
    """Batched matrix product (the common bert4keras use: `[b, n, d] · [b, d, m]`)."""
    if axes is not None:
        x_axis, y_axis = axes if isinstance(axes, (list, tuple)) else (axes, axes)
        if x_axis != ops.ndim(x) - 1:
            x = ops.moveaxis(x, x_axis, -1)
        if y_axis != ops.ndim(y) - 2:
            y = ops.moveaxis(y, y_axis, -2)
    return ops.matmul(x, y)


K = types.SimpleNamespace(
    # shapes and types
    shape=ops.shape, int_shape=_int_shape, ndim=ops.ndim, dtype=lambda x: x.dtype, cast=ops.cast,
    floatx=keras.config.floatx, epsilon=keras.config.epsilon,
    # element-wise and reductions
    abs=ops.abs, exp=ops.exp, log=ops.log, sqrt=ops.sqrt, square=ops.square, pow=ops.power, sign=ops.sign,
    minimum=ops.minimum, maximum=ops.maximum, clip=ops.clip, round=ops.round, equal=ops.equal,
    not_equal=ops.not_equal, greater=ops.greater, less=ops.less, sum=ops.sum, mean=ops.mean, max=ops.max,
    min=ops.min, prod=ops.prod, any=ops.any, all=ops.all, argmax=ops.argmax, argmin=ops.argmin,
    cumsum=ops.cumsum, logsumexp=ops.logsumexp, softmax=ops.softmax, sigmoid=ops.sigmoid, relu=ops.relu,
    tanh=ops.tanh, l2_normalize=lambda x, axis=-1: ops.normalize(x, axis=axis), stop_gradient=ops.stop_gradient,
    # structure
    reshape=ops.reshape, expand_dims=ops.expand_dims, squeeze=ops.squeeze, concatenate=ops.concatenate,
    stack=ops.stack, tile=ops.tile, repeat=ops.repeat, permute_dimensions=ops.transpose, transpose=ops.transpose,
    gather=ops.take, one_hot=ops.one_hot, arange=ops.arange, zeros_like=ops.zeros_like, ones_like=ops.ones_like,
    zeros=ops.zeros, ones=ops.ones, switch=ops.where, dot=ops.matmul, batch_dot=_batch_dot,
    # losses
    sparse_categorical_crossentropy=keras.losses.sparse_categorical_crossentropy,
    categorical_crossentropy=keras.losses.categorical_crossentropy,
    binary_crossentropy=keras.losses.binary_crossentropy,
    # variables
    get_value=lambda v: keras.ops.convert_to_numpy(v), set_value=lambda v, value: v.assign(value),
)


def set_gelu(version: str) -> None:
    """Make `"hidden_act": "gelu"` in configs mean the exact (`"erf"`) or tanh-approximated (`"tanh"`) GELU."""
    version = version.lower()
    if version not in ("erf", "tanh"):
        raise ValueError(f"set_gelu: version must be 'erf' or 'tanh', got {version!r}")
    _config.ACTIVATIONS["gelu"] = "gelu_erf" if version == "erf" else "gelu_tanh"


__all__ = ["K", "keras", "set_gelu"]
