"""bert4keras' `build_transformer_model` on the native builder: its keyword names, `return_keras_model=False`,
`compound_tokens`, GPT-2 from a BERT-style config, and clear refusals for the families bert4k does not build."""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import keras
import numpy as np

from bert4k.compat import backend as _backend  # noqa: F401 - installs the tf.keras behaviours scripts rely on
from bert4k.compat import views
from bert4k.compat.layer_by_layer import LayerByLayer
from bert4k.config import TransformerConfig, read_json
from bert4k.models import builder
from bert4k.models.checkpoint_io import load_checkpoint
from bert4k.models.config_readers.gpt2 import FROM_BERT_NAMES
from bert4k.models.families import FAMILIES, get_family, resolve
from bert4k.models.gpt2 import causal_transformer
from bert4k.models.transformer import Transformer

# bert4keras families bert4k has no implementation of (its `models` table), with what differs.
UNSUPPORTED_FAMILIES = {
    "nezha": "relative-position attention (NEZHA)",
    "roformer": "rotary position embeddings (RoFormer)",
    "roformer_v2": "rotary position embeddings without LayerNorm biases (RoFormer-V2)",
    "electra": "the ELECTRA discriminator",
    "gpt": "the post-LN GPT with segment embeddings (bert4keras' GPT, e.g. NEZHA-Gen)",
    **{f"{t5}_{part}": f"a stand-alone T5 {part}" for t5 in ("t5", "t5.1.0", "t5.1.1", "mt5.1.1")
       for part in ("encoder", "decoder")},
}

_ALIASES = {"attention_dropout_rate": "attention_probs_dropout_prob"}
# Accepted and dropped: inputs take any length up to max_position; Keras names each model itself.
_DROPPED = ("sequence_length", "name")
_REFUSED = {
    "ignore_invalid_weights": "bert4k's loader reports missing/unused tensors itself and raises on needed ones",
    "autoresize_weights": "bert4k loads checkpoints only at their stored shapes",
}

# bert4keras' `Transformer` building methods that bert4k does not provide on `return_keras_model=False` objects.
_BUILDER_INTERNALS = ("apply_final_layers", "apply", "compute_attention_bias", "set_inputs", "set_outputs")


class ModelHandle(LayerByLayer):
    """What bert4keras returns for `return_keras_model=False`: `.model` is the Keras model, `.initializer` the
    weights' initializer, `.load_weights_from_checkpoint(path)` loads a checkpoint later, `.num_hidden_layers`,
    `apply_embeddings` / `apply_main_layers` re-apply the model's own layers (`LayerByLayer`); other attributes are
    the model's."""

    def __init__(self, model: keras.Model, keep_tokens=None, compound_tokens=None):
        self.model = model
        self.keep_tokens, self.compound_tokens = keep_tokens, compound_tokens
        self.initializer = keras.initializers.TruncatedNormal(stddev=model.config.initializer_range)

    def load_weights_from_checkpoint(self, checkpoint_path: str | os.PathLike):
        """Load `checkpoint_path` into `.model` (with the `keep_tokens` / `compound_tokens` it was built with)."""
        if self.compound_tokens:
            raise NotImplementedError("load_weights_from_checkpoint with compound_tokens: pass checkpoint_path to "
                                      "build_transformer_model instead")
        return load_checkpoint(self.model, checkpoint_path, keep_tokens=self.keep_tokens)

    def __getattr__(self, name: str):
        # Only reached for names not set in __init__; `model` itself missing (copy / pickle build the object
        # without __init__) must not recurse.
        if name.startswith("__") or "model" not in self.__dict__:
            raise AttributeError(name)
        if name in _BUILDER_INTERNALS:
            raise NotImplementedError(
                f"{name}: of bert4keras' layer-by-layer building API bert4k provides apply_embeddings and "
                f"apply_main_layers only ({', '.join(_BUILDER_INTERNALS)} are not); bert4k builds each model whole: "
                "call its layers themselves (handle.model.embed(token_ids, segment_ids), handle.model.blocks[i](x, "
                "attention_mask=...), handle.model.head(x))")
        return getattr(self.__dict__["model"], name)


