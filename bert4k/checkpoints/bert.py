"""BERT / RoBERTa (and the shared embedding/block/head maps other families reuse).

Canonical names are Hugging Face's bare-model names (`embeddings.word_embeddings.weight`, `encoder.layer.0...`,
`cls.predictions...`); Google TF names and prefixed HF names are converted to them first.
"""
from __future__ import annotations

import re

import numpy as np

from bert4k.checkpoints.specs import WeightSpec, linear_spec, norm_spec, transpose

# Whole canonical names (regular expressions) a checkpoint may hold that the model never uses: buffers, the NSP head,
# and the decoder weight/bias that HF keeps as copies of the word embeddings / `cls.predictions.bias`.
IGNORED = (r"embeddings\.position_ids", r"embeddings\.token_type_ids", r"cls\.seq_relationship\.(weight|bias)",
           r"cls\.predictions\.decoder\.(weight|bias)")
HEADS = (r"pooler\.dense\.(weight|bias)", r"cls\.predictions\..+")
# (LM head, embedding it must equal): a differing head is an untied head the tied model cannot represent.
TIED_HEADS = (("cls.predictions.decoder.weight", "embeddings.word_embeddings.weight"),)


def rows(keep_tokens):
    """Loader that keeps only the `keep_tokens` rows (vocabulary trimming)."""
    if keep_tokens is None:
        return None
    keep = np.asarray(keep_tokens, dtype=np.int64)
    return lambda x: x[keep]


def embedding_specs(model, keep_tokens=None) -> list[WeightSpec]:
    specs = [WeightSpec(model.token_embedding.embeddings, "embeddings.word_embeddings.weight", rows(keep_tokens)),
             WeightSpec(model.position_embedding.embeddings, "embeddings.position_embeddings.weight")]
    if model.segment_embedding is not None:
        specs.append(WeightSpec(model.segment_embedding.embeddings, "embeddings.token_type_embeddings.weight"))
    if model.embedding_norm is not None:
        specs += norm_spec(model.embedding_norm, "embeddings.LayerNorm")
    return specs


def block_specs(block, prefix: str) -> list[WeightSpec]:
    """One BERT encoder layer: `prefix` like `encoder.layer.3`."""
    attention = block.attention
    return [
        *linear_spec(attention.query, f"{prefix}.attention.self.query"),
        *linear_spec(attention.key, f"{prefix}.attention.self.key"),
        *linear_spec(attention.value, f"{prefix}.attention.self.value"),
        *linear_spec(attention.attention_output, f"{prefix}.attention.output.dense"),
        *norm_spec(block.attention_norm, f"{prefix}.attention.output.LayerNorm"),
        *linear_spec(block.feed_forward.inner, f"{prefix}.intermediate.dense"),
        *linear_spec(block.feed_forward.outer, f"{prefix}.output.dense"),
        *norm_spec(block.ffn_norm, f"{prefix}.output.LayerNorm"),
    ]


def head_specs(model, keep_tokens=None) -> list[WeightSpec]:
    specs = []
    if model.pooler is not None:
        specs += linear_spec(model.pooler, "pooler.dense", required=False)
    if model.mlm_dense is not None:
        specs += linear_spec(model.mlm_dense, "cls.predictions.transform.dense")
        specs += norm_spec(model.mlm_norm, "cls.predictions.transform.LayerNorm")
        specs.append(WeightSpec(model.mlm_bias.bias, "cls.predictions.bias", rows(keep_tokens)))
    return specs


def bert_specs(model, keep_tokens=None) -> list[WeightSpec]:
    specs = embedding_specs(model, keep_tokens)
    for i, block in enumerate(model.blocks):
        specs += block_specs(block, f"encoder.layer.{i}")
    return specs + head_specs(model, keep_tokens)


_HF_RENAMES = [
    (re.compile(r"^lm_head\.decoder\."), "cls.predictions.decoder."),
    (re.compile(r"^lm_head\.dense\."), "cls.predictions.transform.dense."),
    (re.compile(r"^lm_head\.layer_norm\."), "cls.predictions.transform.LayerNorm."),
    (re.compile(r"^lm_head\.bias$"), "cls.predictions.bias"),
    (re.compile(r"LayerNorm\.gamma$"), "LayerNorm.weight"),
    (re.compile(r"LayerNorm\.beta$"), "LayerNorm.bias"),
]


def strip_prefix(tensors: dict, prefixes=("bert.", "roberta.", "model.", "transformer.")) -> dict:
    """Drop a task-model prefix (`bert.` …) carried by the body's tensors."""
    for prefix in prefixes:
        if any(k.startswith((prefix + "embeddings.", prefix + "encoder.")) for k in tensors):
            return {k.removeprefix(prefix): v for k, v in tensors.items()}
    return tensors


