"""One `TransformerConfig` for every family, and readers for the config files checkpoints ship with."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

ACTIVATIONS = {
    # HF / Google names -> the exact function bert4k computes.
    "gelu": "gelu_erf",
    "gelu_erf": "gelu_erf",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
    "tanh": "tanh",
    "linear": "linear",
    "swish": "silu",
    "silu": "silu",
}


@dataclasses.dataclass
class TransformerConfig:
    """Hyper-parameters of one Transformer stack (names follow `bert_config.json`)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu_erf"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    key_size: int | None = None  # per-head size of queries/keys; None = hidden_size // heads
    embedding_size: int | None = None  # ALBERT factorised embeddings; None = hidden_size
    position_offset: int = 0  # original RoBERTa: position rows start at padding_idx + 1 = 2
    norm_position: str = "post"  # post (BERT) | pre (GPT-2) | gpt2_ml
    embedding_norm: bool = True  # LayerNorm right after the embeddings (BERT, GPT2-ML)
    final_norm: bool = False  # LayerNorm after the last block (GPT-2)
    pad_token_id: int = 0
    shared_layers: bool = False  # ALBERT: one block applied num_hidden_layers times
    lm_head: str = "mlm"  # mlm (Dense + LayerNorm + tied + bias, BERT) | tied (tied only, GPT-2)
    # T5 only
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    num_decoder_layers: int | None = None
    feed_forward_proj: str = "relu"
    tie_word_embeddings: bool = True
    decoder_start_token_id: int = 0
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if field.name in _FIELD_RULES:
                check_field(field.name, getattr(self, field.name), _FIELD_RULES[field.name])
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"config field 'hidden_act': unknown activation {self.hidden_act!r}; known: {sorted(ACTIVATIONS)}")
        self.hidden_act = ACTIVATIONS[self.hidden_act]
        if self.key_size is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"config: hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; set key_size/head size explicitly"
            )
        if self.lm_head not in ("mlm", "tied"):
            raise ValueError(f"config field 'lm_head' must be mlm|tied, got {self.lm_head!r}")
        if self.norm_position not in ("post", "pre", "gpt2_ml"):
            raise ValueError(f"config field 'norm_position' must be post|pre|gpt2_ml, got {self.norm_position!r}")
        if self.position_offset and self.pad_token_id != self.position_offset - 1:
            raise ValueError(f"config: position_offset {self.position_offset} must be pad_token_id + 1 "
                             f"({self.pad_token_id + 1}): positions count from the padding id, as in RoBERTa")

    @property
    def head_size(self) -> int:
        """Per-head size of the values (and of queries/keys unless `key_size` is set)."""
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TransformerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def replace(self, **changes: Any) -> TransformerConfig:
        return dataclasses.replace(self, **changes)



# === field types and ranges ===

@dataclasses.dataclass(frozen=True)
class Rule:
    """A field's accepted type(s) (`bool` never passes for a number) and inclusive lower / exclusive upper bound."""

    kinds: tuple[type, ...]
    low: float | None = None
    high: float | None = None
    optional: bool = False

    def describe(self) -> str:
        kinds = " or ".join("number" if k is float else k.__name__ for k in self.kinds)
        bounds = []
        if self.low is not None:
            bounds.append(f">= {self.low:g}")
        if self.high is not None:
            bounds.append(f"< {self.high:g}")
        return kinds + (" " + " and ".join(bounds) if bounds else "") + (" (or null)" if self.optional else "")


POSITIVE = Rule((int,), 1)
COUNT = Rule((int,), 0)
PROBABILITY = Rule((float,), 0, 1)
POSITIVE_FLOAT = Rule((float,), 1e-30)
NONNEG_FLOAT = Rule((float,), 0)
TOKEN_ID = Rule((int,), -1, optional=True)
FLAG = Rule((bool,))
NAME = Rule((str,))

_FIELD_RULES = {
    "vocab_size": POSITIVE, "hidden_size": POSITIVE, "num_hidden_layers": POSITIVE, "num_attention_heads": POSITIVE,
    "intermediate_size": POSITIVE, "hidden_act": NAME, "max_position_embeddings": POSITIVE, "type_vocab_size": COUNT,
    "hidden_dropout_prob": PROBABILITY, "attention_probs_dropout_prob": PROBABILITY, "layer_norm_eps": POSITIVE_FLOAT,
    "initializer_range": NONNEG_FLOAT, "key_size": Rule((int,), 1, optional=True),
    "embedding_size": Rule((int,), 1, optional=True), "position_offset": COUNT, "norm_position": NAME,
    "embedding_norm": FLAG, "final_norm": FLAG, "pad_token_id": Rule((int,), -1), "shared_layers": FLAG,
    "lm_head": NAME, "relative_attention_num_buckets": POSITIVE, "relative_attention_max_distance": POSITIVE,
    "num_decoder_layers": Rule((int,), 1, optional=True), "feed_forward_proj": NAME, "tie_word_embeddings": FLAG,
    "decoder_start_token_id": COUNT, "eos_token_id": TOKEN_ID,
}

