"""Keras layers of the Transformer stack (all registered serializable under the `bert4k` package)."""
from bert4k.layers.attention import MultiHeadAttention
from bert4k.layers.block import TransformerBlock
from bert4k.layers.crf import ConditionalRandomField
from bert4k.layers.embeddings import BiasAdd, TokenEmbedding
from bert4k.layers.feed_forward import FeedForward
from bert4k.layers.loss import Loss
from bert4k.layers.norms import LayerNorm, RMSNorm
from bert4k.layers.structural import AttentionMask, PositionIds, QueryStream

__all__ = ["AttentionMask", "BiasAdd", "FeedForward", "LayerNorm", "Loss", "MultiHeadAttention", "PositionIds",
           "QueryStream", "RMSNorm", "TokenEmbedding", "TransformerBlock"]
__all__ += ["ConditionalRandomField"]
