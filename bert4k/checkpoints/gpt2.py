"""GPT-2 and GPT2-ML name maps.

GPT-2: canonical names are Hugging Face's bare `GPT2Model` names (`wte.weight`, `h.0.attn.c_attn.weight`, ...).
HF's `Conv1D` weights are already `[in, out]` like a Keras kernel: never transposed. The fused `c_attn` `[H, 3H]`
holds q|k|v column blocks and is split with `WeightSpec.part`. OpenAI's TF checkpoint (`model/h0/attn/c_attn/w`)
stores the same matrices with a leading axis of 1 (`[1, H, 3H]`, a 1×1 convolution), squeezed on load.

GPT2-ML: canonical names are its TF names (`newslm/layer00/query_layer/kernel`, TF Dense kernels `[in, out]`);
there is no Hugging Face format for it.
"""
from __future__ import annotations

import re

import numpy as np

from bert4k.checkpoints.bert import rows
from bert4k.checkpoints.specs import WeightSpec

# Whole canonical names (regular expressions): the causal-mask buffers and HF's copy of the tied head.
GPT2_IGNORED = (r"h\.\d+\.attn\.(bias|masked_bias)", r"lm_head\.weight")
TIED_HEADS = (("lm_head.weight", "wte.weight"),)


def _dense(layer, key: str) -> list[WeightSpec]:
    """A Keras Dense from an HF `Conv1D` (weight already `[in, out]`: no transpose)."""
    return [WeightSpec(layer.kernel, f"{key}.weight"), WeightSpec(layer.bias, f"{key}.bias")]


def _norm(layer, key: str) -> list[WeightSpec]:
    return [WeightSpec(layer.gamma, f"{key}.weight"), WeightSpec(layer.beta, f"{key}.bias")]


def gpt2_specs(model, keep_tokens=None) -> list[WeightSpec]:
    """Every weight of a GPT-2 `Transformer` under HF `GPT2Model` names."""
    specs = [WeightSpec(model.token_embedding.embeddings, "wte.weight", rows(keep_tokens)),
             WeightSpec(model.position_embedding.embeddings, "wpe.weight")]
    for i, block in enumerate(model.blocks):
        p, att, ffn = f"h.{i}", block.attention, block.feed_forward
        specs += _norm(block.attention_norm, f"{p}.ln_1")
        for part, dense in enumerate((att.query, att.key, att.value)):
            specs.append(WeightSpec(dense.kernel, f"{p}.attn.c_attn.weight", part=(part, 3, 1)))
            specs.append(WeightSpec(dense.bias, f"{p}.attn.c_attn.bias", part=(part, 3, 0)))
        specs += _dense(att.attention_output, f"{p}.attn.c_proj")
        specs += _norm(block.ffn_norm, f"{p}.ln_2")
        specs += _dense(ffn.inner, f"{p}.mlp.c_fc")
        specs += _dense(ffn.outer, f"{p}.mlp.c_proj")
    return specs + _norm(model.output_norm, "ln_f")


def hf_gpt2_names(tensors: dict) -> dict:
    """HF `GPT2LMHeadModel` (`transformer.` prefix) or `GPT2Model` tensors → canonical names."""
    prefixed = any(k.startswith("transformer.") for k in tensors)
    return {k[len("transformer."):] if prefixed and k.startswith("transformer.") else k: v for k, v in tensors.items()}


_OPENAI_LEAF = {"g": "weight", "b": "bias", "w": "weight"}


# bert4keras' TF conversion of GPT-2 checkpoints (CPM-LM): BERT's names under `gpt/`, the blocks under
# `gpt/transformer/layer_<i>/`, the pre-LN norms called `input/LayerNorm`; q, k, v stored apart.
_BERT4KERAS_BLOCK = {"attention/output/dense": "attn.c_proj", "attention/input/LayerNorm": "ln_1",
                     "intermediate/dense": "mlp.c_fc", "output/dense": "mlp.c_proj", "input/LayerNorm": "ln_2"}
