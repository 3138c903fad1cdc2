"""tf.keras 2's graph-mode training internals that bert4keras' examples rewrite, emulated on Keras 3 (TensorFlow).

* Gradient penalty: a compiled loss calls `search_layer(y_pred, 'Embedding-Token')` and `K.gradients(loss, [table])`.
  Keras 3 tensors inside a loss carry no layer history, so `search_layer` looks the name up in the model whose loss
  is being computed (recorded around `Model._compute_loss`); `K.gradients` there is `tf.gradients` in the traced step.
* Adversarial / virtual adversarial training: `model._make_train_function()`, `model.total_loss`,
  `model._feed_inputs + _feed_targets + _feed_sample_weights`, `K.gradients(model.total_loss, [table])`,
  `K.function(inputs, outputs)` and `model.train_function = f`. Here `total_loss` and the feeds are `Symbolic`
  stand-ins, `K.function` evaluates them (and Keras tensors of the model) on the arrays it is given, in inference
  mode as tf.keras' default learning phase, and `fit` / `train_on_batch` call a user-assigned `train_function` once
  per batch with `[x..., y..., sample_weights...]` (numpy; weights of ones when none are given), its outputs
  becoming the logs. `_make_train_function()` makes the function it wraps: one ordinary Keras 3 train step.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

# What scripts doing gradient surgery outside the supported patterns can do instead.
TRAIN_STEP_HELP = ("subclass keras.Model and override train_step (compute the loss under tf.GradientTape, take its "
                   "gradient with respect to the Embedding-Token table, perturb the table, recompute the loss, apply "
                   "the gradients, restore the table)")

# ------------------------------------------------------------------------------ the model whose loss is computed

_LOSS_MODEL: contextvars.ContextVar = contextvars.ContextVar("bert4k_loss_model", default=None)


def _install_loss_model_record() -> None:
    """Record, around `keras.Model._compute_loss` (called by train / test steps and Keras' symbolic build), which
    model's compiled loss is running, for `search_layer` on tensors without layer history."""
    compute = keras.Model._compute_loss
    if getattr(compute, "__bert4k_records__", False):
        return

    @functools.wraps(compute)
    def recorded(self, *args, **kwargs):
        token = _LOSS_MODEL.set(self)
        try:
            return compute(self, *args, **kwargs)
        finally:
            _LOSS_MODEL.reset(token)

    recorded.__bert4k_records__ = True
    keras.Model._compute_loss = recorded


def layers_named(model: keras.Model, name: str) -> list[keras.layers.Layer]:
    """The distinct layers called `name` in `model`, nested models included."""
    found, seen, stack = [], set(), [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if layer.name == name and layer is not model:
            found.append(layer)
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
    return found


def layer_of_loss_model(tensor, name: str):
    """`search_layer(tensor, name)` for a tensor without Keras history: the layer `name` of the model whose compiled
    loss is being computed (None if it has none). Raises when no loss is running or the name is ambiguous."""
    model = _LOSS_MODEL.get()
    if model is None:
        raise TypeError(f"search_layer(..., {name!r}): got a {type(tensor).__name__}, not a Keras tensor of a "
                        "functional model, outside a compiled loss: Keras 3 tensors carry no layer history. Inside "
                        "a loss passed to compile(), the layer is looked up in the model being trained; elsewhere "
                        f"use model.get_layer({name!r})")
    found = layers_named(model, name)
    if len(found) > 1:
        raise ValueError(f"search_layer(..., {name!r}) inside the loss of model {model.name!r}: {len(found)} "
                         f"different layers are called {name!r} (nested models); use model.get_layer on the "
                         "intended model instead")
    return found[0] if found else None


# ------------------------------------------------------------------------------------- symbolic stand-ins


def _require_tensorflow(api: str):
    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(f"{api} (tf.keras' graph-mode training internals) is emulated on the TensorFlow "
                                  f"backend only (got {keras.backend.backend()!r}); on other backends, "
                                  + TRAIN_STEP_HELP)
    import tensorflow as tf

    return tf


class _Evaluation:
    """One `K.function` call: the fed values and each symbol's value, computed once."""

    def __init__(self, fed: dict):
        self.fed, self.values = fed, {}

    def value(self, item):
        if isinstance(item, Symbolic):
            if id(item) not in self.values:
                self.values[id(item)] = item.compute(self)
            return self.values[id(item)]
        return item


class Symbolic:
    """A value of tf.keras' training graph (`model.total_loss`, a feed, a gradient, arithmetic on them), computed
    when a `K.function` over it is called. Python / NumPy / TensorFlow arithmetic and `K` functions accept it."""

    __array_ufunc__ = None  # numpy defers to our reflected operators
    description = "symbolic value"

    def compute(self, evaluation: _Evaluation):
        raise NotImplementedError

    def __repr__(self):
        return f"<bert4k symbolic {self.description}>"

    def __bool__(self):
        raise TypeError(f"{self!r} has no value until a K.function over it is called")


class Applied(Symbolic):
    """`function(*arguments, **keywords)` where some arguments are `Symbolic`."""

    def __init__(self, function: Callable, arguments: Sequence, keywords: dict | None = None, description: str = ""):
        self.function, self.arguments, self.keywords = function, tuple(arguments), dict(keywords or {})
        self.description = description or getattr(function, "__name__", "operation")

    def compute(self, evaluation):
        arguments = [evaluation.value(a) for a in self.arguments]
        keywords = {k: evaluation.value(v) for k, v in self.keywords.items()}
        return self.function(*arguments, **keywords)


def _operator(function: Callable, reflected: bool = False):
    def method(self, other):
        return Applied(function, (other, self) if reflected else (self, other), description=function.__name__)

    return method


for _name, _function in dict(add=ops.add, sub=ops.subtract, mul=ops.multiply, truediv=ops.divide,
                             pow=ops.power).items():
    setattr(Symbolic, f"__{_name}__", _operator(_function))
    setattr(Symbolic, f"__r{_name}__", _operator(_function, reflected=True))
Symbolic.__neg__ = lambda self: Applied(ops.negative, (self,))
Symbolic.__getitem__ = lambda self, key: Applied(lambda x: x[key], (self,), description="getitem")


def lift(function: Callable) -> Callable:
    """`function`, returning an `Applied` stand-in when any argument is `Symbolic` (for the `K` functions)."""

    @functools.wraps(function)
    def lifted(*arguments, **keywords):
        if any(isinstance(a, Symbolic) for a in (*arguments, *keywords.values())):
            return Applied(function, arguments, keywords)
        return function(*arguments, **keywords)

    return lifted


class Feed(Symbolic):
    """One of `model._feed_inputs` / `_feed_targets` / `_feed_sample_weights`: a value `K.function` is given."""

    def __init__(self, model: keras.Model, role: str, index: int):
        self.model, self.role, self.index = model, role, index
        self.description = f"{model.name}._feed_{role}[{index}]"

    def compute(self, evaluation):
        if self not in evaluation.fed:
            raise ValueError(f"K.function: {self.description} is needed but is not among the function's inputs")
        return evaluation.fed[self]


def _model_values(evaluation: _Evaluation, model: keras.Model):
    """The model's inputs, targets and sample weights among the fed values, in Keras' structure."""
    def fed(role):
        values = [evaluation.value(feed) for feed in _feeds(model)[role]]
        return values[0] if len(values) == 1 else values

    return fed("inputs"), fed("targets"), fed("sample_weights")


class TotalLoss(Symbolic):
    """`model.total_loss`: the compiled loss (plus the model's added losses) on the fed inputs / targets / sample
    weights, the model run in inference mode (tf.keras' default learning phase in `K.function`)."""

    def __init__(self, model: keras.Model):
        self.model, self.description = model, f"{model.name}.total_loss"

    def compute(self, evaluation):
        x, y, sample_weight = _model_values(evaluation, self.model)
        y_pred = self.model(x, training=False)
        return self.model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)


class Gradient(Symbolic):
    """`K.gradients(symbolic_loss, [variable])[i]`: the gradient (dense, shaped like the variable)."""

    def __init__(self, loss: Symbolic, variable):
        self.loss, self.variable = loss, variable
        self.description = f"gradient of {loss.description} w.r.t. {getattr(variable, 'path', variable)}"

    def compute(self, evaluation):
        tf = _require_tensorflow("K.gradients(model.total_loss, ...)")
        target = self.variable.value if isinstance(self.variable, keras.Variable) else self.variable
        with tf.GradientTape() as tape:
            tape.watch(target)
            loss = _Evaluation(evaluation.fed).value(self.loss)  # recomputed under this tape
        gradient = tape.gradient(loss, target)
        if gradient is None:
            raise ValueError(f"K.gradients: {self.loss.description} does not depend on "
                             f"{getattr(self.variable, 'path', self.variable)}")
        return tf.convert_to_tensor(gradient)


def _feeds(model: keras.Model) -> dict[str, list[Feed]]:
    feeds = model.__dict__.get("_bert4k_feeds")
    if feeds is None:
        outputs = len(model.outputs or ())
        feeds = {"inputs": [Feed(model, "inputs", i) for i in range(len(model.inputs or ()))],
                 "targets": [Feed(model, "targets", i) for i in range(outputs)],
                 "sample_weights": [Feed(model, "sample_weights", i) for i in range(outputs)]}
        object.__setattr__(model, "_bert4k_feeds", feeds)
    return feeds


# ------------------------------------------------------------------------------------------------ K.gradients


def gradients(loss, variables):
    """tf.keras' `K.gradients`: of `model.total_loss` (a stand-in, computed by `K.function`), or inside a traced
    TensorFlow computation (a layer's call or a compiled loss during fit / predict) by `tf.gradients`."""
    variables = list(variables) if isinstance(variables, (list, tuple)) else [variables]
    if isinstance(loss, Symbolic):
        _require_tensorflow("K.gradients")
        return [Gradient(loss, v) for v in variables]
    tf = _require_tensorflow("K.gradients")
    if not tf.inside_function():
        raise NotImplementedError("bert4k.backend.K.gradients works on model.total_loss or inside a traced "
                                  "computation (a layer's call or a compiled loss during fit / predict); "
                                  "elsewhere, " + TRAIN_STEP_HELP)
    return tf.gradients(loss, [v.value if isinstance(v, keras.Variable) else v for v in variables])


# ------------------------------------------------------------------------------------------------- K.function


def _is_keras_tensor(x) -> bool:
    return isinstance(x, keras.KerasTensor)


class Function:
    """`K.function(inputs, outputs)`: called with one array per input, returns one numpy array per output.

    Inputs are `model._feed_*` stand-ins or Keras tensors (`model.inputs`); outputs are stand-ins, Keras tensors of
    the model (computed by a functional model over them, in inference mode), or plain values."""

    def __init__(self, inputs: Sequence, outputs: Sequence | Any, name: str | None = None):
        self.inputs = list(inputs)
        self.single = not isinstance(outputs, (list, tuple))
        self.outputs = [outputs] if self.single else list(outputs)
        self.name = name or "function"
        for i, x in enumerate(self.inputs):
            if not isinstance(x, Feed) and not _is_keras_tensor(x):
                raise TypeError(f"K.function(name={self.name!r}): input {i} is a {type(x).__name__}; expected "
                                "model._feed_inputs / _feed_targets / _feed_sample_weights entries or Keras tensors")
        models = {id(x.model): x.model for x in self.inputs if isinstance(x, Feed)}
        if len(models) > 1:
            raise ValueError(f"K.function(name={self.name!r}): the inputs are the feeds of {len(models)} different "
                             "models; give the feeds of one model")
        self.model = next(iter(models.values()), None)
        self._keras_outputs = [o for o in self.outputs if _is_keras_tensor(o)]
        self._graph = None

    def _keras_tensor_values(self, evaluation: _Evaluation) -> list:
        if not self._keras_outputs:
            return []
        keras_inputs = [x for x in self.inputs if _is_keras_tensor(x)]
        if self.model is not None and keras_inputs:
            raise ValueError(f"K.function(name={self.name!r}): mixes model feeds and Keras tensors as inputs")
        if self._graph is None:
            sources = list(self.model.inputs) if self.model is not None else keras_inputs
            self._graph = keras.Model(sources, list(self._keras_outputs))
        if self.model is not None:
            x = [evaluation.value(feed) for feed in _feeds(self.model)["inputs"]]
        else:
            x = [evaluation.fed[i] for i in range(len(self.inputs))]
        values = self._graph(x, training=False)
        return list(values) if isinstance(values, (list, tuple)) else [values]

    def __call__(self, values: Sequence):
        if not isinstance(values, (list, tuple)) or len(values) != len(self.inputs):
            got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
            raise ValueError(f"K.function(name={self.name!r}): expected a list of {len(self.inputs)} arrays (one per "
                             f"input), got {got}")
        fed = {}
        for i, (x, value) in enumerate(zip(self.inputs, values)):
            fed[x if isinstance(x, Feed) else i] = ops.convert_to_tensor(np.asarray(value))
        evaluation = _Evaluation(fed)
        computed = iter(self._keras_tensor_values(evaluation))
        results = [next(computed) if _is_keras_tensor(o) else evaluation.value(o) for o in self.outputs]
        results = [ops.convert_to_numpy(r) for r in results]
        return results[0] if self.single else results


def function(inputs: Sequence, outputs, updates=None, name: str | None = None, **kwargs) -> Function:
    """tf.keras' `K.function`; `updates` are not supported."""
    if updates:
        raise NotImplementedError("K.function(updates=...): Keras 3 has no graph updates; assign variables "
                                  "(variable.assign) in your own code")
    if kwargs:
        raise TypeError(f"K.function: unsupported arguments {sorted(kwargs)}")
    return Function(inputs, outputs, name)


# ------------------------------------------------------------------------------- the legacy train function

_LEGACY = "_bert4k_legacy_train_function"


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, dict):
        raise TypeError("a legacy train_function takes lists of arrays; this batch is a dict (named inputs): "
                        "feed the model inputs as a list")
    return list(value) if isinstance(value, (list, tuple)) else [value]