def hf_bert_names(tensors: dict) -> dict:
    """HF BERT/RoBERTa tensors → canonical names."""
    out = {}
    for key, value in strip_prefix(tensors).items():
        for pattern, repl in _HF_RENAMES:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def google_to_canonical(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """`bert/encoder/layer_3/attention/self/query/kernel` → `encoder.layer.3.attention.self.query.weight` (transposed)."""
    parts = name.split("/")
    if parts[0] == "bert":
        parts = parts[1:]
    parts = [re.sub(r"^layer_(\d+)$", r"layer.\1", p) for p in parts]
    last = parts[-1]
    if last == "kernel":
        return ".".join(parts[:-1] + ["weight"]), transpose(value)
    if last in ("gamma", "beta"):
        return ".".join(parts[:-1] + ["weight" if last == "gamma" else "bias"]), value
    if parts[:2] == ["cls", "predictions"] and last == "output_bias":
        return "cls.predictions.bias", value
    if parts[:2] == ["cls", "seq_relationship"]:
        return "cls.seq_relationship." + ("weight" if last == "output_weights" else "bias"), value
    if parts[0] == "embeddings":
        return ".".join(parts) + ".weight", value
    return ".".join(parts), value


def canonical_to_google(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """Inverse of `google_to_canonical` for export."""
    if name == "cls.predictions.bias":
        return "cls/predictions/output_bias", value
    if name.startswith("cls.seq_relationship."):
        return "cls/seq_relationship/" + ("output_weights" if name.endswith("weight") else "output_bias"), value
    parts = name.split(".")
    parts = [f"layer_{parts[i + 1]}" if p == "layer" else p for i, p in enumerate(parts)
             if not (i > 0 and parts[i - 1] == "layer")]
    if parts[0] == "embeddings" and parts[1] != "LayerNorm":
        path = "/".join(parts[:-1])
    elif parts[-2] == "LayerNorm":
        path = "/".join(parts[:-1] + ["gamma" if parts[-1] == "weight" else "beta"])
    elif parts[-1] == "weight":
        path, value = "/".join(parts[:-1] + ["kernel"]), transpose(value)
    else:
        path = "/".join(parts)
    return (path if path.startswith("cls/") else "bert/" + path), value


def google_bert_names(tensors: dict) -> dict:
    return dict(google_to_canonical(k, v) for k, v in tensors.items())


def to_google_bert(tensors: dict) -> dict:
    return dict(canonical_to_google(k, v) for k, v in tensors.items())


# === detection and the Hugging Face config of an export ===

_BERT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


def detect_bert(evidence) -> str | None:
    """HF `model_type: bert` (hfl's RoBERTa-wwm checkpoints are this: BERT under a RoBERTa name), a `Bert*`
    architecture, Google's `bert_config.json`, or BERT-named tensors with BERT fields."""
    if evidence.model_type == "bert":
        return "config.json says model_type 'bert'"
    if evidence.model_type not in (None, "roberta", "xlm-roberta"):
        return None
    if arch := evidence.architecture("Bert"):
        return f"config.json names architecture {arch!r}"
    if evidence.model_type is not None:
        return None
    if evidence.file_name == "bert_config.json":
        return "Google bert_config.json"
    if evidence.has(*_BERT_FIELDS) and evidence.any_name("bert/", "bert.", "embeddings.", "encoder.layer."):
        return "BERT fields and BERT tensor names"
    if evidence.has(*_BERT_FIELDS, "type_vocab_size"):
        return "BERT config fields (type_vocab_size, num_hidden_layers, ...)"
    return None


def detect_roberta(evidence) -> str | None:
    """HF `model_type: roberta` / `xlm-roberta` whose tensors are RoBERTa's (not BERT-named)."""
    if evidence.model_type in ("roberta", "xlm-roberta") and not evidence.architecture("Bert"):
        if evidence.any_name("bert."):
            return None
        return f"config.json says model_type {evidence.model_type!r}"
    if not evidence.model_type and (arch := evidence.architecture("Roberta", "XLMRoberta")):
        return f"config.json names architecture {arch!r}"
    return None


def hf_config(config, model) -> dict:
    """HF `config.json` (BERT, or RoBERTa when positions are offset) of an exported BERT-style model."""
    from bert4k.config import hf_activation

    if config.key_size not in (None, config.head_size) or config.embedding_size not in (None, config.hidden_size):
        raise ValueError("export: key_size/embedding_size different from the head/hidden size have no Hugging Face "
                         "BERT equivalent")
    roberta = config.position_offset > 0  # RoBERTa's head names differ from the exported BERT ones: body only
    arch = "RobertaModel" if roberta else "BertForMaskedLM" if getattr(model, "mlm_dense", None) else "BertModel"
    out = dict(model_type="roberta" if roberta else "bert", architectures=[arch], vocab_size=config.vocab_size,
               hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
               num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
               hidden_act=hf_activation(config.hidden_act), max_position_embeddings=config.max_position_embeddings,
               type_vocab_size=config.type_vocab_size, hidden_dropout_prob=config.hidden_dropout_prob,
               attention_probs_dropout_prob=config.attention_probs_dropout_prob, layer_norm_eps=config.layer_norm_eps,
               initializer_range=config.initializer_range, pad_token_id=config.pad_token_id)
    if roberta:
        out["pad_token_id"] = config.position_offset - 1
    return out