def _get_layer(get_layer):
    """`model.get_layer` that also takes bert4keras' layer names (`Transformer-11-FeedForward-Add`,
    `Embedding-Position`, ...; with the model's `prefix`): a `LayerView` of bert4keras' exact tensor, or an error
    naming what bert4k has instead."""

    @functools.wraps(get_layer)
    def wrapper(self, name=None, index=None):
        view = views.get_view(self, name) if isinstance(name, str) and index is None else None
        return get_layer(self, name, index) if view is None else view

    wrapper.__bert4k_compat__ = True
    return wrapper


def _layers_property() -> property:
    """`model.layers`: on models built with block intermediates, bert4keras-ordered indexing (`Bert4kerasLayers`)."""

    def layers(self):
        real = super(Transformer, self).layers  # Keras' own (Functional's, once Keras made the model functional)
        return views.Bert4kerasLayers(real, self) if getattr(self, "block_intermediates", False) else real

    def refuse(self, _):
        raise AttributeError("`Model.layers` attribute is reserved and should not be used. Please use another name.")

    layers.__bert4k_compat__ = True
    return property(layers, refuse)


if not getattr(Transformer.get_layer, "__bert4k_compat__", False):
    Transformer.get_layer = _get_layer(Transformer.get_layer)
if "layers" not in Transformer.__dict__:
    Transformer.layers = _layers_property()


def _check_family(model) -> str:
    if not isinstance(model, str):
        raise NotImplementedError(f"build_transformer_model(model={model!r}): bert4k builds its own families by "
                                  f"name ({sorted(FAMILIES)}); bert4keras model classes cannot be passed")
    name = model.lower()
    if name in UNSUPPORTED_FAMILIES:
        raise NotImplementedError(f"build_transformer_model(model={model!r}): bert4k does not implement "
                                  f"{UNSUPPORTED_FAMILIES[name]}; supported families: {sorted(FAMILIES)}")
    get_family(name)  # raises naming the known families
    return name


def _gpt2_config(config_path) -> dict:
    """A GPT-2 config with HF names; a BERT-style one (CPM-LM as bert4keras reads it) is renamed, padding id 0
    (bert4keras masks token 0 in every model)."""
    raw = dict(config_path) if isinstance(config_path, dict) else read_json(config_path)
    if "n_embd" in raw or "hidden_size" not in raw:
        return raw
    renamed = {FROM_BERT_NAMES.get(key, key): value for key, value in raw.items()}
    renamed.setdefault("pad_token_id", 0)
    return renamed


def _compound_rows(table: np.ndarray, axis: int, compound_tokens: Sequence) -> np.ndarray:
    """The extra vocabulary entries: each the (weighted) mean of the listed existing entries along `axis`."""
    rows = []
    for i, item in enumerate(compound_tokens):
        ids, weights = (item, None) if isinstance(item, (list, np.ndarray)) else item
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= table.shape[axis]:
            raise ValueError(f"compound_tokens[{i}] = {item!r}: ids must be a non-empty list within the vocabulary "
                             f"of {table.shape[axis]}")
        rows.append(np.average(np.take(table, ids, axis=axis), axis=axis, weights=weights))
    return np.stack(rows, axis=axis)


