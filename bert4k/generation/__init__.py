"""Autoregressive decoding with a static KV cache: one engine (`generate`) for every causal / prefix / seq2seq model
that has a decoding adapter, plus bert4keras' `AutoRegressiveDecoder` on top of it."""
from bert4k.generation.adapters import DecodingAdapter, TransformerAdapter, adapter_for, register_adapter
from bert4k.generation.engine import generate

__all__ = ["DecodingAdapter", "TransformerAdapter", "adapter_for", "generate", "register_adapter"]
