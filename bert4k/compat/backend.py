"""bert4keras' `backend` on Keras 3: `keras`, a `K` shim over `keras.ops`, `set_gelu` and the helpers its examples use.

Importing this module (i.e. `bert4k.backend`) also lets every `keras.Model` save and load weights under a bare
prefix, as tf.keras did: `model.save_weights("best_model.weights")` writes `best_model.weights.weights.h5` and
`load_weights("best_model.weights")` reads it back (files are written under a temporary name, then renamed).
Keras 3 alone demands names ending in `.weights.h5`. Likewise `model.save("test.model")` / `load_model("test.model")`
map to `test.model.keras`, and layers get back tf.keras' `get_output_at(i)` / `get_input_at(i)`.
"""
from __future__ import annotations

import functools
import os

import keras
from keras import ops

from bert4k import config as _config
from bert4k.compat import training as _training

WEIGHTS_SUFFIX = ".weights.h5"
_KERAS_3_SUFFIXES = (WEIGHTS_SUFFIX, ".keras", ".h5", ".hdf5")


def weights_file(filepath: str | os.PathLike, for_loading: bool) -> str | os.PathLike:
    """The real file behind a bert4keras-style weights name: a bare prefix (`best_model.weights`) gets
    `.weights.h5` appended; names Keras 3 reads itself pass through (for loading, also any existing file).

    Raises naming the file when the prefix is a tf.keras TF-format checkpoint (`<prefix>.index`), which Keras 3
    cannot read."""
    path = os.fspath(filepath)
    if path.endswith(WEIGHTS_SUFFIX) or (not for_loading and path.endswith(".keras")):
        return filepath
    if for_loading:
        if path.endswith(_KERAS_3_SUFFIXES) and os.path.exists(path):
            return filepath
        if not os.path.exists(path + WEIGHTS_SUFFIX) and os.path.exists(path + ".index"):
            raise ValueError(f"load_weights({path!r}): {path}.index is a tf.keras TF-format checkpoint, which "
                             "Keras 3 cannot read; re-save the weights with bert4k (save_weights writes "
                             f"{path}{WEIGHTS_SUFFIX})")
    return path + WEIGHTS_SUFFIX


def _save_then_rename(method, model, final: str, suffix: str, *args, **kwargs):
    """`method(model, <temporary beside final>, ...)`, then rename it to `final`: an interrupted save never leaves a
    half-written file behind. `suffix` (which Keras demands) ends both names."""
    temporary = f"{final[:-len(suffix)]}.tmp{os.getpid()}{suffix}"
    try:
        result = method(model, temporary, *args, **kwargs)
        os.replace(temporary, final)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return result


def _bare_prefix(method, for_loading: bool):
    @functools.wraps(method)
    def wrapper(self, filepath, *args, **kwargs):
        if not isinstance(filepath, (str, os.PathLike)):
            return method(self, filepath, *args, **kwargs)
        filepath = weights_file(filepath, for_loading)
        if for_loading or not os.fspath(filepath).endswith(WEIGHTS_SUFFIX):
            return method(self, filepath, *args, **kwargs)
        return _save_then_rename(method, self, os.fspath(filepath), WEIGHTS_SUFFIX, *args, **kwargs)

    wrapper.__bert4k_bare_prefix__ = True
    return wrapper


def _install_bare_prefix_weights() -> None:
    """Wrap `keras.Model.save_weights` / `load_weights` once so bare prefixes map to real files."""
    if getattr(keras.Model.save_weights, "__bert4k_bare_prefix__", False):
        return
    keras.Model.save_weights = _bare_prefix(keras.Model.save_weights, for_loading=False)
    keras.Model.load_weights = _bare_prefix(keras.Model.load_weights, for_loading=True)


_install_bare_prefix_weights()

MODEL_SUFFIX = ".keras"


def model_file(filepath: str | os.PathLike, for_loading: bool) -> str | os.PathLike:
    """The real file behind a tf.keras-style whole-model name: a name without a Keras 3 suffix (`test.model`, which
    tf.keras saved as a SavedModel folder) gets `.keras` appended; Keras 3 names pass through, and for loading, so
    does any existing file. Raises naming the folder when it is a tf.keras SavedModel, which Keras 3 cannot load."""
    path = os.fspath(filepath)
    if path.endswith(_KERAS_3_SUFFIXES) or (for_loading and os.path.isfile(path)):
        return filepath
    if for_loading and not os.path.exists(path + MODEL_SUFFIX) and os.path.isdir(path):
        raise ValueError(f"load_model({path!r}): {path} is a folder (a tf.keras SavedModel), which Keras 3 cannot "
                         f"load; re-save the model with bert4k (model.save({path!r}) writes {path}{MODEL_SUFFIX})")
    return path + MODEL_SUFFIX