class KerasTrainStep:
    """`model._make_train_function()`'s function: one Keras 3 train step on `[x..., y..., sample_weights...]`,
    returning `[loss, metrics...]` (the model's `metrics_names` order)."""

    def __init__(self, model: keras.Model):
        self.model = model
        saved, model.train_function = model.train_function, None
        keras.Model.make_train_function(model)
        self.step, model.train_function = model.train_function, saved
        self.names: list[str] | None = None

    def split(self, values: Sequence) -> tuple:
        model = self.model
        n_in, n_out = len(model.inputs), len(model.outputs)
        if not isinstance(values, (list, tuple)) or len(values) != n_in + 2 * n_out:
            got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
            raise ValueError(f"model {model.name!r} train_function: expected [x..., y..., sample_weights...] = "
                             f"{n_in} + {n_out} + {n_out} arrays, got {got}")
        single = lambda v: v[0] if len(v) == 1 else tuple(v)
        tensors = [ops.convert_to_tensor(np.asarray(v)) for v in values]
        return single(tensors[:n_in]), single(tensors[n_in:n_in + n_out]), single(tensors[n_in + n_out:])

    def __call__(self, values: Sequence) -> list:
        x, y, sample_weight = self.split(values)
        self.model._maybe_symbolic_build(data_batch=(x, y, sample_weight))
        logs = {k: ops.convert_to_numpy(v) for k, v in self.step(iter([(x, y, sample_weight)])).items()}
        flat = self.model._flatten_metrics_in_order(logs)
        flat = flat if isinstance(flat, list) else [flat]
        name_of = {id(v): k for k, v in logs.items()}
        self.names = [name_of[id(v)] for v in flat]
        return flat


