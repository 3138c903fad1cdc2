"""ELECTRA: HF `config.json` (model_type electra) or Google ELECTRA hparams, read as BERT plus `embedding_size`."""
from __future__ import annotations

from bert4k.config import TransformerConfig
from bert4k.models.config_readers.bert import bert_config


def electra_config(raw: dict) -> TransformerConfig:
    """HF `config.json` (`model_type: electra`) or Google's hparams → config of the one stack. `embedding_size`
    defaults to `hidden_size` (no projection), as in HF's `ElectraConfig` when it equals the hidden size."""
    embedding_size = raw.get("embedding_size") or raw.get("hidden_size")
    return bert_config({**raw, "embedding_size": embedding_size})