def _bare_model_save(method):
    @functools.wraps(method)
    def save(self, filepath, *args, **kwargs):
        if not isinstance(filepath, (str, os.PathLike)) or os.fspath(filepath).endswith(_KERAS_3_SUFFIXES):
            return method(self, filepath, *args, **kwargs)
        return _save_then_rename(method, self, os.fspath(model_file(filepath, for_loading=False)), MODEL_SUFFIX,
                                 *args, **kwargs)

    save.__bert4k_bare_prefix__ = True
    return save


def _bare_model_load(function):
    @functools.wraps(function)
    def load_model(filepath, *args, **kwargs):
        if isinstance(filepath, (str, os.PathLike)):
            filepath = model_file(filepath, for_loading=True)
        return function(filepath, *args, **kwargs)

    load_model.__bert4k_bare_prefix__ = True
    return load_model


def _install_bare_model_files() -> None:
    """`model.save("test.model")` / `keras.models.load_model("test.model")` as tf.keras scripts call them: the name
    maps to `test.model.keras` both ways (written under a temporary name, then renamed)."""
    if getattr(keras.Model.save, "__bert4k_bare_prefix__", False):
        return
    keras.Model.save = _bare_model_save(keras.Model.save)
    load = _bare_model_load(keras.saving.load_model)
    keras.models.load_model = keras.saving.load_model = load


_install_bare_model_files()


def _node_tensors(layer, node_index: int, which: str):
    nodes = layer._inbound_nodes
    if not nodes:
        raise ValueError(f"layer {layer.name!r}: get_{which}_at({node_index}): the layer has never been called")
    try:
        node = nodes[node_index]
    except IndexError:
        raise ValueError(f"layer {layer.name!r}: get_{which}_at({node_index}): the layer was called {len(nodes)} "
                         f"time(s); node indices run from {-len(nodes)} to {len(nodes) - 1}") from None
    tensors = node.output_tensors if which == "output" else node.input_tensors
    return tensors[0] if len(tensors) == 1 else list(tensors)


def _install_node_accessors() -> None:
    """tf.keras' `layer.get_output_at(i)` / `get_input_at(i)` (removed in Keras 3): the output / input tensors of
    the layer's i-th call (e.g. the i-th application of ALBERT's shared block)."""
    if hasattr(keras.layers.Layer, "get_output_at"):
        return
    keras.layers.Layer.get_output_at = lambda self, node_index: _node_tensors(self, node_index, "output")
    keras.layers.Layer.get_input_at = lambda self, node_index: _node_tensors(self, node_index, "input")


_install_node_accessors()


def _install_list_inputs() -> None:
    """tf.keras turned nested Python lists into arrays: `model.predict([[token_ids], [segment_ids]])` works on every
    `keras.Model` (bert4keras' examples wrap the Transformer in plain `keras.models.Model`s), as on bert4k's."""
    from bert4k.models.python_inputs import as_input_arrays

    if getattr(keras.Model.predict, "__bert4k_lists__", False):
        return
    predict = keras.Model.predict

    @functools.wraps(predict)
    def predict_lists(self, x, *args, **kwargs):
        return predict(self, as_input_arrays(x, len(self.inputs or ())), *args, **kwargs)

    predict_lists.__bert4k_lists__ = True
    keras.Model.predict = predict_lists


_install_list_inputs()


_GRAPH_ONLY = {
    "placeholder": "use keras.Input",
    "update": "use variable.assign",
    "get_session": "Keras 3 has no session; run eagerly",
}


class _Backend:
    """`K`: the Keras 2 backend functions bert4keras scripts call, on `keras.ops`. Graph-mode functions that
    Keras 3 has no counterpart for raise `NotImplementedError` naming what to use instead."""

    def __getattr__(self, name: str):
        if name in _GRAPH_ONLY:
            raise NotImplementedError(f"bert4k.backend.K.{name}: Keras 3 has no graph-mode {name}; "
                                      f"{_GRAPH_ONLY[name]}")
        raise AttributeError(f"bert4k.backend.K has no {name!r}; use keras.ops.{name} if it exists "
                             "(K covers the Keras 2 backend functions bert4keras' examples use)")


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


def _random_binomial(shape, p=0.0, dtype=None, seed=None):
    return ops.cast(keras.random.uniform(shape, seed=seed) < p, dtype or keras.config.floatx())


