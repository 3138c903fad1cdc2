"""Sequence-labelling plumbing for NER: IOB2 tags ↔ entity spans, the tag set, windows over long texts, and
entity-level precision / recall / F1 (exact span and type).

An entity is `(type, start, end)` with `end` inclusive, in positions of the labelled sequence (characters for
Chinese NER). Rules, so that no input is silently misread:
- a tag is `O`, `B-<type>` or `I-<type>`; anything else raises;
- an `I-X` that does not continue an entity of type X starts a new one (the conlleval convention);
- tags cannot express overlapping or nested entities, so `spans_to_tags` raises on them (span heads such as
  GlobalPointer can represent them; see `bert4k.layers.global_pointer.decode_spans`).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from bert4k.viterbi import ViterbiDecoder

Entity = tuple[str, int, int]


def _parse(tag: str) -> tuple[str, str | None]:
    if tag == "O":
        return "O", None
    prefix, _, kind = tag.partition("-")
    if prefix not in ("B", "I") or not kind:
        raise ValueError(f"tag {tag!r} is not IOB2 (expected 'O', 'B-<type>' or 'I-<type>')")
    return prefix, kind


def tags_to_spans(tags: Sequence[str]) -> list[Entity]:
    """Entities `(type, start, end)` of an IOB2 tag sequence, in order."""
    spans, current = [], None
    for i, tag in enumerate(tags):
        prefix, kind = _parse(tag)
        if prefix == "I" and current is not None and current[0] == kind:
            current[2] = i
            continue
        if current is not None:
            spans.append(tuple(current))
            current = None
        if prefix != "O":
            current = [kind, i, i]
    if current is not None:
        spans.append(tuple(current))
    return spans


def spans_to_tags(spans: Iterable[Entity], length: int) -> list[str]:
    """IOB2 tags of `length` positions for non-overlapping entities; raises on overlap or out-of-range spans."""
    tags = ["O"] * length
    owner: list[Entity | None] = [None] * length
    for span in sorted(spans, key=lambda s: (s[1], s[2])):
        kind, start, end = span
        if not 0 <= start <= end < length:
            raise ValueError(f"entity {span} lies outside positions 0..{length - 1}")
        clash = next((owner[i] for i in range(start, end + 1) if owner[i] is not None), None)
        if clash is not None:
            raise ValueError(f"entities {clash} and {span} overlap; IOB2 tags cannot express overlapping or "
                             "nested entities (use a span head such as GlobalPointer)")
        tags[start] = f"B-{kind}"
        for i in range(start, end + 1):
            owner[i] = span
            if i > start:
                tags[i] = f"I-{kind}"
    return tags


class TagSet:
    """`O` plus `B-`/`I-` for each entity type, with ids (`O` = 0, then `B-T`, `I-T` per type in order)."""

    def __init__(self, types: Sequence[str]):
        if len(set(types)) != len(types) or not types:
            raise ValueError(f"entity types must be distinct and non-empty, got {list(types)}")
        self.types = list(types)
        self.tags = ["O"] + [f"{p}-{t}" for t in self.types for p in ("B", "I")]
        self.ids = {tag: i for i, tag in enumerate(self.tags)}

    def __len__(self) -> int:
        return len(self.tags)

    def encode(self, tags: Sequence[str], where: str = "tags") -> list[int]:
        """Tag ids; a tag outside the set raises, naming `where` (e.g. `file:line`)."""
        out = []
        for i, tag in enumerate(tags):
            if tag not in self.ids:
                _parse(tag)
                raise ValueError(f"{where}: tag {tag!r} (position {i}) is outside the tag set {self.tags}")
            out.append(self.ids[tag])
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tags[int(i)] for i in ids]


def log_prior(label_rows: Iterable[Sequence[int]], num_labels: int) -> list[float]:
    """Log frequency of each label id `0..num_labels-1` over all positions of `label_rows`, add-one smoothed.

    The initial bias of a tagging head: its first outputs are then the label prior (mostly `O`), so training does
    not have to learn that prior through the encoder, which at fine-tuning learning rates does it by making every
    token's vector alike (the head then predicts only `O` and the loss stays flat)."""
    counts = [1] * num_labels
    for row in label_rows:
        for label in row:
            if not 0 <= label < num_labels:
                raise ValueError(f"label id {label} is outside 0..{num_labels - 1}")
            counts[label] += 1
    total = sum(counts)
    return [math.log(c / total) for c in counts]


def bio_decoder(tagset: TagSet) -> ViterbiDecoder:
    """Viterbi under the IOB2 rules (no `I-X` first, nor after anything but `B-X` / `I-X`): `.decode(log_probs)`
    of a softmax head's `[steps, tags]` log-probabilities is the best valid tag sequence, instead of the argmax's
    broken entities."""
    return ViterbiDecoder(bio_transitions(tagset), starts=[i for i, t in enumerate(tagset.tags) if t[:2] != "I-"])


def bio_transitions(tagset: TagSet) -> np.ndarray:
    """`[tags, tags]` transition scores: `-inf` into `I-X` from anything but `B-X` / `I-X`, 0 elsewhere."""
    trans = np.zeros((len(tagset), len(tagset)))
    for j, tag in enumerate(tagset.tags):
        if tag.startswith("I-"):
            kind = tag[2:]
            allowed = {tagset.ids[f"B-{kind}"], j}
            trans[[i for i in range(len(tagset)) if i not in allowed], j] = -np.inf
    return trans


def windows(length: int, size: int) -> list[tuple[int, int]]:
    """Consecutive `[start, end)` windows of at most `size` positions covering `0..length` (one empty window for
    an empty sequence). Long texts are labelled window by window and the predictions mapped back by offset; an
    entity that crosses a window boundary is split there."""
    if size < 1:
        raise ValueError(f"window size must be ≥ 1, got {size}")
    return [(s, min(s + size, length)) for s in range(0, length, size)] or [(0, 0)]


def clip_spans(spans: Iterable[Entity], start: int, end: int) -> list[Entity]:
    """The parts of entities inside `[start, end)`, shifted to window positions."""
    return [(k, max(s, start) - start, min(e, end - 1) - start) for k, s, e in spans if s < end and e >= start]


def entity_scores(gold: Sequence[Iterable[Entity]], predicted: Sequence[Iterable[Entity]]) -> dict:
    """Micro precision / recall / F1 over exact `(type, start, end)` matches, overall and per type; plus counts."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold rows but {len(predicted)} predicted rows")
    tp, n_gold, n_pred = Counter(), Counter(), Counter()
    for g, p in zip(gold, predicted):
        g, p = set(g), set(p)
        for kind, *_ in g & p:
            tp[kind] += 1
        for kind, *_ in g:
            n_gold[kind] += 1
        for kind, *_ in p:
            n_pred[kind] += 1

    def prf(t, ng, np_):
        precision = t / np_ if np_ else 0.0
        recall = t / ng if ng else 0.0
        f1 = 2 * t / (ng + np_) if ng + np_ else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "gold": ng, "predicted": np_, "correct": t}

    result = prf(sum(tp.values()), sum(n_gold.values()), sum(n_pred.values()))
    result["per_type"] = {k: prf(tp[k], n_gold[k], n_pred[k]) for k in sorted(set(n_gold) | set(n_pred))}
    return result
