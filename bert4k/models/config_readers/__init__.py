"""The config readers, one module per family: each turns a checkpoint's raw config json (HF `config.json`, Google
`bert_config.json` / `albert_config.json`, OpenAI `hparams.json`, GPT2-ML and bert4keras-style T5 json) into a
`TransformerConfig`. `bert4k.models.families` gives each `Family` record its reader; nothing else parses configs."""
from __future__ import annotations


def require_fields(raw: dict, *names: str, kind: str = "") -> None:
    """Raise naming the config file and the missing fields (`kind`, e.g. "GPT-2 ", qualifies them)."""
    missing = [n for n in names if n not in raw]
    if missing:
        raise ValueError(f"{raw.get('__path__', '<config>')}: missing required {kind}field(s) {missing}; got fields "
                         f"{sorted(k for k in raw if k != '__path__')}")
