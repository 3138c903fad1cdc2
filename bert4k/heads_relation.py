"""Relation extraction, "half pointer, half tagging" (the LIC2020 / bert4keras structure), as a model builder, its
loss and its decoding.

1. Subjects: per token, sigmoid logits "a subject starts here" / "a subject ends here" (`[batch, seq, 2]`).
2. Objects given one subject `(start, end)`: the encoder vectors at the subject's start and end are concatenated
   and injected into every position through a conditional LayerNorm (`γ + c·W_γ`, `β + c·W_β`), then per
   predicate, sigmoid logits "an object of this predicate starts / ends here" (`[batch, seq, predicates, 2]`).

Decoding pairs each start above its threshold with the nearest end at or after it (subjects; objects per
predicate). Positions are token positions; map them back to text with the tokenizer's offsets.
"""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

from bert4k.layers.initializers import truncated_normal
from bert4k.layers.norms import LayerNorm

IGNORE = -1  # label value of padded positions


@keras.saving.register_keras_serializable("bert4k")
class SpanVectors(keras.layers.Layer):
    """`call(x, span)`: `x` `[batch, seq, hidden]`, `span` `[batch, 2]` token positions → `[batch, 2·hidden]`, the
    vectors at the span's start and end, concatenated."""

    def call(self, x, span):
        span = ops.cast(span, "int32")
        picked = ops.take_along_axis(x, span[:, :, None], axis=1)  # [batch, 2, hidden]
        return ops.reshape(picked, (ops.shape(x)[0], 2 * x.shape[-1]))

    def compute_output_spec(self, x, span):
        return keras.KerasTensor((x.shape[0], 2 * x.shape[-1]), dtype=x.dtype)


@dataclasses.dataclass
class RelationModels:
    """`subject` (encoder inputs → subject logits), `object` (encoder inputs + subject span → object logits),
    `train` (both outputs; fit it with `relation_losses()`). All three share weights."""

    subject: keras.Model
    object: keras.Model
    train: keras.Model
    num_predicates: int


def build_relation_extractor(encoder: keras.Model, num_predicates: int, name: str = "relation_extractor"
                             ) -> RelationModels:
    """The half-pointer / half-tagging models over an encoder with one `[batch, seq, hidden]` output (a bert4k
    Transformer with application `encoder`, or any model whose first input is the token ids)."""
    if num_predicates < 1:
        raise ValueError(f"num_predicates must be ≥ 1, got {num_predicates}")
    sequence = encoder.output
    if isinstance(sequence, (list, tuple)) or len(sequence.shape) != 3:
        raise ValueError(f"the relation extractor needs an encoder with one [batch, seq, hidden] output, got "
                         f"{[tuple(o.shape) for o in sequence] if isinstance(sequence, (list, tuple)) else sequence.shape}")
    hidden = sequence.shape[-1]
    initializer_range = float(getattr(getattr(encoder, "config", None), "initializer_range", 0.02))
    subject_logits = keras.layers.Dense(2, kernel_initializer=truncated_normal(initializer_range), dtype="float32",
                                        name="Subject-Logits")(sequence)
    subject_span = keras.Input((2,), dtype="int32", name="Subject-Span")
    condition = SpanVectors(name="Subject-Vectors")(sequence, subject_span)
    x = LayerNorm(cond_size=2 * hidden, name="Subject-Conditional-LayerNorm")(sequence, condition)
    x = keras.layers.Dense(2 * num_predicates, kernel_initializer=truncated_normal(initializer_range),
                           dtype="float32", name="Object-Logits")(x)
    object_logits = keras.layers.Reshape((-1, num_predicates, 2), name="Object-Logits-By-Predicate")(x)
    subject_logits = keras.layers.Identity(name="subject", dtype="float32")(subject_logits)
    object_logits = keras.layers.Identity(name="object", dtype="float32")(object_logits)
    inputs = list(encoder.inputs)
    return RelationModels(keras.Model(inputs, subject_logits, name=f"{name}_subject"),
                          keras.Model([*inputs, subject_span], object_logits, name=f"{name}_object"),
                          keras.Model([*inputs, subject_span], [subject_logits, object_logits], name=name),
                          num_predicates)


def masked_binary_crossentropy(y_true, logits):
    """Sigmoid cross-entropy summed over the label axes and averaged over real positions → `[batch]`. Positions
    are axis 1; a label of `IGNORE` (-1) marks padding."""
    y_true = ops.cast(y_true, "float32")
    logits = ops.cast(logits, "float32")
    keep = ops.cast(ops.greater_equal(y_true, 0.0), "float32")
    targets = ops.maximum(y_true, 0.0)
    ce = ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))  # stable BCE
    axes = tuple(range(2, len(logits.shape)))
    per_position = ops.sum(ce * keep, axis=axes) / float(logits.shape[-1])  # mean over start/end, sum the rest
    real = ops.cast(ops.any(ops.greater(keep, 0.0), axis=axes), "float32")
    return ops.sum(per_position, axis=1) / ops.maximum(ops.sum(real, axis=1), 1.0)