def _extend_vocabulary(source: keras.Model, target: keras.Model, compound_tokens: Sequence) -> None:
    """Copy `source`'s weights into `target`, whose vocabulary is `len(compound_tokens)` entries larger: on every
    weight with a vocabulary axis the new entries are means of existing ones (bert4keras' `compound_tokens`)."""
    extra = len(compound_tokens)
    if len(source.weights) != len(target.weights):
        raise RuntimeError("compound_tokens: the extended model has a different set of weights")
    for old, new in zip(source.weights, target.weights):
        value = keras.ops.convert_to_numpy(old)
        if tuple(old.shape) != tuple(new.shape):
            axes = [a for a, (m, n) in enumerate(zip(old.shape, new.shape)) if m != n]
            if len(old.shape) != len(new.shape) or len(axes) != 1 or new.shape[axes[0]] != old.shape[axes[0]] + extra:
                raise RuntimeError(f"compound_tokens: weight {old.path} has shape {tuple(old.shape)}, extended "
                                   f"{tuple(new.shape)}; only one vocabulary axis may grow")
            value = np.concatenate([value, _compound_rows(value, axes[0], compound_tokens)], axis=axes[0])
        new.assign(value)


_TRANSFORMER_BUILDERS = (Transformer, causal_transformer)  # the family builders that make a `Transformer`


def _prefix_layer_names(model: keras.Model, prefix: str) -> None:
    """bert4keras' `prefix=`: every layer of `model` (inputs included) named `prefix + name`, so two models' layers
    can share one Keras model (Keras 3 refuses duplicate names). Weights keep their paths; `.keras` files do not
    keep the prefix."""
    if not isinstance(prefix, str):
        raise TypeError(f"build_transformer_model(prefix={prefix!r}): expected a string")
    for layer in model.layers:
        layer.name = prefix + layer.name
    model.bert4keras_prefix = prefix


def build_transformer_model(config_path: str | os.PathLike | dict | TransformerConfig | None = None,
                            checkpoint_path: str | os.PathLike | None = None, model: str = "bert",
                            application: str = "encoder", return_keras_model: bool = True, **kwargs):
    """bert4keras' `build_transformer_model`, returning bert4k models (or a `ModelHandle` with
    `return_keras_model=False`).

    Beyond the native builder's arguments it takes bert4keras' `compound_tokens` (extra vocabulary entries, each
    initialised to the mean of the listed token ids' embeddings — after `keep_tokens`), `attention_dropout_rate`,
    and BERT-style configs for `model="gpt2"`; `prefix` starts every layer name; `sequence_length` and `name` are
    accepted and unused. Models of the `Transformer` families expose bert4keras' sub-layer tensors
    (`bert4k.compat.views`).
    Families bert4k does not build (NEZHA, RoFormer, ELECTRA, ...) raise `NotImplementedError` naming them.
    """
    model = _check_family(model)
    application = application.lower()
    for key, reason in _REFUSED.items():
        if kwargs.pop(key, False):
            raise NotImplementedError(f"build_transformer_model({key}=True) is not supported: {reason}")
    for key in _DROPPED:
        kwargs.pop(key, None)
    for key, field in _ALIASES.items():
        if key in kwargs:
            kwargs[field] = kwargs.pop(key)
    if model == "gpt2" and config_path is not None and not isinstance(config_path, TransformerConfig):
        config_path = _gpt2_config(config_path)
    compound_tokens = kwargs.pop("compound_tokens", None)
    keep_tokens = kwargs.get("keep_tokens")
    prefix = kwargs.pop("prefix", None) or ""
    if resolve(get_family(model).model_class) in _TRANSFORMER_BUILDERS and not kwargs.get("recompute"):
        kwargs["block_intermediates"] = True  # bert4keras' per-sub-layer tensors (bert4k.compat.views)

    built = builder.build_transformer_model(config_path, checkpoint_path, model=model, application=application,
                                            **kwargs)
    if compound_tokens:
        config = built.config.replace(vocab_size=built.config.vocab_size + len(compound_tokens))
        rest = {k: v for k, v in kwargs.items() if k != "keep_tokens"}
        extended = builder.build_transformer_model(config, model=model, application=application, **rest)
        _extend_vocabulary(built, extended, compound_tokens)
        built = extended
    if prefix:
        _prefix_layer_names(built, prefix)
    return built if return_keras_model else ModelHandle(built, keep_tokens, compound_tokens)


__all__ = ["UNSUPPORTED_FAMILIES", "ModelHandle", "build_transformer_model"]
