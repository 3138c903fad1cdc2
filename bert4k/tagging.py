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

from bert4k.ngrams import NgramVocab
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


SCHEMES = {"BIO": "BI", "BIOES": "BIES"}  # scheme → the prefixes of an entity type's tags


class TagSet:
    """`O` plus the tags of each entity type, with ids (`O` = 0, then per type in order `B-T`, `I-T` for the
    `BIO` scheme (IOB2), `B-T`, `I-T`, `E-T`, `S-T` for `BIOES`: E ends an entity of ≥ 2 positions, S is a
    single-position one). `tags_of(spans, length)` / `spans_of(tags)` convert in the set's scheme."""

    def __init__(self, types: Sequence[str], scheme: str = "BIO"):
        if len(set(types)) != len(types) or not types:
            raise ValueError(f"entity types must be distinct and non-empty, got {list(types)}")
        if scheme not in SCHEMES:
            raise ValueError(f"tag scheme must be one of {list(SCHEMES)}, got {scheme!r}")
        self.types, self.scheme = list(types), scheme
        self.tags = ["O"] + [f"{p}-{t}" for t in self.types for p in SCHEMES[scheme]]
        self.ids = {tag: i for i, tag in enumerate(self.tags)}

    def __len__(self) -> int:
        return len(self.tags)

    def encode(self, tags: Sequence[str], where: str = "tags") -> list[int]:
        """Tag ids; a tag outside the set raises, naming `where` (e.g. `file:line`)."""
        out = []
        for i, tag in enumerate(tags):
            if tag not in self.ids:
                if self.scheme == "BIO":
                    _parse(tag)
                raise ValueError(f"{where}: tag {tag!r} (position {i}) is outside the tag set {self.tags}")
            out.append(self.ids[tag])
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tags[int(i)] for i in ids]

    def tags_of(self, spans: Iterable[Entity], length: int) -> list[str]:
        """The tags of non-overlapping entities over `length` positions (`spans_to_tags`, then BIOES if so)."""
        tags = spans_to_tags(spans, length)
        if self.scheme == "BIO":
            return tags
        out = []
        for i, tag in enumerate(tags):
            ends = i + 1 == len(tags) or not tags[i + 1].startswith("I-")
            out.append(tag if tag == "O" or not ends else ("S" if tag[0] == "B" else "E") + tag[1:])
        return out

    def spans_of(self, tags: Sequence[str]) -> list[Entity]:
        """Entities of a tag sequence in this scheme; BIOES is read as IOB2 with `S` = `B` and `E` = `I`, so a
        sequence that breaks the BIOES rules (e.g. `B` without `E`) is read by the conlleval convention."""
        if self.scheme == "BIOES":
            tags = [{"S": "B", "E": "I"}.get(t[0], t[0]) + t[1:] if t != "O" else t for t in tags]
        return tags_to_spans(tags)

    def transition_rules(self) -> np.ndarray:
        """`[tags, tags]` scores, `-inf` for the transitions the scheme forbids, 0 elsewhere: into `I-X` (and
        `E-X`) only from `B-X` / `I-X`; with BIOES, out of `B-X` / `I-X` only into `I-X` / `E-X`."""
        trans = np.zeros((len(self), len(self)))
        for kind in self.types:
            inside = [self.ids[f"{p}-{kind}"] for p in SCHEMES[self.scheme] if p in "IE"]
            opened = [self.ids[f"B-{kind}"], self.ids[f"I-{kind}"]]
            for j in inside:
                trans[[i for i in range(len(self)) if i not in opened], j] = -np.inf
            if self.scheme == "BIOES":
                for i in opened:
                    trans[i, [j for j in range(len(self)) if j not in inside]] = -np.inf
        return trans

    def starts(self) -> list[int]:
        """The tag ids a sequence may start with (not `I-X` / `E-X`)."""
        return [i for i, t in enumerate(self.tags) if t[:2] not in ("I-", "E-")]

    def ends(self) -> list[int]:
        """The tag ids a sequence may end with (BIOES: not `B-X` / `I-X`)."""
        return [i for i, t in enumerate(self.tags) if self.scheme == "BIO" or t[:2] not in ("B-", "I-")]


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


def constrained_decoder(tagset: TagSet, trans=None) -> ViterbiDecoder:
    """Viterbi under the tag scheme's rules (`TagSet.transition_rules`, `starts`, `ends`), plus the transition
    scores `trans` (a CRF's; none for a softmax head): `.decode(scores)` of `[steps, tags]` scores (a softmax
    head's log-probabilities, a CRF's emissions) is the best valid tag sequence, instead of broken entities."""
    rules = tagset.transition_rules()
    return ViterbiDecoder(rules if trans is None else rules + np.asarray(trans, np.float64), starts=tagset.starts(),
                          ends=tagset.ends())


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


class BigramVocab(NgramVocab):
    """Ids of character bigrams for `bert4k.layers.NgramEmbedding` (an `NgramVocab` of order 2): 0 = none
    (padding, special tokens), 1 = an unseen bigram (`[UNK]`), then the known bigrams. A bigram is the string of
    two adjacent characters; the text's start and end are the characters `BOS` / `EOS` (control characters,
    outside any text)."""

    BOS, EOS = "\x02", "\x03"

    def __init__(self, bigrams: Sequence[str], orders: Sequence[int] = (2,)):
        if tuple(orders) != (2,):
            raise ValueError(f"a BigramVocab holds bigrams only (orders (2,)), got orders {tuple(orders)}")
        super().__init__(bigrams, orders)

    @property
    def bigrams(self) -> list[str]:
        return self.ngrams

    @classmethod
    def from_texts(cls, texts: Iterable[Sequence[str]], min_count: int = 2, max_size: int = 200_000) -> BigramVocab:
        """The bigrams seen ≥ `min_count` times in `texts` (character sequences), at most `max_size`, most frequent
        first."""
        return cls.from_counts(Counter(b for chars in texts for b in cls.bigrams_of(chars)), min_count, max_size)

    @classmethod
    def bigrams_of(cls, chars: Sequence[str]) -> list[str]:
        """The `len(chars) + 1` bigrams of a text, from `BOS + chars[0]` to `chars[-1] + EOS`."""
        return cls.ngrams_of([cls.BOS, *chars, cls.EOS], (2,))

    def window_ids(self, chars: Sequence[str], start: int, end: int) -> list[int]:
        """Ids aligned with the tokens `[CLS] chars[start:end] [SEP]`: token `p` holds the bigram of token `p`'s
        character and the next one (so `[CLS]` holds the bigram ending at `chars[start]`, the last character's
        crosses the window's end, `[SEP]` holds none), which `NgramEmbedding(offsets=(-1, 0))` turns into each
        character's left and right bigram."""
        return self.lookup(self.bigrams_of(chars)[start:end + 1]) + [self.PAD]
