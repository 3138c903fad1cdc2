"""N-gram embeddings beside a character encoder: lexical evidence (e.g. character bigrams) that a tagger can learn
from few sentences, looked up at several relative positions of each token."""
from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable("bert4k")
class NgramEmbedding(keras.layers.Layer):
    """`call(ids)`: `[batch, seq]` n-gram ids → `[batch, seq, len(offsets) · output_dim]`, at position `p` the
    embeddings of the ids at positions `p + k` for each `k` in `offsets`, concatenated.

    Id 0 is "no n-gram" (padding, special tokens): its vector is zero, as is any position outside the sequence.
    With character bigrams where `ids[p]` is the bigram of token `p` and token `p + 1`, `offsets=(-1, 0)` gives
    each character its left and right bigram; `(-2, -1, 0, 1)` every bigram in a ±2 window. `lr_multiplier`:
    the table learns that many times faster under Adam-type optimisers (stored divided by it, scaled back).
    """

    def __init__(self, input_dim: int, output_dim: int, offsets: Sequence[int] = (-1, 0), lr_multiplier: float = 1.0,
                 embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        if input_dim < 2 or output_dim < 1:
            raise ValueError(f"NgramEmbedding needs input_dim ≥ 2 (id 0 is padding) and output_dim ≥ 1, got "
                             f"input_dim={input_dim}, output_dim={output_dim}")
        if not offsets or len(set(offsets)) != len(offsets):
            raise ValueError(f"NgramEmbedding offsets must be distinct and non-empty, got {list(offsets)}")
        if lr_multiplier <= 0:
            raise ValueError(f"NgramEmbedding lr_multiplier must be > 0, got {lr_multiplier}")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.offsets = [int(k) for k in offsets]
        self.lr_multiplier = float(lr_multiplier)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.input_dim, self.output_dim),
                                          initializer=self.embeddings_initializer)
        if self.lr_multiplier != 1:
            self.embeddings.assign(self.embeddings / self.lr_multiplier)

    def call(self, ids):
        ids = ops.cast(ids, "int32")
        table = ops.cast(self.embeddings, self.compute_dtype) * self.lr_multiplier
        vectors = ops.take(table, ids, axis=0) * ops.expand_dims(ops.cast(ops.not_equal(ids, 0), self.compute_dtype),
                                                                   -1)
        return ops.concatenate([self._shifted(vectors, k) for k in self.offsets], axis=-1)

    @staticmethod
    def _shifted(vectors, k: int):
        """`out[:, p] = vectors[:, p + k]`, zeros where `p + k` is outside the sequence."""
        if k == 0:
            return vectors
        padded = ops.pad(vectors, [[0, 0], [max(-k, 0), max(k, 0)], [0, 0]])
        return padded[:, k:] if k > 0 else padded[:, :k]

    def compute_output_shape(self, input_shape):
        return (*input_shape, len(self.offsets) * self.output_dim)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "offsets": self.offsets, "lr_multiplier": self.lr_multiplier,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer)}
