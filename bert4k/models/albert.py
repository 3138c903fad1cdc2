"""ALBERT: a configuration of the one `Transformer`, registered as families `albert` and `albert_unshared`.

Factorised embeddings (`embedding_size` E, then the E→H `Embedding-Mapping` Dense), post-LN BERT blocks, and an MLM
head H→E (Dense + activation, LayerNorm) tied to the E-wide token embedding, plus a bias.

- `albert`: one block applied `num_hidden_layers` times (`shared_layers=True`), as the checkpoints are trained.
- `albert_unshared`: the same checkpoint expanded into `num_hidden_layers` independent blocks, which fine-tuning then
  updates separately; its export writes one layer group per block (HF `num_hidden_groups = num_hidden_layers`).

Names, config reading and the GELU choice: `bert4k.checkpoints.albert`.
"""
from __future__ import annotations

from functools import partial

from bert4k.checkpoints import albert as albert_ckpt
from bert4k.config import register_config_reader
from bert4k.models.families import Family, register_family
from bert4k.models.transformer import Transformer

for _name, _shared in (("albert", True), ("albert_unshared", False)):
    _read = partial(albert_ckpt.albert_config, shared=_shared)
    register_family(_name, Family(_read, Transformer, albert_ckpt.albert_specs, albert_ckpt.hf_albert_names,
                                  albert_ckpt.google_albert_names, albert_ckpt.to_google_albert, albert_ckpt.IGNORED))
    register_config_reader(_name, _read)