def _make_train_function(self) -> None:
    """tf.keras' `model._make_train_function()`: `model.train_function` becomes a function of
    `[x..., y..., sample_weights...]` doing one train step; a function assigned in its place is what fit runs."""
    _require_tensorflow("model._make_train_function()")
    if not self.compiled:
        raise RuntimeError(f"model {self.name!r}: _make_train_function() needs a compiled model; call compile first")
    if self.steps_per_execution != 1:
        raise NotImplementedError(f"model {self.name!r}: a legacy train_function runs one batch per call; compile "
                                  f"with steps_per_execution=1 (got {self.steps_per_execution})")
    step = KerasTrainStep(self)
    object.__setattr__(self, _LEGACY, step)
    self.train_function = step


def _legacy_step(model: keras.Model) -> KerasTrainStep | None:
    return model.__dict__.get(_LEGACY)


def _require_legacy(model: keras.Model, api: str) -> None:
    if _legacy_step(model) is None and model.train_function is not None:
        raise RuntimeError(f"model.{api}: model {model.name!r} already has a Keras 3 train function (it was trained "
                           "before); rewrite tf.keras' train function before the first fit / train_on_batch, or set "
                           "model.train_function = None and call model._make_train_function() first")
    if not model.compiled:
        raise RuntimeError(f"model.{api}: model {model.name!r} is not compiled; call compile first")


