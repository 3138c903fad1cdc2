"""ELECTRA checkpoints: Hugging Face `ElectraModel` / `ElectraForPreTraining` / `ElectraForMaskedLM` names and the
Google ELECTRA TF names (google-research/electra, as in the HFL Chinese ELECTRA releases).

Canonical names are HF's bare `ElectraModel` names: BERT's (`embeddings.*`, `encoder.layer.{i}.*`) plus
`embeddings_project.*` (the E→H Dense when `embedding_size` ≠ `hidden_size`), and for the heads
`discriminator_predictions.{dense,dense_prediction}.*` (replaced-token detection) and
`generator_predictions.{dense,LayerNorm}.*` + `generator_lm_head.bias` (the generator's MLM head; its decoder
weight is tied to the word embeddings).

Google TF names: `electra/...` (discriminator body) or `generator/...` (a separately stored generator body) are
BERT's names under another scope; `electra/embeddings_project`, `discriminator_predictions/dense{,_1}` and
`generator_predictions/{dense,LayerNorm,output_bias}`.
"""
from __future__ import annotations

from bert4k.checkpoints.bert import block_specs, canonical_to_google, embedding_specs, google_to_canonical, rows
from bert4k.checkpoints.specs import WeightSpec, linear_spec, norm_spec, transpose

_HEADS = ("discriminator_predictions.", "generator_predictions.", "generator_lm_head.")


def electra_specs(model, keep_tokens=None) -> list[WeightSpec]:
    """Body (+ `embeddings_project` when E ≠ H), and the generator's MLM head when the model has one. The
    discriminator head's names: `bert4k.models.electra.head_specs`."""
    specs = embedding_specs(model, keep_tokens)
    if model.embedding_mapping is not None:
        specs += linear_spec(model.embedding_mapping, "embeddings_project")
    for i, block in enumerate(model.blocks):
        specs += block_specs(block, f"encoder.layer.{i}")
    if model.mlm_dense is not None:
        specs += linear_spec(model.mlm_dense, "generator_predictions.dense")
        specs += norm_spec(model.mlm_norm, "generator_predictions.LayerNorm")
        specs.append(WeightSpec(model.mlm_bias.bias, "generator_lm_head.bias", rows(keep_tokens)))
    return specs


def hf_electra_names(tensors: dict) -> dict:
    """HF tensors (with or without the `electra.` prefix of the task models) → canonical names."""
    if any(k.startswith(("electra.embeddings.", "electra.encoder.")) for k in tensors):
        return {k.removeprefix("electra."): v for k, v in tensors.items()}
    return dict(tensors)


_GOOGLE_HEADS = {"discriminator_predictions/dense": "discriminator_predictions.dense",
                 "discriminator_predictions/dense_1": "discriminator_predictions.dense_prediction",
                 "generator_predictions/dense": "generator_predictions.dense",
                 "generator_predictions/LayerNorm": "generator_predictions.LayerNorm",
                 "electra/embeddings_project": "embeddings_project",
                 "generator/embeddings_project": "embeddings_project"}


def google_electra_names(tensors: dict) -> dict:
    """Google TF names → canonical names (kernels transposed). The body is read from `electra/` when present,
    else from `generator/` (a generator-only checkpoint); the other body's tensors are kept under their TF name
    (reported unused). `generator_predictions/output_bias` → `generator_lm_head.bias`."""
    scope = "electra" if any(k.startswith("electra/encoder/") for k in tensors) else "generator"
    out = {}
    for name, value in tensors.items():
        if name == "generator_predictions/output_bias":
            out["generator_lm_head.bias"] = value
            continue
        head, _, leaf = name.rpartition("/")
        if head in _GOOGLE_HEADS and (head.split("/")[0] != "generator" or scope == "generator") \
                and (head != "electra/embeddings_project" or scope == "electra"):
            canonical, converted = google_to_canonical(f"{_GOOGLE_HEADS[head].replace('.', '/')}/{leaf}", value)
            out[canonical] = converted
            continue
        if name.startswith("electra/embeddings/") and scope == "generator":
            name = "generator" + name.removeprefix("electra")  # shared embeddings live under electra/
        if name.startswith(scope + "/"):
            canonical, converted = google_to_canonical("bert/" + name.removeprefix(scope + "/"), value)
            out[canonical] = converted
        else:
            out[name] = value
    return out


def to_google_electra(tensors: dict) -> dict:
    """Canonical names → Google TF names (`electra/` scope), for export."""
    inverse = {v: k for k, v in _GOOGLE_HEADS.items() if not k.startswith("generator/")}
    out = {}
    for name, value in tensors.items():
        if name == "generator_lm_head.bias":
            out["generator_predictions/output_bias"] = value
            continue
        prefix, _, leaf = name.rpartition(".")
        if prefix in inverse:
            norm = prefix.endswith("LayerNorm")
            google_leaf = ("gamma" if leaf == "weight" else "beta") if norm else ("kernel" if leaf == "weight" else leaf)
            out[f"{inverse[prefix]}/{google_leaf}"] = transpose(value) if google_leaf == "kernel" else value
            continue
        google, converted = canonical_to_google(name, value)
        out["electra/" + google.removeprefix("bert/")] = converted
    return out


def detect_electra(evidence) -> str | None:
    """HF `model_type: electra`, an `Electra*` architecture, or ELECTRA tensor names."""
    if evidence.model_type == "electra":
        return "config.json says model_type 'electra'"
    if arch := evidence.architecture("Electra"):
        return f"config.json names architecture {arch!r}"
    if evidence.model_type is None and evidence.any_name("electra/", "electra.", "discriminator_predictions"):
        return "ELECTRA tensor names"
    return None


def hf_config(config, model) -> dict:
    """HF `config.json` (`ElectraModel`, or `ElectraForMaskedLM` with the MLM head) of an exported ELECTRA."""
    from bert4k.config import hf_activation

    arch = "ElectraForMaskedLM" if getattr(model, "mlm_dense", None) is not None else "ElectraModel"
    return dict(model_type="electra", architectures=[arch], vocab_size=config.vocab_size,
                embedding_size=config.embedding_size or config.hidden_size, hidden_size=config.hidden_size,
                num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
                intermediate_size=config.intermediate_size, hidden_act=hf_activation(config.hidden_act),
                max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
                hidden_dropout_prob=config.hidden_dropout_prob,
                attention_probs_dropout_prob=config.attention_probs_dropout_prob, layer_norm_eps=config.layer_norm_eps,
                initializer_range=config.initializer_range, pad_token_id=config.pad_token_id)
