"""T5 / T5.1.1 / mT5: checkpoint name maps (the config reader is `bert4k.models.config_readers.t5`).

Canonical names are Hugging Face's `T5ForConditionalGeneration` names (`shared.weight`,
`encoder.block.0.layer.0.SelfAttention.q.weight`, ..., `lm_head.weight`). Mesh-TensorFlow checkpoints
(`encoder/block_000/layer_000/SelfAttention/q`, ...) are converted to them: every 2-D tensor there except the
embedding is stored `[in, out]` (`relative_attention_bias` `[heads, buckets]`) and is transposed, and the norms are
`layer_norm/scale` (T5 1.0/1.1) or `rms_norm/scale` (mT5).
"""
from __future__ import annotations

import re

import numpy as np

from bert4k.checkpoints.bert import rows
from bert4k.checkpoints.specs import WeightSpec, linear_spec, norm_spec, transpose

# Whole canonical names (regular expressions): HF's per-stack copies of the shared embedding.
IGNORED = (r"(encoder|decoder)\.embed_tokens\.weight",)

# --- weight specs (canonical HF names) ---


def _attention_specs(attention, prefix: str) -> list[WeightSpec]:
    return [*linear_spec(attention.query, f"{prefix}.q"), *linear_spec(attention.key, f"{prefix}.k"),
            *linear_spec(attention.value, f"{prefix}.v"), *linear_spec(attention.attention_output, f"{prefix}.o")]


def _ffn_specs(ffn, prefix: str) -> list[WeightSpec]:
    if ffn.gated:
        return [*linear_spec(ffn.inner, f"{prefix}.wi_0"), *linear_spec(ffn.gate, f"{prefix}.wi_1"),
                *linear_spec(ffn.outer, f"{prefix}.wo")]
    return [*linear_spec(ffn.inner, f"{prefix}.wi"), *linear_spec(ffn.outer, f"{prefix}.wo")]


def block_specs(block, prefix: str) -> list[WeightSpec]:
    """One T5 block; `prefix` like `decoder.block.3`."""
    specs = [*_attention_specs(block.self_attention, f"{prefix}.layer.0.SelfAttention"),
             *norm_spec(block.self_attention_norm, f"{prefix}.layer.0.layer_norm")]
    ffn_index = 1
    if block.cross_attention:
        specs += _attention_specs(block.cross_attention_layer, f"{prefix}.layer.1.EncDecAttention")
        specs += norm_spec(block.cross_attention_norm, f"{prefix}.layer.1.layer_norm")
        ffn_index = 2
    specs += _ffn_specs(block.feed_forward, f"{prefix}.layer.{ffn_index}.DenseReluDense")
    specs += norm_spec(block.ffn_norm, f"{prefix}.layer.{ffn_index}.layer_norm")
    return specs