def _total_loss(self) -> TotalLoss:
    _require_tensorflow("model.total_loss")
    _require_legacy(self, "total_loss")
    return TotalLoss(self)


def _feed_property(role: str):
    def feeds(self) -> list[Feed]:
        _require_tensorflow(f"model._feed_{role}")
        _require_legacy(self, f"_feed_{role}")
        return list(_feeds(self)[role])

    return property(feeds)


class LegacyBatches:
    """What fit / train_on_batch call as `train_function` while a user-assigned legacy one is installed: takes the
    next batch of Keras' iterator, calls the legacy function on it as lists of numpy arrays, returns its logs."""

    def __init__(self, model: keras.Model, legacy: Callable):
        self.model, self.legacy = model, legacy

    def __call__(self, iterator) -> dict:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(next(iterator))
        xs, ys = _as_list(x), _as_list(y)
        batch = int(np.shape(ops.convert_to_numpy(xs[0]))[0])
        weights = _as_list(sample_weight) or [np.ones((batch,), "float32") for _ in ys]
        values = [ops.convert_to_numpy(v) for v in xs + ys + weights]
        outputs = self.legacy(values)
        if isinstance(outputs, dict):
            return outputs
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        names = _legacy_step(self.model).names or []
        if len(names) != len(outputs):
            names = ["loss"] + [f"output_{i}" for i in range(1, len(outputs))]
        return dict(zip(names, outputs))


