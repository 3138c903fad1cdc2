"""`attention=` names of the one stack and the layer each builds (`TransformerBlock` calls `make_attention`)."""
from __future__ import annotations

from bert4k.layers.attention import MultiHeadAttention
from bert4k.layers.synthesizer import SynthesizerAttention
from bert4k.layers.talking_heads import TalkingHeadsAttention

# kind → the `attention_options` it accepts
OPTIONS = {"softmax": (), "linear": (), "talking_heads": ("softmax_heads", "value_heads"),
           "synthesizer_dense": ("max_length",), "synthesizer_random": ("max_length",),
           "synthesizer_factorized": ("max_length", "rank")}
ATTENTION_KINDS = tuple(OPTIONS)


def make_attention(kind: str, heads: int, head_size: int, options: dict | None = None, **kwargs) -> MultiHeadAttention:
    """The self-attention layer of `kind`; `options` are its extra settings (see `OPTIONS`), `kwargs` the common
    ones (`key_size`, `dropout`, `initializer_range`, `name`, `dtype`)."""
    if kind not in OPTIONS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {kind!r}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS[kind]))
    if unknown:
        raise ValueError(f"attention={kind!r} does not take attention_options {unknown}; it takes "
                         f"{list(OPTIONS[kind])}")
    if kind == "talking_heads":
        return TalkingHeadsAttention(heads, head_size, **options, **kwargs)
    if kind.startswith("synthesizer_"):
        return SynthesizerAttention(heads, head_size, synthesizer=kind.removeprefix("synthesizer_"), **options,
                                    **kwargs)
    return MultiHeadAttention(heads, head_size, attention=kind, **kwargs)