def t5_specs(model, keep_tokens=None) -> list[WeightSpec]:
    """Every weight of a `bert4k.models.t5.T5` under its HF name; `keep_tokens` slices vocabulary rows."""
    keep = rows(keep_tokens)
    specs = [WeightSpec(model.token_embedding.embeddings, "shared.weight", keep)]
    for stack, blocks, bias, norm in (("encoder", model.encoder_blocks, model.encoder_position_bias, model.encoder_norm),
                                      ("decoder", model.decoder_blocks, model.decoder_position_bias, model.decoder_norm)):
        specs.append(WeightSpec(bias.embeddings, f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"))
        for i, block in enumerate(blocks):
            specs += block_specs(block, f"{stack}.block.{i}")
        specs += norm_spec(norm, f"{stack}.final_layer_norm")
    if model.lm_head is not None:
        load = transpose if keep is None else (lambda x: transpose(keep(x)))
        specs.append(WeightSpec(model.lm_head.kernel, "lm_head.weight", load, transpose))
    return specs


# --- name conversions ---


def hf_t5_names(tensors: dict) -> dict:
    """HF T5 tensors → canonical names. A file without `lm_head.weight` ties it to `shared.weight` (as HF does)."""
    out = dict(tensors)
    if "lm_head.weight" not in out and "shared.weight" in out:
        out["lm_head.weight"] = out["shared.weight"]
    return out


_TF_BLOCK = re.compile(r"^(encoder|decoder)/block_(\d+)/layer_(\d+)/(.+)$")
_TF_FINAL_NORM = re.compile(r"^(encoder|decoder)/(?:final_layer_norm|rms_norm)/scale$")


def mesh_tf_to_canonical(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """`encoder/block_001/layer_000/SelfAttention/q` → `encoder.block.1.layer.0.SelfAttention.q.weight` (transposed).

    Names that are not T5 weights come back unchanged (and are reported as unused).
    """
    if name == "shared/embedding":
        return "shared.weight", value
    if name == "decoder/logits/kernel":
        return "lm_head.weight", transpose(value)
    final = _TF_FINAL_NORM.match(name)
    if final:
        return f"{final.group(1)}.final_layer_norm.weight", value
    block = _TF_BLOCK.match(name)
    if not block:
        return name, value
    stack, index, layer, rest = block.groups()
    prefix = f"{stack}.block.{int(index)}.layer.{int(layer)}"
    if rest in ("layer_norm/scale", "rms_norm/scale"):
        return f"{prefix}.layer_norm.weight", value
    rest = rest.removesuffix("/kernel")
    return f"{prefix}.{rest.replace('/', '.')}.weight", transpose(value)


def canonical_to_mesh_tf(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """Inverse of `mesh_tf_to_canonical`, writing T5 1.x names (`layer_norm/scale`, `final_layer_norm/scale`)."""
    if name == "shared.weight":
        return "shared/embedding", value
    if name == "lm_head.weight":
        return "decoder/logits/kernel", transpose(value)
    match = re.match(r"^(encoder|decoder)\.final_layer_norm\.weight$", name)
    if match:
        return f"{match.group(1)}/final_layer_norm/scale", value
    match = re.match(r"^(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)\.weight$", name)
    if not match:
        raise ValueError(f"no mesh-TF name for T5 tensor {name!r}")
    stack, index, layer, rest = match.groups()
    prefix = f"{stack}/block_{int(index):03d}/layer_{int(layer):03d}"
    if rest == "layer_norm":
        return f"{prefix}/layer_norm/scale", value
    suffix = "/kernel" if rest.startswith("DenseReluDense.") else ""
    return f"{prefix}/{rest.replace('.', '/')}{suffix}", transpose(value)


def mesh_tf_names(tensors: dict) -> dict:
    return dict(mesh_tf_to_canonical(k, v) for k, v in tensors.items())


def to_mesh_tf(tensors: dict) -> dict:
    return dict(canonical_to_mesh_tf(k, v) for k, v in tensors.items())


# === detection and the Hugging Face config of an export ===

def _gated(evidence) -> bool:
    proj, act = evidence.raw.get("feed_forward_proj"), evidence.raw.get("hidden_act")
    return (isinstance(proj, str) and proj.startswith("gated-")) or isinstance(act, list)


def _t5_shaped(evidence) -> str | None:
    if evidence.model_type in ("t5", "mt5"):
        return f"config.json says model_type {evidence.model_type!r}"
    if evidence.model_type is not None:
        return None
    if arch := evidence.architecture("T5", "MT5"):
        return f"config.json names architecture {arch!r}"
    if evidence.has("d_model", "num_heads", "num_layers"):
        return "T5 config fields (d_model, num_heads, num_layers)"
    if evidence.any_name("encoder/block_000/", "encoder.block.0."):
        return "T5 tensor names (encoder/block_000/...)"
    if any(k in evidence.raw for k in ("attention_head_size", "relative_attention_num_buckets")):
        return "bert4keras T5 config fields (attention_head_size / relative_attention_num_buckets)"
    return None


def detect_t5(evidence) -> str | None:
    """T5 1.0: T5-shaped files with a plain (not gated) feed-forward."""
    reason = _t5_shaped(evidence)
    return None if reason is None or _gated(evidence) or evidence.model_type == "mt5" else reason


def detect_t5_v11(evidence) -> str | None:
    """T5.1.1: T5-shaped files with a gated feed-forward (`gated-gelu`, or a bert4keras `["gelu", "linear"]`)."""
    reason = _t5_shaped(evidence)
    return None if reason is None or not _gated(evidence) or evidence.model_type == "mt5" else reason + ", gated"


def detect_mt5(evidence) -> str | None:
    return "config.json says model_type 'mt5'" if evidence.model_type == "mt5" else None


def hf_config(config, model) -> dict:
    """HF `config.json` of an exported T5 (`T5ForConditionalGeneration`)."""
    from bert4k.config import hf_activation

    gated = config.feed_forward_proj.startswith("gated-")
    act = hf_activation(config.hidden_act)
    proj = "gated-gelu" if gated and act == "gelu_new" else ("gated-" if gated else "") + act
    return dict(model_type="t5", architectures=["T5ForConditionalGeneration"], vocab_size=config.vocab_size,
                d_model=config.hidden_size, d_kv=config.key_size or config.head_size, d_ff=config.intermediate_size,
                num_layers=config.num_hidden_layers,
                num_decoder_layers=config.num_decoder_layers or config.num_hidden_layers,
                num_heads=config.num_attention_heads,
                relative_attention_num_buckets=config.relative_attention_num_buckets,
                relative_attention_max_distance=config.relative_attention_max_distance,
                dropout_rate=config.hidden_dropout_prob, layer_norm_epsilon=config.layer_norm_eps,
                feed_forward_proj=proj, tie_word_embeddings=config.tie_word_embeddings, is_encoder_decoder=True,
                pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id,
                decoder_start_token_id=config.decoder_start_token_id)
