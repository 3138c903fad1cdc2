"""The one registry of model families: one `Family` record per family holds everything bert4k knows about it.

A record names its config reader (`bert4k.models.config_readers`, one module per family), the rule that recognises its files, the model class, the load/export name maps,
the tensors a checkpoint may hold that the model does not use, how to write a Hugging Face `config.json`, and the
decoding adapter. References may be objects or `"module:attribute"` strings (resolved on first use), so a family
module can register itself without import cycles. New families call `register_family(Family(name=..., ...))`.
"""
from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable
from typing import Any

from bert4k.checkpoints import albert as albert_ckpt
from bert4k.checkpoints import bert as bert_ckpt
from bert4k.checkpoints import electra as electra_ckpt
from bert4k.checkpoints import gpt2 as gpt2_ckpt
from bert4k.checkpoints import t5 as t5_ckpt
from bert4k.checkpoints.evidence import Evidence
from bert4k.config import TransformerConfig, check_raw_config, config_error
from bert4k.models.config_readers.albert import albert_reader
from bert4k.models.config_readers.bert import bert_config
from bert4k.models.config_readers.electra import electra_config
from bert4k.models.config_readers.gpt2 import gpt2_config, gpt2_ml_config
from bert4k.models.config_readers.t5 import t5_config_reader
from bert4k.models.gpt2 import causal_transformer
from bert4k.models.t5 import T5
from bert4k.models.transformer import Transformer


def resolve(reference: Any) -> Any:
    """An object given directly, or as a `"module:attribute"` string."""
    if isinstance(reference, str):
        module, _, attribute = reference.partition(":")
        return getattr(importlib.import_module(module), attribute)
    return reference


@dataclasses.dataclass(frozen=True, kw_only=True)
class Family:
    """What the builder, the checkpoint loader/exporter and `generate` need to know about one family.

    - `name`; `kind`: families of one kind read the same files (`bert`/`roberta`, the T5 variants), so
      `model=` may name any of them without a mismatch warning. Defaults to `name`.
    - `read_config(raw_json) -> TransformerConfig`
    - `model_class`: built as `model_class(config, application=..., family=name, **kwargs)`
    - `specs(model, keep_tokens) -> list[WeightSpec]` in the family's canonical names
    - `from_hf(tensors)` / `from_tf(tensors)`: stored names → canonical names; `to_tf`: canonical → TF names
    - `ignore`: canonical names a checkpoint may hold that the model never uses (buffers, copies of tied weights,
      pre-training heads), each matched against the whole name as a regular expression (`re.fullmatch`)
    - `heads`: canonical names (regular expressions, whole names) of optional heads (pooler, MLM): unused when
      the model is built without them, which is reported apart from other unused tensors
    - `tied_heads`: `(head, embedding)` canonical name pairs: a checkpoint whose `head` differs from `embedding`
      has an untied LM head, which the tied model refuses to drop silently
    - `hf_config(config, model) -> dict`: the Hugging Face `config.json` of an export (None: no HF format)
    - `adapter`: the decoding adapter factory `generate` uses
    - `detect(evidence) -> reason | None`: whether the files look like this family (see `detect_family`)
    """

    name: str
    read_config: Callable[[dict], TransformerConfig] | str
    model_class: type | str
    specs: Callable | str
    from_hf: Callable[[dict], dict] | str
    from_tf: Callable[[dict], dict] | str
    to_tf: Callable[[dict], dict] | str | None = None
    ignore: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    tied_heads: tuple[tuple[str, str], ...] = ()
    hf_config: Callable | str | None = None
    adapter: Callable | str | None = "bert4k.generation.adapters:transformer_adapter"
    kind: str = ""
    detect: Callable[[Evidence], str | None] | None = None

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", self.name)
        for pattern in self.ignore + self.heads:
            re.compile(pattern)

    def config(self, raw: dict) -> TransformerConfig:
        """Validate the raw json's field types and ranges, then read it; errors name the file and the field."""
        check_raw_config(raw)
        try:
            return resolve(self.read_config)(raw)
        except ValueError as e:
            raise config_error(raw, e) from None

    def build(self, config: TransformerConfig, **kwargs):
        return resolve(self.model_class)(config, family=self.name, **kwargs)

    def ignored(self, name: str) -> bool:
        return any(re.fullmatch(pattern, name) for pattern in self.ignore)

    def is_head(self, name: str) -> bool:
        return any(re.fullmatch(pattern, name) for pattern in self.heads)

    def reference(self, attribute: str):
        """The resolved callable held in `attribute` (None if unset)."""
        value = getattr(self, attribute)
        return None if value is None else resolve(value)


FAMILIES: dict[str, Family] = {}