_BERT4KERAS_LEAF = {"kernel": "weight", "gamma": "weight", "bias": "bias", "beta": "bias"}
_BERT4KERAS_TOP = {"gpt/embeddings/word_embeddings": "wte.weight", "gpt/embeddings/position_embeddings": "wpe.weight",
                   "gpt/output/LayerNorm/gamma": "ln_f.weight", "gpt/output/LayerNorm/beta": "ln_f.bias"}


def bert4keras_gpt2_names(tensors: dict) -> dict:
    """bert4keras' `gpt/...` GPT-2 names → canonical names; q, k, v kernels/biases are joined into `c_attn`
    (q|k|v column blocks). Other names pass through; a block missing one of q, k, v raises naming it."""
    out, qkv = {}, {}
    for name, value in tensors.items():
        if name in _BERT4KERAS_TOP:
            out[_BERT4KERAS_TOP[name]] = value
            continue
        match = re.fullmatch(r"gpt/transformer/layer_(\d+)/(.+)/(kernel|bias|gamma|beta)", name)
        if match is None:
            out[name] = value
            continue
        layer, path, leaf = match.groups()
        if path.startswith("attention/self/"):
            qkv.setdefault((layer, _BERT4KERAS_LEAF[leaf]), {})[path.rsplit("/", 1)[1]] = value
        elif path in _BERT4KERAS_BLOCK:
            out[f"h.{layer}.{_BERT4KERAS_BLOCK[path]}.{_BERT4KERAS_LEAF[leaf]}"] = value
        else:
            out[name] = value
    for (layer, leaf), parts in qkv.items():
        absent = [p for p in ("query", "key", "value") if p not in parts]
        if absent:
            raise ValueError(f"gpt/transformer/layer_{layer}/attention/self: no {', '.join(absent)} {leaf} tensor "
                             "(bert4keras GPT-2 checkpoints store query, key and value apart)")
        out[f"h.{layer}.attn.c_attn.{leaf}"] = np.concatenate(
            [np.asarray(parts[p]) for p in ("query", "key", "value")], axis=-1)
    return out


def openai_gpt2_names(tensors: dict) -> dict:
    """OpenAI TF names (`model/h3/mlp/c_fc/w` `[1, in, out]`) → canonical names (`h.3.mlp.c_fc.weight` `[in, out]`);
    bert4keras' `gpt/...` conversion (CPM-LM) is read too (`bert4keras_gpt2_names`)."""
    if any(name.startswith("gpt/") for name in tensors):
        tensors = bert4keras_gpt2_names(tensors)
    out = {}
    for name, value in tensors.items():
        parts = name.split("/")
        if parts[0] != "model":
            out[name] = value
            continue
        parts = [re.sub(r"^h(\d+)$", r"h.\1", p) for p in parts[1:]]
        if parts in (["wte"], ["wpe"]):
            out[f"{parts[0]}.weight"] = value
            continue
        if parts[-1] == "w":
            value = np.asarray(value)
            value = value.reshape(value.shape[-2:]) if value.ndim == 3 else value
        out[".".join(parts[:-1] + [_OPENAI_LEAF.get(parts[-1], parts[-1])])] = value
    return out


def to_openai_gpt2(tensors: dict) -> dict:
    """Canonical names → OpenAI TF names (conv weights get their leading axis of 1 back)."""
    out = {}
    for name, value in tensors.items():
        parts = name.split(".")
        if parts[0] in ("wte", "wpe"):
            out[f"model/{parts[0]}"] = value
            continue
        if parts[0] == "h":
            parts = [f"h{parts[1]}"] + parts[2:]
        *path, leaf = parts
        is_norm = path[-1].startswith("ln_")
        if leaf == "weight" and not is_norm:
            out["/".join(["model", *path, "w"])] = value[None]
        else:
            out["/".join(["model", *path, ("g" if leaf == "weight" else "b") if is_norm else "b"])] = value
    return out


def _tf_dense(layer, key: str) -> list[WeightSpec]:
    return [WeightSpec(layer.kernel, f"{key}/kernel"), WeightSpec(layer.bias, f"{key}/bias")]


def _tf_norm(layer, key: str) -> list[WeightSpec]:
    return [WeightSpec(layer.gamma, f"{key}/gamma"), WeightSpec(layer.beta, f"{key}/beta")]


