"""T5 / T5.1.1 / mT5: HF `config.json` (has `d_model`) or a bert4keras-style json (has `hidden_size`)."""
from __future__ import annotations

from bert4k.config import ACTIVATIONS, TransformerConfig
from bert4k.models.config_readers import require_fields


def _feed_forward(proj: str, path: str) -> tuple[str, str]:
    """HF `feed_forward_proj` → (normalised proj, bert4k activation). `gated-gelu` means GELU-tanh (as in HF)."""
    gated = proj.startswith("gated-")
    act = proj[len("gated-"):] if gated else proj
    act = "gelu_new" if proj == "gated-gelu" else act
    if act not in ACTIVATIONS:
        raise ValueError(f"{path}: unsupported feed_forward_proj {proj!r}; expected relu, gated-gelu or [gated-]<act> "
                         f"with act in {sorted(ACTIVATIONS)}")
    return ("gated-" if gated else "") + ACTIVATIONS[act], ACTIVATIONS[act]


def _hf_t5_config(raw: dict, path: str, default_tied: bool) -> TransformerConfig:
    require_fields(raw, "vocab_size", "d_model", "num_heads", "num_layers", kind="T5 ")
    proj, act = _feed_forward(raw.get("feed_forward_proj", "relu"), path)
    tied = raw.get("tie_word_embeddings", default_tied)
    # transformers ≥ 5 always writes tie_word_embeddings=true and keeps the rescale flag separately; the file then
    # has no lm_head.weight and `from_hf` uses shared.weight for it.
    tied = raw.get("scale_decoder_outputs", tied)
    dropout = raw.get("dropout_rate", 0.1)
    return TransformerConfig(
        vocab_size=raw["vocab_size"], hidden_size=raw["d_model"], num_hidden_layers=raw["num_layers"],
        num_attention_heads=raw["num_heads"], intermediate_size=raw.get("d_ff", 4 * raw["d_model"]),
        hidden_act=act, type_vocab_size=0, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        layer_norm_eps=raw.get("layer_norm_epsilon", 1e-6),
        key_size=raw.get("d_kv", raw["d_model"] // raw["num_heads"]), norm_position="pre", embedding_norm=False,
        final_norm=True, pad_token_id=raw.get("pad_token_id", 0) or 0,
        relative_attention_num_buckets=raw.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=raw.get("relative_attention_max_distance", 128),
        num_decoder_layers=raw.get("num_decoder_layers") or raw["num_layers"], feed_forward_proj=proj,
        tie_word_embeddings=bool(tied), decoder_start_token_id=raw.get("decoder_start_token_id", 0) or 0,
        eos_token_id=raw.get("eos_token_id", 1))


def _bert4keras_t5_config(raw: dict, path: str, default_tied: bool) -> TransformerConfig:
    """bert4keras-style T5 json: `hidden_act` "relu" (1.0) or `["gelu", "linear"]` (gated, 1.1 / mT5)."""
    require_fields(raw, "vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size")
    act = raw.get("hidden_act", "relu")
    gated = isinstance(act, (list, tuple))
    if gated:
        if len(act) != 2 or act[1] != "linear":
            raise ValueError(f"{path}: hidden_act {act!r}: a list must be [<act>, 'linear'] (gated feed-forward)")
        act = act[0]
    # mesh-TF's "gelu" is the tanh approximation.
    act = "gelu_tanh" if act == "gelu" else ACTIVATIONS.get(act, act)
    if act not in ACTIVATIONS:
        raise ValueError(f"{path}: unsupported hidden_act {act!r}")
    dropout = raw.get("hidden_dropout_prob", raw.get("dropout_rate", 0.1))
    return TransformerConfig(
        vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"], num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"], intermediate_size=raw["intermediate_size"], hidden_act=act,
        type_vocab_size=0, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        layer_norm_eps=raw.get("layer_norm_eps", 1e-6), initializer_range=raw.get("initializer_range", 0.02),
        key_size=raw.get("attention_head_size", raw.get("key_size")), norm_position="pre", embedding_norm=False,
        final_norm=True, relative_attention_num_buckets=raw.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=raw.get("relative_attention_max_distance", 128),
        num_decoder_layers=raw.get("num_decoder_layers"), feed_forward_proj=("gated-" if gated else "") + act,
        tie_word_embeddings=raw.get("tie_word_embeddings", default_tied), eos_token_id=raw.get("eos_token_id", 1))


def t5_config_reader(default_tied: bool):
    """Reader for HF T5 `config.json` (has `d_model`) or a bert4keras-style json (has `hidden_size`).

    `default_tied`: whether the LM head is tied (with the `d_model**-0.5` rescale) when the file does not say:
    True for T5 1.0, False for T5.1.1 / mT5.
    """
    def read(raw: dict) -> TransformerConfig:
        path = raw.get("__path__", "<config>")
        if "d_model" in raw:
            return _hf_t5_config(raw, path, default_tied)
        return _bert4keras_t5_config(raw, path, default_tied)

    return read