def register_family(family: Family | str, record: Family | None = None) -> Family:
    """Register `family` under its name (`register_family(name, family)` registers it under an alias)."""
    if isinstance(family, str):
        if record is None:
            raise TypeError("register_family(name, family): the Family record is missing")
        FAMILIES[family] = record
        return record
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def detect_family(raw: dict, read_names: Callable[[], set[str]] | None = None) -> tuple[Family, str | None]:
    """The family the config `raw` (and the checkpoint's tensor names, read lazily) look like, with the reason.

    Rules are tried from the most recently registered family back to `bert`, whose rule is the loosest. A config
    whose `model_type` no family claims is refused; one with no sign at all is `bert` (bert4keras' default) with
    reason None."""
    evidence = Evidence(raw, raw.get("__path__"), read_names)
    for family in reversed(FAMILIES.values()):
        if family.detect is not None and (reason := family.detect(evidence)):
            return family, reason
    if evidence.model_type is not None:
        raise ValueError(f"{raw.get('__path__', '<config dict>')}: model_type {evidence.model_type!r} is not one "
                         f"bert4k knows ({', '.join(FAMILIES)}); pass model= to read it as one of them")
    return FAMILIES["bert"], None


# === the built-in families ===
_T5_ADAPTER = "bert4k.generation.t5_adapter:T5Adapter"

_BERT_MAPS = dict(model_class=Transformer, specs=bert_ckpt.bert_specs, from_hf=bert_ckpt.hf_bert_names,
                  from_tf=bert_ckpt.google_bert_names, to_tf=bert_ckpt.to_google_bert, ignore=bert_ckpt.IGNORED, heads=bert_ckpt.HEADS,
                  tied_heads=bert_ckpt.TIED_HEADS, hf_config=bert_ckpt.hf_config, kind="bert")
register_family(Family(name="bert", read_config=bert_config, detect=bert_ckpt.detect_bert, **_BERT_MAPS))
register_family(Family(name="roberta", read_config=bert_config, detect=bert_ckpt.detect_roberta, **_BERT_MAPS))

for _name, _shared in (("albert", True), ("albert_unshared", False)):
    register_family(Family(
        name=_name, read_config=albert_reader(_shared), model_class=Transformer,
        specs=albert_ckpt.albert_specs, from_hf=albert_ckpt.hf_albert_names, from_tf=albert_ckpt.google_albert_names,
        to_tf=albert_ckpt.to_google_albert, ignore=albert_ckpt.IGNORED, heads=albert_ckpt.HEADS, tied_heads=albert_ckpt.TIED_HEADS,
        hf_config=albert_ckpt.hf_config, kind="albert", detect=albert_ckpt.detect_albert if _shared else None))

register_family(Family(
    name="gpt2", read_config=gpt2_config, model_class=causal_transformer, specs=gpt2_ckpt.gpt2_specs,
    from_hf=gpt2_ckpt.hf_gpt2_names, from_tf=gpt2_ckpt.openai_gpt2_names, to_tf=gpt2_ckpt.to_openai_gpt2,
    ignore=gpt2_ckpt.GPT2_IGNORED, tied_heads=gpt2_ckpt.TIED_HEADS, hf_config=gpt2_ckpt.hf_config,
    detect=gpt2_ckpt.detect_gpt2))
register_family(Family(
    name="gpt2_ml", read_config=gpt2_ml_config, model_class=causal_transformer,
    specs=gpt2_ckpt.gpt2_ml_specs, from_hf=gpt2_ckpt.same_names, from_tf=gpt2_ckpt.same_names,
    to_tf=gpt2_ckpt.same_names, detect=gpt2_ckpt.detect_gpt2_ml))

# "t5.1.0" and "mt5.1.1" are bert4keras' names for the same families.
_T5_DETECT = {"t5": t5_ckpt.detect_t5, "t5.1.1": t5_ckpt.detect_t5_v11, "mt5": t5_ckpt.detect_mt5}
for _name, _tied in (("t5", True), ("t5.1.0", True), ("t5.1.1", False), ("mt5", False), ("mt5.1.1", False)):
    register_family(Family(detect=_T5_DETECT.get(_name),
        name=_name, read_config=t5_config_reader(_tied), model_class=T5,
        specs=t5_ckpt.t5_specs, from_hf=t5_ckpt.hf_t5_names, from_tf=t5_ckpt.mesh_tf_names, to_tf=t5_ckpt.to_mesh_tf,
        ignore=t5_ckpt.IGNORED, hf_config=t5_ckpt.hf_config, adapter=_T5_ADAPTER, kind="t5"))

register_family(Family(
    name="electra", read_config=electra_config, model_class=Transformer, specs=electra_ckpt.electra_specs,
    from_hf=electra_ckpt.hf_electra_names, from_tf=electra_ckpt.google_electra_names,
    to_tf=electra_ckpt.to_google_electra, ignore=(r"embeddings\.position_ids", r"embeddings\.token_type_ids", r"generator_lm_head\.weight"),
    heads=(r"discriminator_predictions\..+", r"generator_predictions\..+", r"generator_lm_head\.bias"),
    tied_heads=(("generator_lm_head.weight", "embeddings.word_embeddings.weight"),),
    hf_config=electra_ckpt.hf_config, detect=electra_ckpt.detect_electra))