def gpt2_ml_specs(model, keep_tokens=None) -> list[WeightSpec]:
    """Every weight of a GPT2-ML `Transformer` under its TF names (scope `newslm`).

    Block order (see `bert4k.models.gpt2`): `LayerNorm_mlp_ln0` normalises before the FFN (the block's
    `attention_norm` slot in the `gpt2_ml` order) and `LayerNorm_mlp_ln1` after the FFN residual (`ffn_norm`).
    """
    specs = [WeightSpec(model.token_embedding.embeddings, "newslm/embeddings/word_embed", rows(keep_tokens)),
             WeightSpec(model.position_embedding.embeddings, "newslm/embeddings/pos_embed")]
    specs += _tf_norm(model.embedding_norm, "newslm/embeddings/LayerNorm_embed_norm")
    for i, block in enumerate(model.blocks):
        p, att, ffn = f"newslm/layer{i:02d}", block.attention, block.feed_forward
        specs += _tf_dense(att.query, f"{p}/query_layer")
        specs += _tf_dense(att.key, f"{p}/key_layer")
        specs += _tf_dense(att.value, f"{p}/value_layer")
        specs += _tf_dense(att.attention_output, f"{p}/context_projection_layer")
        specs += _tf_norm(block.attention_norm, f"{p}/LayerNorm_mlp_ln0")
        specs += _tf_dense(ffn.inner, f"{p}/intermediate")
        specs += _tf_dense(ffn.outer, f"{p}/output")
        specs += _tf_norm(block.ffn_norm, f"{p}/LayerNorm_mlp_ln1")
    return specs


def same_names(tensors: dict) -> dict:
    return dict(tensors)


# === detection and the Hugging Face config of an export ===

def detect_gpt2(evidence) -> str | None:
    """HF `model_type: gpt2` / a `GPT2*` architecture, OpenAI's `hparams.json`, or GPT-2 field names."""
    if evidence.model_type == "gpt2":
        return "config.json says model_type 'gpt2'"
    if evidence.model_type is not None:
        return None
    if arch := evidence.architecture("GPT2"):
        return f"config.json names architecture {arch!r}"
    if evidence.has("n_vocab", "n_ctx", "n_embd"):
        return "OpenAI hparams.json fields (n_vocab, n_ctx, n_embd)"
    if evidence.has("n_embd", "n_layer", "n_head"):
        return "GPT-2 config fields (n_embd, n_layer, n_head)"
    return None


def detect_gpt2_ml(evidence) -> str | None:
    """GPT2-ML: its TF tensor names (`newslm/...`), or a config file with BERT-style fields but no token types and
    no model_type (its `configs/mega.json`; every BERT config names `type_vocab_size`)."""
    if evidence.model_type is not None:
        return None
    if evidence.any_name("newslm/"):
        return "GPT2-ML tensor names (newslm/...)"
    if (evidence.file is not None and not evidence.names() and evidence.file_name != "bert_config.json"
            and evidence.has("hidden_size", "num_hidden_layers", "num_attention_heads")
            and not any(k in evidence.raw for k in ("type_vocab_size", "embedding_size", "attention_head_size"))):
        return "BERT-style fields without type_vocab_size (GPT2-ML's mega.json)"
    return None


def hf_config(config, model) -> dict:
    """HF `config.json` of an exported GPT-2 (`GPT2LMHeadModel`, head tied to `wte`)."""
    from bert4k.config import hf_activation

    out = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=config.vocab_size,
               n_positions=config.max_position_embeddings, n_embd=config.hidden_size,
               n_layer=config.num_hidden_layers, n_head=config.num_attention_heads, n_inner=config.intermediate_size,
               activation_function=hf_activation(config.hidden_act), resid_pdrop=config.hidden_dropout_prob,
               embd_pdrop=config.hidden_dropout_prob, attn_pdrop=config.attention_probs_dropout_prob,
               layer_norm_epsilon=config.layer_norm_eps, initializer_range=config.initializer_range,
               tie_word_embeddings=True)
    if config.pad_token_id >= 0:
        out["pad_token_id"] = config.pad_token_id
    return out
