"""ALBERT: Google `albert_config.json` or HF `config.json` (model_type albert).

GELU: google-research/albert `modeling.py` maps `"hidden_act": "gelu"` to its `gelu()`, the tanh approximation, so a
Google `albert_config.json` saying "gelu" is read as `gelu_tanh`; an HF `config.json` keeps HF's meaning (`gelu` =
exact erf GELU, `gelu_new` = tanh; HF's `AlbertConfig` defaults to `gelu_new`). See `bert4k.checkpoints.albert`.
"""
from __future__ import annotations

from bert4k.config import TransformerConfig
from bert4k.models.config_readers.bert import bert_config


def albert_config(raw: dict, shared: bool = True) -> TransformerConfig:
    """Google `albert_config.json` or HF `config.json` (`model_type: albert`) → config of the one stack.

    `shared=True`: one block applied `num_hidden_layers` times (`model="albert"`); `False`: independent blocks
    (`model="albert_unshared"`). Layer groups other than "one group" (or one per layer, unshared) are refused.
    """
    path = raw.get("__path__", "<config>")
    is_hf = raw.get("model_type") == "albert"
    act = raw.get("hidden_act", "gelu_new" if is_hf else "gelu")
    if not is_hf and act == "gelu":
        act = "gelu_tanh"  # what google-research/albert computes for "gelu" (see above)
    layers = raw.get("num_hidden_layers")
    groups, inner = raw.get("num_hidden_groups", 1), raw.get("inner_group_num", 1)
    if inner != 1:
        raise ValueError(f"{path}: inner_group_num={inner} is not supported (only 1, as in every released ALBERT)")
    if groups != 1 and (shared or groups != layers):
        raise ValueError(f"{path}: num_hidden_groups={groups} is not supported by model="
                         f"{'albert' if shared else 'albert_unshared'!r}: 'albert' shares one group; "
                         f"'albert_unshared' takes 1 or num_hidden_layers ({layers}) groups")
    embedding_size = raw.get("embedding_size", 128)
    if is_hf and embedding_size == raw.get("hidden_size"):
        raise ValueError(f"{path}: embedding_size == hidden_size ({embedding_size}): Hugging Face ALBERT still applies "
                         "embedding_hidden_mapping_in then, which this stack omits when the sizes are equal")
    config = bert_config({**raw, "hidden_act": act, "embedding_size": embedding_size})
    return config.replace(shared_layers=shared)


def albert_reader(shared: bool):
    """`albert_config` for `model="albert"` (`shared=True`) or `"albert_unshared"`."""
    def read(raw: dict) -> TransformerConfig:
        return albert_config(raw, shared=shared)

    return read