@contextlib.contextmanager
def _legacy_train_function(model: keras.Model):
    """Inside: a user-assigned legacy `train_function` is driven batch by batch (nothing to do otherwise)."""
    legacy = model.train_function
    if _legacy_step(model) is None or legacy is None or isinstance(legacy, LegacyBatches):
        yield
        return
    model.train_function = LegacyBatches(model, legacy)
    try:
        yield
    finally:
        model.train_function = legacy


def _driving_legacy(method: Callable) -> Callable:
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with _legacy_train_function(self):
            return method(self, *args, **kwargs)

    run.__bert4k_legacy__ = True
    return run


def _install_legacy_train_function() -> None:
    """tf.keras' train-function internals on every `keras.Model`: `_make_train_function`, `total_loss`, `_feed_*`,
    and fit / train_on_batch running a user-assigned `train_function`."""
    if getattr(keras.Model.fit, "__bert4k_legacy__", False):
        return
    keras.Model._make_train_function = _make_train_function
    keras.Model.total_loss = property(_total_loss)
    for role in ("inputs", "targets", "sample_weights"):
        setattr(keras.Model, f"_feed_{role}", _feed_property(role))
    keras.Model.fit = _driving_legacy(keras.Model.fit)
    keras.Model.train_on_batch = _driving_legacy(keras.Model.train_on_batch)


_NOT_LIFTED = {"eval", "get_value", "set_value", "variable", "constant", "floatx", "epsilon", "learning_phase",
               "in_train_phase"}  # these need values, not stand-ins


def install(backend_functions) -> None:
    """Install the emulation on Keras and on bert4k's `K` (`backend_functions`): `K.function`, `K.gradients`, and
    every `K` function accepting stand-ins."""
    _install_loss_model_record()
    _install_legacy_train_function()
    for name, value in list(vars(backend_functions).items()):
        if callable(value) and not name.startswith("_") and name not in _NOT_LIFTED:
            setattr(backend_functions, name, lift(value))
    backend_functions.gradients = gradients
    backend_functions.function = function


__all__ = [
    "TRAIN_STEP_HELP",
    "Function",
    "Symbolic",
    "function",
    "gradients",
    "install",
    "layer_of_loss_model",
    "layers_named",
]
