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

from bert4k.config import TransformerConfig
from bert4k.models.transformer import Transformer


def causal_transformer(config: TransformerConfig, application: str = "encoder", **kwargs) -> Transformer:
    """A GPT-style `Transformer`: these models are causal, so the builder's default `encoder` means `lm`."""
    return Transformer(config, application="lm" if application == "encoder" else application, **kwargs)