def _training_flag():
    """The `training` value of the Keras layer call in progress (Keras 3 passes it down the call context, the
    counterpart of tf.keras' global learning phase); None outside a call."""
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    return None if context is None else context.get_value("training")


def _learning_phase() -> int:
    return int(bool(_training_flag()))


def _in_train_phase(x, alt, training=None):
    """`x` while training, else `alt` (either may be a callable); `training` defaults to the flag of the layer call
    in progress, so a layer's `call(inputs)` without a `training` argument follows fit/predict as in tf.keras."""
    if training is None:
        training = _training_flag()
    if training is not None and not isinstance(training, (bool, int)):  # a tensor flag
        return ops.where(ops.cast(training, "bool"), x() if callable(x) else x, alt() if callable(alt) else alt)
    chosen = x if training else alt
    return chosen() if callable(chosen) else chosen


K = _Backend()
for _name, _function in dict(
    # shapes and types
    shape=ops.shape, int_shape=_int_shape, ndim=ops.ndim, dtype=lambda x: keras.backend.standardize_dtype(x.dtype),
    cast=ops.cast, floatx=keras.config.floatx, epsilon=keras.config.epsilon,
    # element-wise and reductions
    abs=ops.abs, exp=ops.exp, log=ops.log, sqrt=ops.sqrt, square=ops.square, pow=ops.power, sign=ops.sign,
    minimum=ops.minimum, maximum=ops.maximum, clip=ops.clip, round=ops.round, equal=ops.equal,
    not_equal=ops.not_equal, greater=ops.greater, greater_equal=ops.greater_equal, less=ops.less,
    less_equal=ops.less_equal, sum=ops.sum, mean=ops.mean, max=ops.max, min=ops.min, prod=ops.prod, any=ops.any,
    all=ops.all, argmax=ops.argmax, argmin=ops.argmin, cumsum=ops.cumsum, logsumexp=ops.logsumexp,
    softmax=ops.softmax, sigmoid=ops.sigmoid, relu=ops.relu, tanh=ops.tanh, where=ops.where,
    l2_normalize=lambda x, axis=-1: ops.normalize(x, axis=axis), stop_gradient=ops.stop_gradient,
    # structure
    reshape=ops.reshape, expand_dims=ops.expand_dims, squeeze=ops.squeeze, concatenate=ops.concatenate,
    stack=ops.stack, tile=ops.tile, repeat=ops.repeat, permute_dimensions=ops.transpose, transpose=ops.transpose,
    gather=ops.take, one_hot=ops.one_hot, arange=ops.arange, zeros_like=ops.zeros_like, ones_like=ops.ones_like,
    zeros=ops.zeros, ones=ops.ones, switch=ops.where, dot=ops.matmul, batch_dot=_batch_dot,
    random_binomial=_random_binomial, random_uniform=keras.random.uniform, random_normal=keras.random.normal,
    # losses: Keras 2 backend semantics (binary cross-entropy element-wise, the others over the last axis)
    sparse_categorical_crossentropy=ops.sparse_categorical_crossentropy,
    categorical_crossentropy=ops.categorical_crossentropy, binary_crossentropy=ops.binary_crossentropy,
    # variables
    variable=lambda value, dtype=None, name=None: keras.Variable(value, dtype=dtype, name=name),
    constant=lambda value, dtype=None: ops.convert_to_tensor(value, dtype=dtype),
    eval=ops.convert_to_numpy, get_value=ops.convert_to_numpy, set_value=lambda v, value: v.assign(value),
    # the training flag of the call in progress
    in_train_phase=_in_train_phase, learning_phase=_learning_phase,
).items():
    setattr(K, _name, _function)


# tf.keras' graph-mode training internals (K.function, K.gradients, model.total_loss, train_function, ...)
_training.install(K)


def set_gelu(version: str) -> None:
    """Make `"hidden_act": "gelu"` in configs mean the exact (`"erf"`) or tanh-approximated (`"tanh"`) GELU."""
    version = version.lower()
    if version not in ("erf", "tanh"):
        raise ValueError(f"set_gelu: version must be 'erf' or 'tanh', got {version!r}")
    _config.ACTIVATIONS["gelu"] = "gelu_erf" if version == "erf" else "gelu_tanh"


