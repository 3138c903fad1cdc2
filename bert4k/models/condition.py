"""Constructor plumbing shared by the `Transformer` and `T5` models: the conditional-LayerNorm condition (an int
width, or a condition `keras.Model` computed inside the model) and the check that rejects unknown keywords."""
from __future__ import annotations

import keras

from bert4k.layers.initializers import truncated_normal

KERAS_MODEL_KWARGS = ("name", "trainable")


def check_model_kwargs(owner: str, kwargs: dict) -> None:
    """Raise for keywords that `keras.Model` would silently drop (only `name` and `trainable` reach it)."""
    unknown = sorted(set(kwargs) - set(KERAS_MODEL_KWARGS))
    if unknown:
        raise TypeError(f"{owner}: unknown keyword argument(s) {unknown}")


def resolve(layer_norm_cond, hidden_size: int | None = None):
    """`(layer_norm_cond, condition_model, cond_dim, cond_size)` of a model's `layer_norm_cond` argument.

    `layer_norm_cond`: None, an int (the width of a `[batch, k]` condition input), a condition `keras.Model` whose
    output is `[batch, k]`, or such a model serialised by `get_config` (returned deserialised). `cond_dim`: the
    condition width (None: no condition); `cond_size`: the width the norms receive (`hidden_size` if given).
    """
    if isinstance(layer_norm_cond, dict):
        layer_norm_cond = keras.saving.deserialize_keras_object(layer_norm_cond)
    if isinstance(layer_norm_cond, keras.Model):
        condition_model, cond_dim = layer_norm_cond, layer_norm_cond.outputs[0].shape[-1]
    elif layer_norm_cond is None or isinstance(layer_norm_cond, int):
        condition_model, cond_dim = None, layer_norm_cond or None
    else:
        raise TypeError(f"layer_norm_cond: expected an int or a keras.Model, got {type(layer_norm_cond).__name__} "
                        "(pass a Keras tensor through build_transformer_model)")
    cond_size = (hidden_size or cond_dim) if cond_dim else None
    return layer_norm_cond, condition_model, cond_dim, cond_size


def dense(cond_dim: int | None, hidden_size: int | None, activation: str, initializer_range: float,
                    dtype=None) -> keras.layers.Dense | None:
    """The optional hidden Dense between the condition and the norms (`layer_norm_cond_hidden_size`)."""
    if not (cond_dim and hidden_size):
        return None
    return keras.layers.Dense(hidden_size, activation=activation,
                              kernel_initializer=truncated_normal(initializer_range),
                              name="LayerNorm-Condition-Dense", dtype=dtype)


def vector(condition_model, cond_dense, cond):
    """The model's condition input(s) → the vector the norms receive (condition model, then the hidden Dense)."""
    if cond is None:
        return None
    if condition_model is not None:
        cond = condition_model(cond)
    return cond_dense(cond) if cond_dense is not None else cond


def inputs(condition_model, cond_dim: int | None, cond_dense) -> tuple[list, keras.KerasTensor | None]:
    """Fresh `keras.Input`s for the condition (the condition model's inputs, or `Input-LayerNorm-Condition`) and the
    vector computed from them; `([], None)` without a condition."""
    if condition_model is not None:
        sources = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name) for t in condition_model.inputs]
        return sources, vector(condition_model, cond_dense, sources[0] if len(sources) == 1 else sources)
    if cond_dim:
        source = keras.Input(shape=(cond_dim,), name="Input-LayerNorm-Condition")
        return [source], vector(None, cond_dense, source)
    return [], None


def config(layer_norm_cond, condition_model):
    """`layer_norm_cond` for `get_config`: the serialised condition model, or the int."""
    return keras.saving.serialize_keras_object(condition_model) if condition_model is not None else layer_norm_cond
