"""GPT-2 (HF `config.json`, OpenAI `hparams.json`) and GPT2-ML json; the padding rule is explained in
`bert4k.models.gpt2`."""
from __future__ import annotations

import os

from bert4k.config import TransformerConfig
from bert4k.models.config_readers import require_fields

# OpenAI hparams.json field → HF GPT-2 config field
OPENAI_HPARAMS = {"n_vocab": "vocab_size", "n_ctx": "n_positions", "n_embd": "n_embd", "n_head": "n_head",
                  "n_layer": "n_layer"}
# BERT-style config field → HF GPT-2 config field (bert4keras reads every family's config with BERT's names)
FROM_BERT_NAMES = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
                   "intermediate_size": "n_inner", "max_position_embeddings": "n_positions",
                   "hidden_act": "activation_function", "hidden_dropout_prob": "resid_pdrop",
                   "attention_probs_dropout_prob": "attn_pdrop", "layer_norm_eps": "layer_norm_epsilon"}


def _gpt2_pad_id(raw: dict) -> int:
    if raw.get("pad_token_id") is not None:
        pad = int(raw["pad_token_id"])
        # pad = eos (common in fine-tuned checkpoints): an end-of-text token is data, never padding.
        return -1 if pad == raw.get("eos_token_id") else pad
    path = raw.get("__path__")
    bert_vocab = path is not None and os.path.exists(os.path.join(os.path.dirname(path), "vocab.txt"))
    return 0 if bert_vocab or raw.get("tokenizer_class") == "BertTokenizer" else -1


def gpt2_config(raw: dict) -> TransformerConfig:
    """HF GPT-2 `config.json` (`n_embd`, `n_layer`, ...) or OpenAI `hparams.json` (`n_vocab`, `n_ctx`, ...)."""
    if "n_vocab" in raw:  # OpenAI hparams.json
        require_fields(raw, *OPENAI_HPARAMS, kind="GPT-2 ")
        vocab, positions = raw["n_vocab"], raw["n_ctx"]
    else:
        require_fields(raw, "vocab_size", "n_embd", "n_head", "n_layer", kind="GPT-2 ")
        vocab, positions = raw["vocab_size"], raw.get("n_positions", raw.get("n_ctx", 1024))
    if raw.get("scale_attn_by_inverse_layer_idx") or raw.get("scale_attn_weights", True) is False:
        raise ValueError(f"{raw.get('__path__', '<config>')}: GPT-2 attention scaling variants "
                         "(scale_attn_by_inverse_layer_idx / scale_attn_weights=false) are not supported")
    hidden = raw["n_embd"]
    return TransformerConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=raw["n_layer"], num_attention_heads=raw["n_head"],
        intermediate_size=raw.get("n_inner") or 4 * hidden, hidden_act=raw.get("activation_function", "gelu_new"),
        max_position_embeddings=positions, type_vocab_size=0, hidden_dropout_prob=raw.get("resid_pdrop", 0.1),
        attention_probs_dropout_prob=raw.get("attn_pdrop", 0.1), layer_norm_eps=raw.get("layer_norm_epsilon", 1e-5),
        initializer_range=raw.get("initializer_range", 0.02), norm_position="pre", embedding_norm=False,
        final_norm=True, pad_token_id=_gpt2_pad_id(raw), lm_head="tied")


def gpt2_ml_config(raw: dict) -> TransformerConfig:
    """GPT2-ML json (`configs/mega.json`: BERT-style field names)."""
    require_fields(raw, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
    hidden = raw["hidden_size"]
    return TransformerConfig(
        vocab_size=raw["vocab_size"], hidden_size=hidden, num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"], intermediate_size=raw.get("intermediate_size", 4 * hidden),
        hidden_act=raw.get("hidden_act", "gelu"), max_position_embeddings=raw.get("max_position_embeddings", 1024),
        type_vocab_size=0, hidden_dropout_prob=raw.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=raw.get("attention_probs_dropout_prob", 0.1), layer_norm_eps=1e-5,
        initializer_range=raw.get("initializer_range", 0.02), norm_position="gpt2_ml", embedding_norm=True,
        final_norm=False, pad_token_id=raw.get("pad_token_id", 0), lm_head="tied")
