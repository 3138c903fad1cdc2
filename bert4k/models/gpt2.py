"""GPT-2 and GPT2-ML: configurations of the one `Transformer`, families `gpt2` and `gpt2_ml`
(registered in `bert4k.models.families`).

GPT-2 (HF `GPT2LMHeadModel`, OpenAI TF, UER `gpt2-chinese-*`): learned positions, no token types, pre-LN blocks
(`h = x + Attn(LN1(x)); y = h + FFN(LN2(h))`), a final LayerNorm, GELU-tanh (`gelu_new`), eps 1e-5, LM head tied to
the token embedding without bias.

GPT2-ML (imcaspar/gpt2-ml, built on Grover): token + position embeddings, then a LayerNorm (`embed_norm`); each
layer computes `h = x + Attn(x)` with no norm before or after attention, then `y = LN1(h + FFN(LN0(h)))`
(`mlp_ln0` before the FFN, `mlp_ln1` after its residual); exact (erf) GELU, eps 1e-5, causal attention scaled by
1/√head_size, tied LM head without bias. Source: `train/modeling.py` of imcaspar/gpt2-ml — `attention_layer`
returns the projected context which `GroverModel` adds to the layer input (`hidden_state + attention_output`),
`residual_mlp_layer` does `x_norm = layer_norm(x, 'mlp_ln0')`, intermediate dense with `gelu`, output dense, then
`layer_norm(x + output, 'mlp_ln1')`; `embed` returns `layer_norm(word + pos, 'embed_norm')`; `train/utils.py`
defines `layer_norm(..., epsilon=1e-5)` and `gelu` with `erf`. This is `TransformerBlock(norm_position="gpt2_ml")`.

Padding. GPT-2's own vocabulary has no padding token (id 0 is "!"), so by default no id is treated as padding
(`pad_token_id = -1`): pass `pad_token_id=...` to `build_transformer_model` to mask one. A config that names a
`pad_token_id` other than its `eos_token_id`, or a checkpoint that ships a BERT `vocab.txt` / says `tokenizer_class: BertTokenizer` (UER
`gpt2-chinese-*`), pads with that id / 0 (`[PAD]`); with pad = eos nothing is inferred from ids (pass the model a
`padding_mask`, `build_transformer_model(..., padding_mask=True)`). GPT2-ML uses a BERT-style vocabulary: pad 0.
"""
from __future__ import annotations

import os

from bert4k.config import TransformerConfig
from bert4k.models.transformer import Transformer


def _require(raw: dict, *names: str) -> None:
    missing = [n for n in names if n not in raw]
    if missing:
        raise ValueError(f"{raw.get('__path__', '<config>')}: missing GPT-2 config field(s) {missing}; "
                         f"got fields {sorted(k for k in raw if k != '__path__')}")


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
        _require(raw, "n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
        vocab, positions = raw["n_vocab"], raw["n_ctx"]
    else:
        _require(raw, "vocab_size", "n_embd", "n_head", "n_layer")
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
    _require(raw, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
    hidden = raw["hidden_size"]
    return TransformerConfig(
        vocab_size=raw["vocab_size"], hidden_size=hidden, num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"], intermediate_size=raw.get("intermediate_size", 4 * hidden),
        hidden_act=raw.get("hidden_act", "gelu"), max_position_embeddings=raw.get("max_position_embeddings", 1024),
        type_vocab_size=0, hidden_dropout_prob=raw.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=raw.get("attention_probs_dropout_prob", 0.1), layer_norm_eps=1e-5,
        initializer_range=raw.get("initializer_range", 0.02), norm_position="gpt2_ml", embedding_norm=True,
        final_norm=False, pad_token_id=raw.get("pad_token_id", 0), lm_head="tied")


def causal_transformer(config: TransformerConfig, application: str = "encoder", **kwargs) -> Transformer:
    """A GPT-style `Transformer`: these models are causal, so the builder's default `encoder` means `lm`."""
    return Transformer(config, application="lm" if application == "encoder" else application, **kwargs)

