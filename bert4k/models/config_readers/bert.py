"""BERT and RoBERTa: Google `bert_config.json` or HF `config.json` (model_type bert / roberta / xlm-roberta)."""
from __future__ import annotations

from bert4k.config import TransformerConfig
from bert4k.models.config_readers import require_fields


def bert_config(raw: dict) -> TransformerConfig:
    """Google `bert_config.json` or HF `config.json` with model_type bert/roberta.

    RoBERTa (`model_type` roberta/xlm-roberta) counts positions from its padding id (HF default 1): position rows
    start at `pad_token_id + 1`, so `position_offset = pad_token_id + 1` and `pad_token_id` masks padding."""
    require_fields(raw, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
    roberta = raw.get("model_type") in ("roberta", "xlm-roberta")
    pad = raw.get("pad_token_id")
    pad = (1 if roberta else 0) if pad is None else pad
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
        position_offset=pad + 1 if roberta else 0,
        pad_token_id=pad,
    )
