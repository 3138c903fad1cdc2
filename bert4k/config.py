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
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"config field {name!r} must be a positive int, got {value!r}")
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


def _require(raw: dict, path: str, *names: str) -> None:
    missing = [n for n in names if n not in raw]
    if missing:
        raise ValueError(f"{path}: missing required field(s) {missing}; got fields {sorted(raw)}")


def read_json(path: str | os.PathLike) -> dict:
    """Read a config json, naming the file in any error."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("config.json", "bert_config.json", "albert_config.json", "hparams.json"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise FileNotFoundError(f"{path}: no config.json / bert_config.json / hparams.json in this directory")
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


def bert_config(raw: dict) -> TransformerConfig:
    """Google `bert_config.json` or HF `config.json` with model_type bert/roberta."""
    path = raw.get("__path__", "<config>")
    _require(raw, path, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
    model_type = raw.get("model_type", "bert")
    hidden = raw["hidden_size"]
    return TransformerConfig(
        vocab_size=raw["vocab_size"],
        hidden_size=hidden,
        num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"],
        intermediate_size=raw.get("intermediate_size", 4 * hidden),
        hidden_act=raw.get("hidden_act", "gelu"),
        max_position_embeddings=raw.get("max_position_embeddings", 512),
        type_vocab_size=raw.get("type_vocab_size", 2),
        hidden_dropout_prob=raw.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=raw.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=raw.get("layer_norm_eps", 1e-12),
        initializer_range=raw.get("initializer_range", 0.02),
        key_size=raw.get("key_size"),
        embedding_size=raw.get("embedding_size"),
        position_offset=(raw.get("pad_token_id", 1) + 1) if model_type in ("roberta", "xlm-roberta") else 0,
        pad_token_id=raw.get("pad_token_id", 0) or 0,
    )


def load_config(config_path: str | os.PathLike | dict, model: str = "bert", **overrides: Any) -> TransformerConfig:
    """Read a config file (or dict) for the family `model`, then apply `overrides`."""
    raw = dict(config_path) if isinstance(config_path, dict) else read_json(config_path)
    readers = config_readers()
    if model not in readers:
        raise ValueError(f"unknown model {model!r}; known: {sorted(readers)}")
    config = readers[model](raw)
    known = {f.name for f in dataclasses.fields(TransformerConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ValueError(f"unknown config override(s) {bad}")
    return config.replace(**overrides) if overrides else config


def config_readers() -> dict:
    """Family name -> reader of its raw json. Families register here."""
    return dict(_READERS)


_READERS = {"bert": bert_config, "roberta": bert_config}


def register_config_reader(model: str, reader) -> None:
    _READERS[model] = reader
