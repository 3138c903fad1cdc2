"""Autoregressive decoding with a static KV cache: one engine (`generate`) for every causal / prefix / seq2seq model
that has a decoding adapter (bert4keras' `AutoRegressiveDecoder` runs on it: `bert4k.compat.decoder`)."""
from bert4k.generation.adapters import DecodingAdapter, TransformerAdapter, adapter_for, register_adapter
from bert4k.generation.engine import generate

__all__ = ["DecodingAdapter", "TransformerAdapter", "adapter_for", "generate", "register_adapter"]
