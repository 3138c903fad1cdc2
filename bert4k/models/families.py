"""Registry of model families: how to read the config, build the model, and name its weights in checkpoints."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from bert4k.checkpoints import bert as bert_ckpt
from bert4k.config import TransformerConfig, bert_config
from bert4k.models.transformer import Transformer


@dataclasses.dataclass
class Family:
    """What `build_transformer_model(model=name)` needs to know about one family.

    - `read_config(raw_json) -> TransformerConfig`
    - `model_class`: built as `model_class(config, **kwargs)`
    - `specs(model, keep_tokens) -> list[WeightSpec]` in the family's canonical (HF) names
    - `from_hf(tensors)` / `from_tf(tensors)`: stored names → canonical names
    - `to_tf(tensors)`: canonical → TF names, for export (None if not supported)
    - `ignore`: substrings of stored names that are known buffers/unused, not reported
    """

    read_config: Callable[[dict], TransformerConfig]
    model_class: type
    specs: Callable
    from_hf: Callable[[dict], dict]
    from_tf: Callable[[dict], dict]
    to_tf: Callable[[dict], dict] | None = None
    ignore: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {}


def register_family(name: str, family: Family) -> None:
    FAMILIES[name] = family


def get_family(name: str) -> Family:
    _load_builtin_families()
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]



_BERT = Family(bert_config, Transformer, bert_ckpt.bert_specs, bert_ckpt.hf_bert_names, bert_ckpt.google_bert_names,
               bert_ckpt.to_google_bert, bert_ckpt.IGNORED)
register_family("bert", _BERT)
register_family("roberta", _BERT)


def _load_builtin_families() -> None:
    """Import the modules that register the other families (kept lazy to avoid import cycles)."""
    import importlib

    for module in BUILTIN_FAMILY_MODULES:
        importlib.import_module(module)


# Each family module calls `register_family` at import time.
BUILTIN_FAMILY_MODULES: list[str] = ["bert4k.models.t5", "bert4k.models.gpt2", "bert4k.models.albert",
                                   "bert4k.models.electra"]
