"""ALBERT checkpoints: the config files, Google TF names and Hugging Face names.

ALBERT is a configuration of the one `Transformer`: factorised embeddings (`embedding_size` E, then the E→H
`Embedding-Mapping` Dense), post-LN BERT blocks, and an MLM head H→E (Dense + activation, LayerNorm) tied to the
E-wide token embedding, plus a bias. Family `albert` applies one block `num_hidden_layers` times
(`shared_layers=True`), as the checkpoints are trained; `albert_unshared` expands the checkpoint into
`num_hidden_layers` independent blocks, which fine-tuning updates separately, and exports one layer group per block.

Canonical names are Hugging Face's bare `AlbertModel` names (`embeddings.*`, `encoder.embedding_hidden_mapping_in.*`,
`encoder.albert_layer_groups.{g}.albert_layers.{k}.*`, `pooler.*`) plus the `AlbertForMaskedLM` head
(`predictions.{dense,LayerNorm,bias}`; `predictions.decoder` is tied to the word embeddings).
Google names (google-research/albert `modeling.py` + `run_pretraining.py`) are converted to them by one table.

GELU: google-research/albert `modeling.py` maps `"hidden_act": "gelu"` to its `gelu()`, which computes the tanh
approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, used in the blocks and in the MLM transform
(`cls/predictions/transform/dense`). So a Google `albert_config.json` saying "gelu" is read as `gelu_tanh`. A Hugging
Face `config.json` (`model_type: albert`) keeps HF's meaning: `gelu` = exact erf GELU, `gelu_new` = tanh (HF's
`AlbertConfig` defaults to `gelu_new`, and its albert-base-v2 config names it, matching the original code).
"""
from __future__ import annotations

import re

from bert4k.checkpoints.bert import embedding_specs, rows, strip_prefix
from bert4k.checkpoints.specs import WeightSpec, linear_spec, norm_spec, transpose

# Whole canonical names (regular expressions) the model never uses: buffers, the decoder copy of the tied embedding
# and of `predictions.bias`, and the sentence-order head.
IGNORED = (r"embeddings\.position_ids", r"embeddings\.token_type_ids", r"predictions\.decoder\.(weight|bias)",
           r"sop_classifier\.classifier\.(weight|bias)")
HEADS = (r"pooler\.(weight|bias)", r"predictions\..+")
TIED_HEADS = (("predictions.decoder.weight", "embeddings.word_embeddings.weight"),)
GROUP = "encoder.albert_layer_groups.{}.albert_layers.0"

# (Google scope, canonical scope, kind): "dense" = kernel [in, out] / bias, "norm" = gamma / beta, "tensor" = as is.
_SCOPES = [
    ("bert/embeddings/word_embeddings", "embeddings.word_embeddings.weight", "tensor"),
    ("bert/embeddings/position_embeddings", "embeddings.position_embeddings.weight", "tensor"),
    ("bert/embeddings/token_type_embeddings", "embeddings.token_type_embeddings.weight", "tensor"),
    ("bert/embeddings/LayerNorm", "embeddings.LayerNorm", "norm"),
    ("bert/encoder/embedding_hidden_mapping_in", "encoder.embedding_hidden_mapping_in", "dense"),
    ("bert/pooler/dense", "pooler", "dense"),
    ("cls/predictions/transform/dense", "predictions.dense", "dense"),
    ("cls/predictions/transform/LayerNorm", "predictions.LayerNorm", "norm"),
    ("cls/predictions/output_bias", "predictions.bias", "tensor"),
    ("cls/seq_relationship/output_weights", "sop_classifier.classifier.weight", "tensor"),  # [2, H], like HF
    ("cls/seq_relationship/output_bias", "sop_classifier.classifier.bias", "tensor"),
]
# Inside `bert/encoder/transformer/group_{g}/inner_group_{k}/` ↔ `encoder.albert_layer_groups.{g}.albert_layers.{k}.`
_LAYER_SCOPES = [
    ("attention_1/self/query", "attention.query", "dense"),
    ("attention_1/self/key", "attention.key", "dense"),
    ("attention_1/self/value", "attention.value", "dense"),
    ("attention_1/output/dense", "attention.dense", "dense"),
    ("LayerNorm", "attention.LayerNorm", "norm"),  # after attention
    ("ffn_1/intermediate/dense", "ffn", "dense"),
    ("ffn_1/intermediate/output/dense", "ffn_output", "dense"),
    ("LayerNorm_1", "full_layer_layer_norm", "norm"),  # after the feed-forward
]
_LEAVES = {"dense": (("kernel", "weight", True), ("bias", "bias", False)),
           "norm": (("gamma", "weight", False), ("beta", "bias", False))}