# Fields of the config files checkpoints ship with (HF, Google, OpenAI, GPT2-ML, bert4keras T5), checked when read.
RAW_RULES = {
    **{k: v for k, v in _FIELD_RULES.items() if k not in ("hidden_act", "pad_token_id", "eos_token_id")},
    "pad_token_id": TOKEN_ID, "eos_token_id": TOKEN_ID, "bos_token_id": TOKEN_ID, "num_hidden_groups": POSITIVE,
    "inner_group_num": POSITIVE, "n_vocab": POSITIVE, "n_ctx": POSITIVE, "n_embd": POSITIVE, "n_head": POSITIVE,
    "n_layer": POSITIVE, "n_positions": POSITIVE, "n_inner": Rule((int,), 1, optional=True), "resid_pdrop": PROBABILITY,
    "attn_pdrop": PROBABILITY, "embd_pdrop": PROBABILITY, "layer_norm_epsilon": POSITIVE_FLOAT, "d_model": POSITIVE,
    "d_kv": POSITIVE, "d_ff": POSITIVE, "num_layers": POSITIVE, "num_heads": POSITIVE, "dropout_rate": PROBABILITY,
    "attention_head_size": POSITIVE, "activation_function": NAME, "scale_decoder_outputs": FLAG,
    "key_size": Rule((int,), 1, optional=True), "embedding_size": Rule((int,), 1, optional=True),
}


def check_field(name: str, value: Any, rule: Rule) -> None:
    """Raise `ValueError` naming `name`, the expected type/range and the value got."""
    if value is None and rule.optional:
        return
    kinds = rule.kinds + ((int,) if float in rule.kinds else ())
    ok = isinstance(value, kinds) and (bool in rule.kinds or not isinstance(value, bool))
    if ok and rule.low is not None and value < rule.low:
        ok = False
    if ok and rule.high is not None and value >= rule.high:
        ok = False
    if not ok:
        raise ValueError(f"config field {name!r}: expected {rule.describe()}, got {value!r} ({type(value).__name__})")


def check_raw_config(raw: dict) -> None:
    """Check the type and range of every known field of a config json; the error names the file."""
    for name, rule in RAW_RULES.items():
        if name in raw:
            try:
                check_field(name, raw[name], rule)
            except ValueError as e:
                raise config_error(raw, e) from None
    act = raw.get("hidden_act")
    if act is not None and not isinstance(act, str) and not (
            isinstance(act, list) and all(isinstance(a, str) for a in act)):
        raise config_error(raw, ValueError(f"config field 'hidden_act': expected str, got {act!r}"))


def config_error(raw: dict, error: Exception) -> ValueError:
    """`error` prefixed with the config file it comes from (once)."""
    path = raw.get("__path__", "<config dict>")
    message = str(error)
    return ValueError(message if message.startswith(path) else f"{path}: {message}")


_HF_ACTIVATIONS = {"gelu_erf": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "tanh": "tanh", "linear": "linear",
                   "silu": "silu"}


def hf_activation(name: str) -> str:
    """The Hugging Face name of bert4k activation `name` (for exported configs)."""
    return _HF_ACTIVATIONS[ACTIVATIONS[name]]

# The config file names of a checkpoint folder, in the order they are looked for.
CONFIG_FILES = ("config.json", "bert_config.json", "albert_config.json", "hparams.json")


def read_json(path: str | os.PathLike) -> dict:
    """Read a config json (or the first of `CONFIG_FILES` in a folder), naming the file in any error."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in CONFIG_FILES:
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise FileNotFoundError(f"{path}: no {' / '.join(CONFIG_FILES)} in this directory")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise TypeError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    raw["__path__"] = path
    return raw


def load_config(config_path: str | os.PathLike | dict, model: str | None = None, **overrides: Any) -> TransformerConfig:
    """Read a config file (or dict) for the family `model` (None: detected from the file), then apply `overrides`."""
    from bert4k.models.families import detect_family, get_family

    raw = dict(config_path) if isinstance(config_path, dict) else read_json(config_path)
    family = get_family(model) if model is not None else detect_family(raw)[0]
    config = family.config(raw)
    known = {f.name for f in dataclasses.fields(TransformerConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ValueError(f"unknown config override(s) {bad}")
    return config.replace(**overrides) if overrides else config
