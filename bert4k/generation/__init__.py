"""Autoregressive decoding with a static KV cache."""