def _names(scopes) -> dict[str, tuple[str, bool]]:
    """Google name → (canonical name, transpose?) for every tensor the scopes hold."""
    table = {}
    for google, canonical, kind in scopes:
        if kind == "tensor":
            table[google] = (canonical, False)
            continue
        for google_leaf, canonical_leaf, flip in _LEAVES[kind]:
            table[f"{google}/{google_leaf}"] = (f"{canonical}.{canonical_leaf}", flip)
    return table


_FROM_GOOGLE = _names(_SCOPES)
_LAYER_FROM_GOOGLE = _names(_LAYER_SCOPES)
_TO_GOOGLE = {canonical: (google, flip) for google, (canonical, flip) in _FROM_GOOGLE.items()}
_LAYER_TO_GOOGLE = {canonical: (google, flip) for google, (canonical, flip) in _LAYER_FROM_GOOGLE.items()}
_GOOGLE_LAYER = re.compile(r"^bert/encoder/transformer/group_(\d+)/inner_group_(\d+)/(.+)$")
_CANONICAL_LAYER = re.compile(r"^encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.(.+)$")


def layer_specs(block, prefix: str) -> list[WeightSpec]:
    """One ALBERT layer (`prefix` like `encoder.albert_layer_groups.0.albert_layers.0`)."""
    attention = block.attention
    return [
        *linear_spec(attention.query, f"{prefix}.attention.query"),
        *linear_spec(attention.key, f"{prefix}.attention.key"),
        *linear_spec(attention.value, f"{prefix}.attention.value"),
        *linear_spec(attention.attention_output, f"{prefix}.attention.dense"),
        *norm_spec(block.attention_norm, f"{prefix}.attention.LayerNorm"),
        *linear_spec(block.feed_forward.inner, f"{prefix}.ffn"),
        *linear_spec(block.feed_forward.outer, f"{prefix}.ffn_output"),
        *norm_spec(block.ffn_norm, f"{prefix}.full_layer_layer_norm"),
    ]


def albert_specs(model, keep_tokens=None) -> list[WeightSpec]:
    """Shared model: its one block is group 0. Unshared model: block i is group i (see `GroupTensors`)."""
    specs = embedding_specs(model, keep_tokens)
    if model.embedding_mapping is not None:
        specs += linear_spec(model.embedding_mapping, "encoder.embedding_hidden_mapping_in")
    blocks = model.blocks[:1] if model.config.shared_layers else model.blocks
    for group, block in enumerate(blocks):
        specs += layer_specs(block, GROUP.format(group))
    if model.pooler is not None:
        specs += linear_spec(model.pooler, "pooler", required=False)
    if model.mlm_dense is not None:
        specs += linear_spec(model.mlm_dense, "predictions.dense")
        specs += norm_spec(model.mlm_norm, "predictions.LayerNorm")
        specs.append(WeightSpec(model.mlm_bias.bias, "predictions.bias", rows(keep_tokens)))
    return specs


