"""Keras layers of the Transformer stack (all registered serializable under the `bert4k` package).

bert4keras' layer names (`Loss`, `LayerNormalization`) resolve lazily to `bert4k.compat.layers`, so importing the
native layers never imports the compatibility layer."""
from bert4k.layers.attention import MultiHeadAttention
from bert4k.layers.block import TransformerBlock
from bert4k.layers.crf import ConditionalRandomField
from bert4k.layers.embeddings import BiasAdd, TokenEmbedding
from bert4k.layers.feed_forward import FeedForward
from bert4k.layers.global_pointer import EfficientGlobalPointer, GlobalPointer
from bert4k.layers.ngram import NgramEmbedding
from bert4k.layers.norms import LayerNorm, RMSNorm
from bert4k.layers.structural import AttentionMask, PositionIds, QueryStream

__all__ = ["AttentionMask", "BiasAdd", "FeedForward", "LayerNorm", "MultiHeadAttention", "PositionIds",
           "QueryStream", "RMSNorm", "TokenEmbedding", "TransformerBlock"]
__all__ += ["ConditionalRandomField", "EfficientGlobalPointer", "GlobalPointer", "NgramEmbedding"]

_COMPAT = ("LayerNormalization", "Loss")


def __getattr__(name: str):
    if name in _COMPAT:
        from bert4k.compat import layers

        return getattr(layers, name)
    raise AttributeError(f"module 'bert4k.layers' has no attribute {name!r}")
