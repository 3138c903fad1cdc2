"""bert4keras' optimizer names, mapped onto Keras 3's built-in optimizers (`bert4k.optimizers` re-exports them).

`extend_with_*` take an optimizer class and return a subclass that accepts bert4keras' keyword arguments and
passes Keras' equivalents on; they compose (`extend_with_piecewise_linear_lr(extend_with_weight_decay(Adam))`).
No update rule is re-implemented: what Keras has no built-in for raises `NotImplementedError` naming an alternative.

| bert4keras | Keras 3 |
|---|---|
| `Adam(..., epsilon=1e-6)` | `keras.optimizers.Adam` (bias correction always on) |
| `AdaFactor` | `keras.optimizers.Adafactor` (no momentum, always parameter-scaled, factors every matrix) |
| `Lion` | `keras.optimizers.Lion` |
| `extend_with_weight_decay`: `weight_decay_rate`, `exclude_from_weight_decay` (patterns) | `weight_decay` + `exclude_from_weight_decay(var_list=...)` (patterns matched on `variable.path`) |
| `extend_with_piecewise_linear_lr`: `lr_schedule={step: multiplier}` | `bert4k.training.PiecewiseLinearSchedule` |
| `extend_with_gradient_accumulation`: `grad_accum_steps` | `gradient_accumulation_steps` |
| `extend_with_exponential_moving_average`: `ema_momentum`, `apply_ema_weights()`, `reset_old_weights()` | `use_ema`, `ema_momentum` |
| `extend_with_layer_adaptation` (on Adam) | `keras.optimizers.Lamb` |
"""
from __future__ import annotations

import inspect
import re

import keras

from bert4k.training import PiecewiseLinearSchedule

__all__ = ["AdaFactor", "Adam", "AdamW", "Lion", "extend_with_exponential_moving_average",
           "extend_with_gradient_accumulation", "extend_with_layer_adaptation", "extend_with_lazy_optimization",
           "extend_with_lookahead", "extend_with_parameter_wise_lr", "extend_with_piecewise_linear_lr",
           "extend_with_weight_decay"]


def _register(cls: type, name: str | None) -> type:
    """Name the new class and make it loadable from saved models (as bert4keras' `export_to_custom_objects`)."""
    if name:
        cls.__name__ = cls.__qualname__ = name
    keras.saving.get_custom_objects()[cls.__name__] = cls
    return cls