def relation_losses() -> dict:
    """Losses for `RelationModels.train` (outputs `subject`, `object`)."""
    return {"subject": masked_binary_crossentropy, "object": masked_binary_crossentropy}


# === labels and decoding (numpy) ===

def relation_labels(length: int, subjects: list[tuple[int, int]], objects: list[tuple[int, int, int]],
                    num_predicates: int) -> tuple[np.ndarray, np.ndarray]:
    """`(subject_labels [length, 2], object_labels [length, predicates, 2])` for one sequence: every subject's
    start/end, and the `(start, end, predicate)` objects of the one subject fed with them."""
    subject = np.zeros((length, 2), dtype="float32")
    obj = np.zeros((length, num_predicates, 2), dtype="float32")
    for s, e in subjects:
        _check_span((s, e), length, "subject")
        subject[s, 0] = subject[e, 1] = 1.0
    for s, e, p in objects:
        _check_span((s, e), length, "object")
        if not 0 <= p < num_predicates:
            raise ValueError(f"predicate id {p} is outside 0..{num_predicates - 1}")
        obj[s, p, 0] = obj[e, p, 1] = 1.0
    return subject, obj


def _check_span(span, length: int, what: str) -> None:
    if not 0 <= span[0] <= span[1] < length:
        raise ValueError(f"{what} span {tuple(span)} lies outside positions 0..{length - 1}")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def pair_spans(start_probs, end_probs, allowed=None, start_threshold: float = 0.5,
               end_threshold: float = 0.5) -> list[tuple[int, int]]:
    """Each position whose start probability passes its threshold, paired with the nearest position at or after
    it whose end probability passes (both in `allowed`, if given)."""
    start_probs, end_probs = np.asarray(start_probs), np.asarray(end_probs)
    ok = np.ones(len(start_probs), bool) if allowed is None else np.asarray(allowed, bool)
    ends = np.nonzero((end_probs > end_threshold) & ok)[0]
    spans = []
    for i in np.nonzero((start_probs > start_threshold) & ok)[0]:
        after = ends[ends >= i]
        if len(after):
            spans.append((int(i), int(after[0])))
    return spans


def extract_relations(models: RelationModels, inputs: list[np.ndarray], allowed: np.ndarray,
                      start_threshold: float = 0.5, end_threshold: float = 0.5
                      ) -> list[list[tuple[tuple[int, int], int, tuple[int, int]]]]:
    """Triples `((subject start, end), predicate, (object start, end))` in token positions for each row of a
    batch. `inputs`: the encoder inputs (token ids, segment ids, ...); `allowed` `[batch, seq]`: positions that
    may be part of a subject or object (the text tokens: not `[CLS]`, `[SEP]` or padding)."""
    allowed = np.asarray(allowed, bool)
    subject_probs = _sigmoid(models.subject.predict_on_batch(inputs))
    rows, spans = [], []
    per_row: list[list] = [[] for _ in range(len(allowed))]
    for b in range(len(allowed)):
        for span in pair_spans(subject_probs[b, :, 0], subject_probs[b, :, 1], allowed[b], start_threshold,
                               end_threshold):
            rows.append(b)
            spans.append(span)
    if not rows:
        return per_row
    index = np.asarray(rows)
    object_probs = _sigmoid(models.object.predict_on_batch([*(np.asarray(x)[index] for x in inputs),
                                                            np.asarray(spans, dtype="int32")]))
    for b, subject, probs in zip(rows, spans, object_probs):
        for p in range(models.num_predicates):
            for obj in pair_spans(probs[:, p, 0], probs[:, p, 1], allowed[b], start_threshold, end_threshold):
                per_row[b].append((subject, p, obj))
    return per_row


def triple_scores(gold: list[set], predicted: list[set]) -> dict:
    """Micro precision / recall / F1 over exact triples, with counts."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold rows but {len(predicted)} predicted rows")
    tp = sum(len(set(g) & set(p)) for g, p in zip(gold, predicted))
    n_gold, n_pred = sum(len(set(g)) for g in gold), sum(len(set(p)) for p in predicted)
    return {"precision": tp / n_pred if n_pred else 0.0, "recall": tp / n_gold if n_gold else 0.0,
            "f1": 2 * tp / (n_gold + n_pred) if n_gold + n_pred else 0.0, "gold": n_gold, "predicted": n_pred,
            "correct": tp}
