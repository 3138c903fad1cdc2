"""`build_transformer_model`: the one entry point, shaped like bert4keras'."""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import keras

from bert4k.checkpoints.deferred import deferred_initialization
from bert4k.checkpoints.readers import has_checkpoint, tensor_names
from bert4k.config import TransformerConfig, read_json
from bert4k.models.checkpoint_io import load_checkpoint
from bert4k.models.families import Family, detect_family, get_family

log = logging.getLogger("bert4k.models")

# bert4keras keyword names → TransformerConfig fields
_BERT4KERAS_ALIASES = {"dropout_rate": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
                       "segment_vocab_size": ("type_vocab_size",), "max_position": ("max_position_embeddings",)}


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict, dict]:
    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    overrides, model_kwargs = {}, {}
    for key, value in kwargs.items():
        if key in _BERT4KERAS_ALIASES:
            for field in _BERT4KERAS_ALIASES[key]:
                overrides[field] = value
        elif key in fields:
            overrides[key] = value
        else:
            model_kwargs[key] = value
    return overrides, model_kwargs


def _source_inputs(tensor) -> list:
    """The `keras.Input` tensors that `tensor` is computed from, in depth-first order."""
    found, seen, stack = [], set(), [tensor]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        history = t._keras_history
        node = history.operation._inbound_nodes[history.node_index]
        if node.is_input:
            found.append(t)
        else:
            stack.extend(reversed(node.input_tensors))
    return found


def _condition_model(cond, additional_input_layers=None):
    """bert4keras' tensor form of `layer_norm_cond` → `keras.Model(source inputs, cond)`, which the model
    computes inside (so `.keras` save/load and cached decoding keep working); other values pass through."""
    if not isinstance(cond, keras.KerasTensor):
        if additional_input_layers is not None:
            raise ValueError("additional_input_layers is only used with a Keras-tensor layer_norm_cond")
        return cond
    if len(cond.shape) != 2:
        raise ValueError(f"layer_norm_cond: expected a [batch, size] tensor, got shape {cond.shape}")
    if additional_input_layers is None:
        sources = _source_inputs(cond)
    elif isinstance(additional_input_layers, (list, tuple)):
        sources = list(additional_input_layers)
    else:
        sources = [additional_input_layers]
    return keras.Model(sources[0] if len(sources) == 1 else sources, cond, name="LayerNorm-Condition")


def _config_and_family(config_path, checkpoint_path, model: str | None) -> tuple[TransformerConfig, Family]:
    """Read the config with the family `model`, or with the family its files look like when `model` is None.

    An explicit `model` wins; when the files look like another kind of family a warning says so, and an error
    while reading says which family the files look like."""
    if isinstance(config_path, TransformerConfig):
        family = get_family(model or "bert")
        return config_path, family
    raw = dict(config_path) if isinstance(config_path, dict) else read_json(config_path)
    names = None if checkpoint_path is None else (lambda: tensor_names(checkpoint_path))
    if model is None:
        detected, reason = detect_family(raw, names)
    else:
        try:
            detected, reason = detect_family(raw, names)
        except ValueError:  # an unknown model_type: the explicit family decides
            detected, reason = get_family(model), None
    if model is None:
        family = detected
        if reason is not None:
            log.info("%s: family %r (%s)", raw.get("__path__", "config"), family.name, reason)
    else:
        family = get_family(model)
        if reason is not None and detected.kind != family.kind:
            log.warning("%s: building model=%r, but the files look like %r (%s)", raw.get("__path__", "config"),
                        model, detected.name, reason)
    try:
        return family.config(raw), family
    except ValueError as e:
        raise ValueError(f"{e}{_hint(family, detected, reason)}") from None


def _hint(family: Family, detected: Family, reason: str | None) -> str:
    if reason is None or detected.kind == family.kind:
        return ""
    return (f". The files look like family {detected.name!r} ({reason}), not {family.name!r}: pass "
            f"model={detected.name!r} or leave model unset")


def build_transformer_model(config_path: str | os.PathLike | dict | TransformerConfig | None = None,
                            checkpoint_path: str | os.PathLike | None = None, model: str | None = None,
                            application: str = "encoder", keep_tokens=None, **kwargs):
    """Build a model for `application` and load `checkpoint_path` if given.

    `config_path`: a config json file or directory (Google `bert_config.json`, HF `config.json`, OpenAI
    `hparams.json`, ...), a dict, or a `TransformerConfig`. A directory given alone (no `checkpoint_path`) is also
    the checkpoint: its weights are loaded. `model`: the family (`bert`, `roberta`, `albert`, `gpt2`, `gpt2_ml`,
    `t5`, `t5.1.1`, `mt5`, ...); None detects it from the config and the checkpoint's tensor names (`bert` when
    nothing says otherwise). Keyword arguments that name config fields (e.g. `key_size`, `dropout_rate`) override
    the config; the rest go to the model (`with_pool`, `with_mlm`, `logits`, `layer_norm_cond`, `dtype`, ...).
    `layer_norm_cond` may be an int (an extra `[batch, size]` input) or, as in bert4keras, a Keras tensor built from
    `keras.Input`s (found automatically, or given as `additional_input_layers`), which become extra model inputs.
    After loading, `model.load_report` lists the tensors loaded, unused and absent (optional).
    """
    if config_path is None:
        if checkpoint_path is None or not os.path.isdir(checkpoint_path):
            raise ValueError("config_path is required (or pass a checkpoint directory holding the config)")
        config_path = checkpoint_path
    elif (checkpoint_path is None and isinstance(config_path, (str, os.PathLike)) and os.path.isdir(config_path)
          and has_checkpoint(config_path)):
        checkpoint_path = config_path
    overrides, model_kwargs = _split_kwargs(kwargs)
    if "layer_norm_cond" in model_kwargs or "additional_input_layers" in model_kwargs:
        model_kwargs["layer_norm_cond"] = _condition_model(model_kwargs.get("layer_norm_cond"),
                                                           model_kwargs.pop("additional_input_layers", None))
    config, family = _config_and_family(config_path, checkpoint_path, model)
    if keep_tokens is not None:
        overrides["vocab_size"] = len(keep_tokens)
    config = config.replace(**overrides) if overrides else config
    if checkpoint_path is None:
        return family.build(config, application=application, **model_kwargs)
    with deferred_initialization() as deferred:  # no random values for weights the checkpoint overwrites
        built = family.build(config, application=application, **model_kwargs)
    load_checkpoint(built, checkpoint_path, keep_tokens=keep_tokens, deferred=deferred)
    return built