@keras.saving.register_keras_serializable("bert4k")
class Adam(keras.optimizers.Adam):
    """bert4keras' Adam: Keras' Adam with ε = 1e-6 by default. `bias_correction=False` is not available."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6, bias_correction=True,
                 **kwargs):
        if not bias_correction:
            raise NotImplementedError("Adam(bias_correction=False): Keras' Adam always corrects the moment bias")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)


@keras.saving.register_keras_serializable("bert4k")
class Lion(keras.optimizers.Lion):
    """bert4keras' Lion defaults (lr 3e-4, β₁ 0.95, β₂ 0.98) on Keras' Lion."""

    def __init__(self, learning_rate=3e-4, beta_1=0.95, beta_2=0.98, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, **kwargs)


@keras.saving.register_keras_serializable("bert4k")
class AdaFactor(keras.optimizers.Adafactor):
    """bert4keras' AdaFactor arguments on Keras' Adafactor.

    `learning_rate=None` is the relative step `min(0.01, 1/√t)`. Keras' Adafactor always scales updates by the
    parameter RMS, has no first moment, uses β₂ = 1 − t^-0.8, and factors the second moment of every matrix (not
    only those with both dims ≥ `min_dim_size_to_factor`); other settings of those raise NotImplementedError.
    """

    def __init__(self, learning_rate=1e-3, beta1=0.0, beta2=None, epsilon1=1e-30, epsilon2=1e-3,
                 multiply_by_parameter_scale=True, clipping_threshold=1.0, min_dim_size_to_factor=128,
                 exclude_from_parameter_scale=None, **kwargs):
        unsupported = {"beta1": beta1 != 0.0, "beta2": beta2 is not None,
                       "multiply_by_parameter_scale": not multiply_by_parameter_scale,
                       "exclude_from_parameter_scale": bool(exclude_from_parameter_scale),
                       "min_dim_size_to_factor": min_dim_size_to_factor != 128}
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise NotImplementedError(f"AdaFactor: {bad} have no equivalent in keras.optimizers.Adafactor")
        if learning_rate is None:
            kwargs.setdefault("relative_step", True)
            learning_rate = 0.01
        else:
            kwargs.setdefault("relative_step", False)
        kwargs.setdefault("epsilon_1", epsilon1)
        kwargs.setdefault("epsilon_2", epsilon2)
        kwargs.setdefault("clip_threshold", clipping_threshold)
        super().__init__(learning_rate=learning_rate, **kwargs)


def _default_learning_rate(cls: type):
    parameter = inspect.signature(cls.__init__).parameters.get("learning_rate")
    return 0.001 if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def extend_with_weight_decay(BaseOptimizer: type, name: str | None = None) -> type:
    """Decoupled weight decay `weight_decay_rate` (lr-scaled, as bert4keras), skipping variables whose path
    (`"Transformer-0/FeedForward-Norm/gamma"`) matches a regex in `exclude_from_weight_decay`."""

    class WeightDecay(BaseOptimizer):
        def __init__(self, *args, weight_decay_rate=None, exclude_from_weight_decay=(), **kwargs):
            kwargs["weight_decay"] = kwargs.pop("weight_decay", 0.01) if weight_decay_rate is None else weight_decay_rate
            super().__init__(*args, **kwargs)
            self.weight_decay_patterns = list(exclude_from_weight_decay)

        def build(self, variables):
            if self.weight_decay_patterns:
                regex = re.compile("|".join(self.weight_decay_patterns))
                self.exclude_from_weight_decay(var_list=[v for v in variables if regex.search(v.path)])
            super().build(variables)

        def get_config(self):
            return {**super().get_config(), "exclude_from_weight_decay": self.weight_decay_patterns}

    return _register(WeightDecay, name or f"{BaseOptimizer.__name__}W")


def extend_with_piecewise_linear_lr(BaseOptimizer: type, name: str | None = None) -> type:
    """`lr_schedule={step: multiplier}`: the learning rate times a piecewise-linear function of the step, from 0
    at step 0 (`{1000: 1, 2000: 0.1}`: warm up over 1000 steps, decay to 0.1 by 2000, then constant)."""

    class PiecewiseLinearLR(BaseOptimizer):
        def __init__(self, *args, lr_schedule=None, **kwargs):
            if args:
                learning_rate, args = args[0], args[1:]
            else:
                learning_rate = kwargs.pop("learning_rate", _default_learning_rate(BaseOptimizer))
            if lr_schedule is not None:
                learning_rate = PiecewiseLinearSchedule(learning_rate, lr_schedule)
            super().__init__(learning_rate, *args, **kwargs)

    return _register(PiecewiseLinearLR, name or f"{BaseOptimizer.__name__}LR")


def extend_with_gradient_accumulation(BaseOptimizer: type, name: str | None = None) -> type:
    """`grad_accum_steps`: one update per that many batches, with the mean gradient."""

    class GradientAccumulation(BaseOptimizer):
        def __init__(self, *args, grad_accum_steps=2, **kwargs):
            kwargs.setdefault("gradient_accumulation_steps", grad_accum_steps if grad_accum_steps > 1 else None)
            super().__init__(*args, **kwargs)

    return _register(GradientAccumulation, name or f"{BaseOptimizer.__name__}G")


def extend_with_exponential_moving_average(BaseOptimizer: type, name: str | None = None) -> type:
    """`ema_momentum`: keep an EMA of the weights. `apply_ema_weights()` swaps the averages into the model,
    `reset_old_weights()` swaps the trained weights back. Keras starts the average at the first step's weights,
    so there is no start-up bias to correct (`bias_correction` is accepted and has nothing to do)."""

    class ExponentialMovingAverage(BaseOptimizer):
        def __init__(self, *args, ema_momentum=0.999, **kwargs):
            kwargs["use_ema"] = True
            kwargs.setdefault("ema_momentum", ema_momentum)
            super().__init__(*args, **kwargs)
            self._old_weights = None

        def apply_ema_weights(self, bias_correction: bool = True) -> None:
            variables = self._trainable_variables
            self._old_weights = [keras.ops.convert_to_numpy(v) for v in variables]
            self.finalize_variable_values(variables)

        def reset_old_weights(self) -> None:
            if self._old_weights is None:
                raise RuntimeError("reset_old_weights() needs an earlier apply_ema_weights()")
            for v, old in zip(self._trainable_variables, self._old_weights):
                v.assign(old)
            self._old_weights = None

    return _register(ExponentialMovingAverage, name or f"{BaseOptimizer.__name__}EMA")


def extend_with_layer_adaptation(BaseOptimizer: type, name: str | None = None) -> type:
    """LAMB: Adam with layer-wise trust ratios, i.e. `keras.optimizers.Lamb` (every variable adapted)."""
    if not issubclass(BaseOptimizer, keras.optimizers.Adam):
        raise NotImplementedError("extend_with_layer_adaptation: Keras has layer adaptation only for Adam "
                                  "(keras.optimizers.Lamb)")

    class LayerAdaptation(keras.optimizers.Lamb):
        def __init__(self, *args, exclude_from_layer_adaptation=(), **kwargs):
            if exclude_from_layer_adaptation:
                raise NotImplementedError("exclude_from_layer_adaptation: keras.optimizers.Lamb adapts every variable")
            kwargs.setdefault("epsilon", 1e-6)
            super().__init__(*args, **kwargs)

    return _register(LayerAdaptation, name or f"{BaseOptimizer.__name__}LAMB")


def _unavailable(what: str, alternative: str):
    def extend(BaseOptimizer: type, name: str | None = None) -> type:
        raise NotImplementedError(f"{what} has no Keras 3 built-in; {alternative}")

    extend.__name__ = what
    extend.__doc__ = f"Not available on Keras 3 built-ins: {alternative}."
    return extend


extend_with_lookahead = _unavailable("extend_with_lookahead", "use the base optimizer (with EMA for smoothing)")
extend_with_lazy_optimization = _unavailable(
    "extend_with_lazy_optimization", "Keras updates embeddings densely; freeze rows by masking their gradients")
extend_with_parameter_wise_lr = _unavailable(
    "extend_with_parameter_wise_lr", "compile separate models or use keras.optimizers (one learning rate)")

# bert4keras' tf.keras-specific names point at the same functions.
extend_with_weight_decay_v2 = extend_with_weight_decay
extend_with_piecewise_linear_lr_v2 = extend_with_piecewise_linear_lr
extend_with_gradient_accumulation_v2 = extend_with_gradient_accumulation
extend_with_exponential_moving_average_v2 = extend_with_exponential_moving_average
extend_with_layer_adaptation_v2 = extend_with_layer_adaptation
extend_with_lookahead_v2 = extend_with_lookahead
extend_with_lazy_optimization_v2 = extend_with_lazy_optimization
extend_with_parameter_wise_lr_v2 = extend_with_parameter_wise_lr
AdaFactorV2 = AdaFactor
LionV2 = Lion

AdamW = extend_with_weight_decay(Adam, "AdamW")

__all__ += [name for name in dir() if name.endswith(("_v2", "V2"))]
