"""Task heads over an encoder: sequence classification, extractive-QA spans, token classification; the relation
extractor (`build_relation_extractor`, its losses and decoding) is re-exported from `bert4k.heads_relation`.

Each `build_*` takes an encoder `keras.Model` whose first input is the token ids (a bert4k `Transformer` with
application `encoder`) and returns a new `keras.Model` over the same inputs that outputs float32 logits, so it
trains with `from_logits=True` losses under any dtype policy. `best_span` / `best_span_in_windows` decode QA
logits (numpy) into the best valid answer span, across the sliding windows of a long context.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from bert4k.heads_relation import (  # noqa: F401 (re-exported)
    RelationModels,
    build_relation_extractor,
    extract_relations,
    relation_losses,
)
from bert4k.layers.initializers import truncated_normal
from bert4k.layers.ngram import NgramEmbedding

POOLINGS = ("cls", "pooled", "mean")
_MASKED_LOGIT = -1e9


@keras.saving.register_keras_serializable("bert4k")
class FirstToken(keras.layers.Layer):
    """The first position (`[CLS]`) of a `[batch, seq, hidden]` sequence."""

    def call(self, x):
        return x[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable("bert4k")
class MeanPooling(keras.layers.Layer):
    """Mean of `x` over the positions whose token id is not `pad_id`: `call(x, token_ids)`."""

    def __init__(self, pad_id: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id

    def call(self, x, token_ids):
        keep = ops.cast(ops.not_equal(token_ids, self.pad_id), x.dtype)[:, :, None]
        total = ops.sum(x * keep, axis=1)
        return total / ops.maximum(ops.sum(keep, axis=1), ops.cast(1, x.dtype))

    def compute_output_shape(self, x_shape, token_ids_shape):
        return (x_shape[0], x_shape[-1])

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable("bert4k")
class SpanLogits(keras.layers.Layer):
    """Start and end logits `[batch, seq]` (float32) from one `Dense(2)` over the sequence.

    Only the context (segment 1, not padding) and position 0 (`[CLS]`, the "no answer in this window" target)
    may be chosen; every other position gets a logit of -1e9. `call(x, token_ids, segment_ids)`.
    """

    def __init__(self, pad_id: int = 0, initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id
        self.initializer_range = initializer_range
        self.dense = keras.layers.Dense(2, kernel_initializer=truncated_normal(initializer_range), dtype="float32",
                                        name="dense")

    def build(self, x_shape, token_ids_shape=None, segment_ids_shape=None):
        self.dense.build(x_shape)

    def call(self, x, token_ids, segment_ids):
        logits = self.dense(ops.cast(x, "float32"))
        allowed = ops.logical_and(ops.equal(segment_ids, 1), ops.not_equal(token_ids, self.pad_id))
        first = ops.equal(ops.arange(ops.shape(token_ids)[1])[None, :], 0)
        allowed = ops.logical_or(allowed, first)
        start = ops.where(allowed, logits[..., 0], _MASKED_LOGIT)
        end = ops.where(allowed, logits[..., 1], _MASKED_LOGIT)
        return start, end

    def compute_output_spec(self, x, token_ids, segment_ids):
        shape = tuple(x.shape[:2])  # two distinct tensors: one shared object would alias the two outputs
        return keras.KerasTensor(shape, dtype="float32"), keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id, "initializer_range": self.initializer_range}


def _pad_id(encoder) -> int:
    config = getattr(encoder, "config", None)
    return int(getattr(config, "pad_token_id", 0) or 0)


def _initializer_range(encoder) -> float:
    config = getattr(encoder, "config", None)
    return float(getattr(config, "initializer_range", 0.02))


def _single_output(encoder, rank: int, what: str):
    output = encoder.output
    if isinstance(output, (list, tuple)) or len(output.shape) != rank:
        shape = [tuple(o.shape) for o in output] if isinstance(output, (list, tuple)) else tuple(output.shape)
        raise ValueError(f"{what} needs an encoder with one rank-{rank} output, got output shape(s) {shape} "
                         f"(build it with application='encoder'{', with_pool=True' if rank == 2 else ''})")
    return output


def build_sequence_classifier(encoder: keras.Model, num_labels: int, pooling: str = "cls", dropout: float = 0.1,
                              name: str = "sequence_classifier", ngram_vocab_size: int = 0, ngram_dim: int = 64,
                              ngram_lr_multiplier: float = 1.0) -> keras.Model:
    """Encoder → pooled vector → dropout → `Dense(num_labels)` logits `[batch, num_labels]`.

    `pooling`: `cls` (the `[CLS]` vector of the sequence output), `pooled` (the encoder's pooler output: build the
    encoder with `with_pool=True`, as BERT's NSP pooler) or `mean` (mean over non-padding tokens). Single texts and
    pairs differ only in the segment ids fed to the encoder.

    `ngram_vocab_size` > 0 adds a fastText-style bag of n-grams: one more input, `Ngram-Ids` `[batch, n]` (the ids of
    the text's n-grams, 0 = padding), whose `ngram_dim`-wide embeddings (`NgramEmbedding`, learning
    `ngram_lr_multiplier` times faster) are averaged over the non-padding ids and concatenated with the sentence
    vector before the dropout.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    if num_labels < 1:
        raise ValueError(f"num_labels must be ≥ 1, got {num_labels}")
    if pooling == "pooled":
        x = _single_output(encoder, 2, "pooling='pooled'")
    else:
        sequence = _single_output(encoder, 3, f"pooling={pooling!r}")
        x = (FirstToken(name="CLS-Token")(sequence) if pooling == "cls"
             else MeanPooling(_pad_id(encoder), name="Mean-Pooling")(sequence, encoder.inputs[0]))
    inputs = list(encoder.inputs)
    if ngram_vocab_size:
        ngram_ids = keras.Input(shape=(None,), dtype="int32", name="Ngram-Ids")
        grams = NgramEmbedding(ngram_vocab_size, ngram_dim, offsets=(0,), lr_multiplier=ngram_lr_multiplier,
                               embeddings_initializer=truncated_normal(0.1), name="Ngram-Embedding")(ngram_ids)
        bag = MeanPooling(0, name="Ngram-Bag")(grams, ngram_ids)
        x = keras.layers.Concatenate(name="Sentence-And-Ngrams")([x, bag])
        inputs.append(ngram_ids)
    x = keras.layers.Dropout(dropout, name="Classifier-Dropout")(x)
    logits = keras.layers.Dense(num_labels, kernel_initializer=truncated_normal(_initializer_range(encoder)),
                                dtype="float32", name="Classifier-Dense")(x)
    return keras.Model(inputs, logits, name=name)


def build_span_extractor(encoder: keras.Model, name: str = "span_extractor", num_features: int = 0,
                         feature_units: int = 64) -> keras.Model:
    """Encoder → `SpanLogits`: outputs `[start_logits, end_logits]`, each `[batch, seq]` float32.

    Inputs are the encoder's `(token_ids, segment_ids)` with the question in segment 0 and the context in
    segment 1 (`[CLS] question [SEP] context [SEP]`). Train with sparse cross-entropy on the start and end
    token positions (0 = `[CLS]` when the answer is not in the window).
    `num_features` > 0 adds an input `Span-Features` `[batch, seq, num_features]` (float32, per token: e.g.
    DrQA-style "this token / its neighbours occur in the question"), passed through `Dense(feature_units, gelu)`
    and a zero-initialised `Dense(hidden)` and added to the encoder's output, so the head starts as without them.
    """
    if len(encoder.inputs) < 2:
        raise ValueError("the span extractor needs an encoder with token and segment inputs "
                         f"(type_vocab_size > 0), got inputs {[i.name for i in encoder.inputs]}")
    if num_features < 0 or feature_units < 1:
        raise ValueError(f"num_features must be ≥ 0 and feature_units ≥ 1, got {num_features}, {feature_units}")
    sequence = _single_output(encoder, 3, "the span extractor")
    inputs = list(encoder.inputs)
    if num_features:
        features = keras.Input((None, num_features), dtype="float32", name="Span-Features")
        inputs.append(features)
        hidden = keras.layers.Dense(feature_units, activation="gelu", dtype="float32",
                                    kernel_initializer=truncated_normal(_initializer_range(encoder)),
                                    name="Span-Features-Hidden")(features)
        hidden = keras.layers.Dense(sequence.shape[-1], kernel_initializer="zeros", dtype="float32",
                                    name="Span-Features-Out")(hidden)
        sequence = keras.layers.Add(dtype="float32", name="Span-Features-Add")([
            keras.layers.Activation("linear", dtype="float32", name="Span-Sequence-Float32")(sequence), hidden])
    start, end = SpanLogits(_pad_id(encoder), _initializer_range(encoder), name="Span-Logits")(
        sequence, encoder.inputs[0], encoder.inputs[1])
    start = keras.layers.Identity(name="start", dtype="float32")(start)
    end = keras.layers.Identity(name="end", dtype="float32")(end)
    return keras.Model(inputs, [start, end], name=name)


def build_token_classifier(encoder: keras.Model, num_labels: int, dropout: float = 0.1,
                           name: str = "token_classifier") -> keras.Model:
    """Encoder → dropout → `Dense(num_labels)` per token: logits `[batch, seq, num_labels]` (NER, tagging)."""
    if num_labels < 1:
        raise ValueError(f"num_labels must be ≥ 1, got {num_labels}")
    sequence = _single_output(encoder, 3, "the token classifier")
    x = keras.layers.Dropout(dropout, name="Token-Classifier-Dropout")(sequence)
    logits = keras.layers.Dense(num_labels, kernel_initializer=truncated_normal(_initializer_range(encoder)),
                                dtype="float32", name="Token-Classifier-Dense")(x)
    return keras.Model(encoder.inputs, logits, name=name)


# === span decoding (numpy) ===

@dataclasses.dataclass(frozen=True)
class Span:
    """A decoded answer: token positions `start..end` (inclusive) in window `window`, and its score
    (start logit + end logit)."""

    window: int
    start: int
    end: int
    score: float


def best_span(start_logits, end_logits, max_answer_length: int, allowed=None) -> Span | None:
    """The span `start ≤ end < start + max_answer_length` maximising `start_logits[start] + end_logits[end]`,
    with both ends in `allowed` (a boolean mask over positions, e.g. the tokens that map to context chars).

    Returns `None` when no span is valid. The window index of the result is 0.
    """
    start = np.asarray(start_logits, dtype=np.float64)
    end = np.asarray(end_logits, dtype=np.float64)
    if start.ndim != 1 or start.shape != end.shape:
        raise ValueError(f"start/end logits must be two 1-D arrays of one length, got {start.shape} and {end.shape}")
    if max_answer_length < 1:
        raise ValueError(f"max_answer_length must be ≥ 1, got {max_answer_length}")
    n = len(start)
    i, j = np.indices((n, n))
    valid = (j >= i) & (j - i < max_answer_length)
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != (n,):
            raise ValueError(f"allowed must have shape ({n},), got {allowed.shape}")
        valid &= allowed[:, None] & allowed[None, :]
    if not valid.any():
        return None
    scores = np.where(valid, start[:, None] + end[None, :], -np.inf)
    s, e = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return Span(0, int(s), int(e), float(scores[s, e]))


def best_span_in_windows(windows: Sequence[tuple], max_answer_length: int) -> Span | None:
    """The best valid span over several windows of one context.

    `windows`: `(start_logits, end_logits, allowed)` per window (`allowed` may be None). Scores are compared
    across windows as they are (raw logit sums), as BERT's SQuAD decoding does. Returns `None` if no window
    has a valid span.
    """
    best = None
    for w, (start, end, allowed) in enumerate(windows):
        span = best_span(start, end, max_answer_length, allowed)
        if span is not None and (best is None or span.score > best.score):
            best = dataclasses.replace(span, window=w)
    return best