class GroupTensors(dict):
    """Canonical tensors in which, when the checkpoint has a single layer group, `albert_layer_groups.{i}` also
    answers for every i by group 0: this is how `albert_unshared` expands one shared block into L independent ones
    (and why its export, one group per layer, loads back)."""

    _GROUP = re.compile(r"^encoder\.albert_layer_groups\.\d+\.")

    def __init__(self, tensors: dict):
        super().__init__(tensors)
        groups = {m.group(1) for k in self if (m := _CANONICAL_LAYER.match(k))}
        self.single_group = groups == {"0"}

    def _fallback(self, key):
        if self.single_group and isinstance(key, str) and self._GROUP.match(key):
            fallback = self._GROUP.sub("encoder.albert_layer_groups.0.", key)
            if dict.__contains__(self, fallback):
                return fallback
        return None

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or self._fallback(key) is not None

    def __missing__(self, key):
        fallback = self._fallback(key)
        if fallback is None:
            raise KeyError(key)
        return dict.__getitem__(self, fallback)


def hf_albert_names(tensors: dict) -> GroupTensors:
    """HF `AlbertModel` / `AlbertForMaskedLM` / `AlbertForPreTraining` tensors → canonical names."""
    return GroupTensors(strip_prefix(tensors, ("albert.",)))


def google_albert_names(tensors: dict) -> GroupTensors:
    """Google TF names → canonical names (kernels transposed); names outside the table are kept (reported unused)."""
    out = {}
    for name, value in tensors.items():
        layer = _GOOGLE_LAYER.match(name)
        if layer and layer.group(3) in _LAYER_FROM_GOOGLE:
            canonical, flip = _LAYER_FROM_GOOGLE[layer.group(3)]
            canonical = f"encoder.albert_layer_groups.{layer.group(1)}.albert_layers.{layer.group(2)}.{canonical}"
        elif name in _FROM_GOOGLE:
            canonical, flip = _FROM_GOOGLE[name]
        else:
            canonical, flip = name, False
        out[canonical] = transpose(value) if flip else value
    return GroupTensors(out)


def to_google_albert(tensors: dict) -> dict:
    """Canonical names → Google TF names, for export."""
    out = {}
    for name, value in tensors.items():
        layer = _CANONICAL_LAYER.match(name)
        if layer:
            google, flip = _LAYER_TO_GOOGLE[layer.group(3)]
            google = f"bert/encoder/transformer/group_{layer.group(1)}/inner_group_{layer.group(2)}/{google}"
        else:
            google, flip = _TO_GOOGLE[name]
        out[google] = transpose(value) if flip else value
    return out


# === detection and the Hugging Face config of an export ===

def detect_albert(evidence) -> str | None:
    """HF `model_type: albert` / an `Albert*` architecture, Google's `albert_config.json`, ALBERT-only fields or
    ALBERT tensor names."""
    if evidence.model_type == "albert":
        return "config.json says model_type 'albert'"
    if evidence.model_type is not None:
        return None
    if arch := evidence.architecture("Albert"):
        return f"config.json names architecture {arch!r}"
    if evidence.file_name == "albert_config.json":
        return "Google albert_config.json"
    if any(k in evidence.raw for k in ("num_hidden_groups", "inner_group_num")):
        return "ALBERT config fields (num_hidden_groups / inner_group_num)"
    if evidence.any_name("bert/encoder/transformer/group_", "encoder.albert_layer_groups.", "albert."):
        return "ALBERT tensor names (layer groups)"
    return None


def hf_config(config, model) -> dict:
    """HF `config.json` of an exported ALBERT (one layer group when shared, one per layer when unshared)."""
    from bert4k.config import hf_activation

    groups = 1 if config.shared_layers else config.num_hidden_layers
    arch = "AlbertForMaskedLM" if getattr(model, "mlm_dense", None) is not None else "AlbertModel"
    return dict(model_type="albert", architectures=[arch], vocab_size=config.vocab_size,
                embedding_size=config.embedding_size or config.hidden_size, hidden_size=config.hidden_size,
                num_hidden_layers=config.num_hidden_layers, num_hidden_groups=groups, inner_group_num=1,
                num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
                hidden_act=hf_activation(config.hidden_act), max_position_embeddings=config.max_position_embeddings,
                type_vocab_size=config.type_vocab_size, hidden_dropout_prob=config.hidden_dropout_prob,
                attention_probs_dropout_prob=config.attention_probs_dropout_prob, layer_norm_eps=config.layer_norm_eps,
                initializer_range=config.initializer_range, pad_token_id=config.pad_token_id)