def search_layer(inputs, name: str):
    """The layer called `name` among `inputs`' producers (a layer or a Keras tensor), searched upstream through
    nested models; None if there is none. Inside a compiled loss (tensors without layer history), the layer of the
    model whose loss is computed."""
    if not isinstance(inputs, keras.layers.Layer) and not hasattr(inputs, "_keras_history"):
        return _training.layer_of_loss_model(inputs, name)  # a tensor inside a compiled loss
    start = inputs if isinstance(inputs, keras.layers.Layer) else inputs._keras_history.operation
    seen, stack = set(), [start]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
        for node in layer._inbound_nodes:
            stack.extend(t._keras_history.operation for t in node.input_tensors)
    return None


def batch_gather(params, indices):
    """`params[b, ..., indices[b, ..., j]]`: gather along the axis after `indices`' leading (batch) axes."""
    if "int" not in keras.backend.standardize_dtype(indices.dtype):
        indices = ops.cast(indices, "int32")
    return ops.take_along_axis(params, indices, axis=len(indices.shape) - 1) if len(indices.shape) == len(
        params.shape) else _gather_rows(params, indices)


def _gather_rows(params, indices):
    """`batch_gather` where `params` has more axes than `indices`: whole trailing slices are gathered."""
    axis = len(indices.shape) - 1
    extra = len(params.shape) - len(indices.shape)
    expanded = ops.reshape(indices, tuple(ops.shape(indices)) + (1,) * extra)
    target = tuple(ops.shape(indices)) + tuple(ops.shape(params)[axis + 1:])
    return ops.take_along_axis(params, ops.broadcast_to(expanded, target), axis=axis)


def sequence_masking(x, mask=None, value=0.0, axis: int | None = None):
    """Replace the positions of `x` where `mask` (`[batch, seq]`, along `axis`, default 1) is 0 by `value`
    (`"-inf"` / `"inf"` mean a large negative / positive number)."""
    if mask is None:
        return x
    if value in ("-inf", "inf"):
        value = (-1e12 if value == "-inf" else 1e12) if keras.backend.standardize_dtype(x.dtype) != "float16" \
            else (-6e4 if value == "-inf" else 6e4)
    axis = 1 if axis is None else axis % len(x.shape)
    mask = ops.cast(mask, "bool")
    shape = [1] * len(x.shape)
    shape[0], shape[axis] = -1, ops.shape(mask)[1]
    return ops.where(ops.reshape(mask, shape), x, ops.cast(value, x.dtype))


def multilabel_categorical_crossentropy(y_true, y_pred):
    """Multi-label softmax cross-entropy: `log(1 + Σ_neg e^s) + log(1 + Σ_pos e^-s)` over the last axis;
    `y_true` is 0/1, `y_pred` are raw scores (predict the classes with score > 0)."""
    y_true = ops.cast(y_true, y_pred.dtype)
    big = ops.cast(1e12, y_pred.dtype)
    negatives = y_pred - y_true * big
    positives = -y_pred - (1 - y_true) * big
    zeros = ops.zeros_like(y_pred[..., :1])
    return (ops.logsumexp(ops.concatenate([negatives, zeros], -1), axis=-1)
            + ops.logsumexp(ops.concatenate([positives, zeros], -1), axis=-1))


def sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero: bool = False):
    """`multilabel_categorical_crossentropy` with the positive classes given as indices `y_true` `[..., k]`
    (`y_pred` `[..., classes]`). With `mask_zero`, index 0 is padding: class 0 is no class at all."""
    big = ops.cast(1e12, y_pred.dtype)
    zeros = ops.zeros_like(y_pred[..., :1])
    scores = ops.concatenate([y_pred, zeros], axis=-1)  # an extra class scoring 0: the "1 +" of the dense form
    if mask_zero:
        scores = ops.concatenate([zeros - big, scores[..., 1:]], axis=-1)
    positive = batch_gather(scores, y_true)  # padding indices gather -big: out of every sum below
    if mask_zero:
        positive_for_loss = ops.where(ops.equal(y_true, 0), big, positive)
    else:
        positive_for_loss = positive
    positive_loss = ops.logsumexp(ops.concatenate([-positive_for_loss, zeros], -1), axis=-1)
    all_loss = ops.logsumexp(scores, axis=-1)
    # log Σ_neg e^s = log Σ_all e^s + log(1 − Σ_pos e^s / Σ_all e^s)
    positive_share = ops.logsumexp(positive, axis=-1) - all_loss
    negative_loss = all_loss + ops.log(ops.clip(1 - ops.exp(positive_share), keras.config.epsilon(), 1))
    return positive_loss + negative_loss


__all__ = ["K", "batch_gather", "keras", "model_file", "multilabel_categorical_crossentropy", "search_layer",
           "sequence_masking", "set_gelu", "sparse_multilabel_categorical_crossentropy", "weights_file"]
