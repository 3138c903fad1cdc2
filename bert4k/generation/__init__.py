"""Autoregressive decoding with a static KV cache (or linear attention's running state): one engine (`generate`) on
every Keras backend for every causal / prefix / seq2seq model that has a decoding adapter, samplers by name
(`greedy`, `sample`, `top_k`, `top_p`, `beam`) or as objects (bert4keras' `AutoRegressiveDecoder` runs on it:
`bert4k.compat.decoder`)."""
from bert4k.generation.adapters import DecodingAdapter, TransformerAdapter, adapter_for, register_adapter
from bert4k.generation.engine import generate
from bert4k.generation.samplers import (
                                        BeamSearch,
                                        Greedy,
                                        RandomSampler,
                                        Sampler,
                                        TopK,
                                        TopP,
                                        get_sampler,
                                        register_sampler,
)

__all__ = ["BeamSearch", "DecodingAdapter", "Greedy", "RandomSampler", "Sampler", "TopK", "TopP", "TransformerAdapter",
           "adapter_for", "generate", "get_sampler", "register_adapter", "register_sampler"]
