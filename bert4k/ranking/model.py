"""`build_set_ranker`: a Transformer encoder over the documents of one query, scoring them jointly.

No position embeddings, so permuting the documents permutes the scores (optionally an embedding of each document's
initial rank from a base ranker, as in SetRank; the model is then equivariant to permuting documents and ranks
together). Blocks are the stack's `TransformerBlock` (full self-attention over the list, O(n²)) or
`InducedSetAttention` (ISAB, O(n·m) through m inducing points).
"""
from __future__ import annotations

import keras
from keras import ops

from bert4k.layers.block import TransformerBlock
from bert4k.layers.initializers import truncated_normal
from bert4k.layers.norms import LayerNorm
from bert4k.layers.set_attention import InducedSetAttention
from bert4k.layers.structural import AttentionMask
from bert4k.ranking.losses import NEG

BLOCKS = ("self", "induced")


def build_set_ranker(num_features: int, hidden_size: int = 64, num_layers: int = 2, heads: int = 4,
                     intermediate_size: int | None = None, block: str = "self", inducing_points: int = 16,
                     max_initial_rank: int | None = None, dropout: float = 0.1, input_noise: float = 0.0,
                     attention: str = "softmax",
                     initializer_range: float = 0.02, name: str = "set_ranker") -> keras.Model:
    """A Keras model `[features [b, n, f] float, list_mask [b, n] int (1 = document, 0 = padding)
    (, initial_rank [b, n] int, 0-based)] → scores [b, n]` (padding scores are −1e4).

    `block`: "self" (`TransformerBlock`, `attention` as in `build_transformer_model`) or "induced" (ISAB with
    `inducing_points`); `num_layers=0` gives a per-document MLP (the listwise baseline that cannot see the list).
    `max_initial_rank`: add an embedding of the initial rank (ranks ≥ it share the last row).
    `input_noise`: standard deviation of Gaussian noise added to the features in training (augmentation, as in
    DASALC), 0 for none.
    """
    if block not in BLOCKS:
        raise ValueError(f"build_set_ranker: block must be one of {BLOCKS}, got {block!r}")
    if hidden_size % heads:
        raise ValueError(f"build_set_ranker: hidden_size {hidden_size} is not divisible by heads {heads}")
    intermediate_size = intermediate_size or 4 * hidden_size
    init = truncated_normal(initializer_range)
    features = keras.Input(shape=(None, num_features), dtype="float32", name="Input-Features")
    list_mask = keras.Input(shape=(None,), dtype="int32", name="Input-ListMask")
    inputs = [features, list_mask]
    x = keras.layers.GaussianNoise(input_noise, name="Feature-Noise")(features) if input_noise else features
    x = keras.layers.Dense(hidden_size, kernel_initializer=init, name="Feature-Projection")(x)
    if max_initial_rank is not None:
        rank = keras.Input(shape=(None,), dtype="int32", name="Input-InitialRank")
        inputs.append(rank)
        clipped = ops.clip(rank, 0, max_initial_rank - 1)
        x = x + keras.layers.Embedding(max_initial_rank, hidden_size, embeddings_initializer=init,
                                       name="Embedding-InitialRank")(clipped)
    x = LayerNorm(1e-12, name="Embedding-Norm")(x)
    x = keras.layers.Dropout(dropout, name="Embedding-Dropout")(x)
    valid = ops.not_equal(list_mask, 0)
    if block == "self" and num_layers:
        mask = AttentionMask("encoder", 0, name="Attention-Mask")(list_mask)
    for i in range(num_layers):
        if block == "self":
            x = TransformerBlock(heads, hidden_size // heads, intermediate_size, dropout=dropout,
                                 attention_dropout=dropout, initializer_range=initializer_range, attention=attention,
                                 name=f"Transformer-{i}")(x, attention_mask=mask)
        else:
            x = InducedSetAttention(heads, hidden_size // heads, inducing_points, intermediate_size, dropout=dropout,
                                    initializer_range=initializer_range, name=f"ISAB-{i}")(x, valid)
    x = keras.layers.Dense(hidden_size, activation="gelu", kernel_initializer=init, name="Score-Dense")(x)
    scores = ops.squeeze(keras.layers.Dense(1, kernel_initializer=init, name="Score")(x), -1)
    scores = ops.where(valid, scores, NEG)
    return keras.Model(inputs, scores, name=name)
