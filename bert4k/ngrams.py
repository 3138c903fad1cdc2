"""A vocabulary of character n-grams for `bert4k.layers.NgramEmbedding`.

Id 0 is padding (or "no n-gram here"), id 1 is `[UNK]` (an n-gram outside the vocabulary), the known n-grams
follow, most frequent first. Built with a minimum count, the training data's rare n-grams fall to `[UNK]`, so that
row learns what an unseen n-gram means.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path


class NgramVocab:
    """Ids of the character n-grams of the lengths in `orders` (e.g. `(1, 2)`: characters and bigrams)."""

    PAD, UNK = 0, 1

    def __init__(self, ngrams: Sequence[str], orders: Sequence[int] = (1, 2)):
        self.orders = tuple(sorted(set(orders)))
        if not self.orders or self.orders[0] < 1:
            raise ValueError(f"orders must be n-gram lengths ≥ 1, got {tuple(orders)}")
        bad = [g for g in ngrams if not isinstance(g, str) or len(g) not in self.orders]
        if bad or len(set(ngrams)) != len(ngrams):
            raise ValueError(f"n-grams must be distinct strings of length {self.orders}, got "
                             f"{bad[:3] or 'duplicates'}")
        self.ngrams = list(ngrams)
        self.index = {g: i + 2 for i, g in enumerate(self.ngrams)}

    def __len__(self) -> int:
        """The table size: the known n-grams plus the padding and `[UNK]` rows."""
        return len(self.ngrams) + 2

    @staticmethod
    def ngrams_of(chars: Sequence[str], orders: Sequence[int] = (1, 2)) -> list[str]:
        """Every n-gram of `chars` (a string or a sequence of characters) of each order, shortest order first."""
        return ["".join(chars[i:i + n]) for n in orders for i in range(len(chars) - n + 1)]

    @classmethod
    def from_counts(cls, counts: Counter, min_count: int = 2, max_size: int | None = None,
                    **kwargs) -> NgramVocab:
        """The n-grams counted ≥ `min_count` times, most frequent first (ties by string), at most `max_size`."""
        if min_count < 1:
            raise ValueError(f"min_count must be ≥ 1, got {min_count}")
        kept = sorted((g for g, c in counts.items() if c >= min_count), key=lambda g: (-counts[g], g))
        return cls(kept[:max_size], **kwargs)

    @classmethod
    def from_texts(cls, texts: Iterable[Sequence[str]], orders: Sequence[int] = (1, 2), min_count: int = 2,
                   max_size: int | None = None) -> NgramVocab:
        """The vocabulary of the n-grams of `texts` seen ≥ `min_count` times."""
        counts = Counter(g for text in texts for g in cls.ngrams_of(text, orders))
        return cls.from_counts(counts, min_count, max_size, orders=orders)

    def lookup(self, ngrams: Iterable[str]) -> list[int]:
        """The ids of `ngrams`, `UNK` for unknown ones."""
        return [self.index.get(g, self.UNK) for g in ngrams]

    def bag_ids(self, chars: Sequence[str]) -> list[int]:
        """The ids of all n-grams of `chars` (of this vocabulary's orders), for a bag-of-n-grams input."""
        return self.lookup(self.ngrams_of(chars, self.orders))

    def save(self, path: str | os.PathLike) -> None:
        """Write `{"ngrams": [...], "orders": [...]}` as JSON (to a temporary name, then renamed)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"ngrams": self.ngrams, "orders": list(self.orders)}, ensure_ascii=False),
                       encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> NgramVocab:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
        fields = saved if isinstance(saved, dict) else {}
        ngrams, orders = fields.get("ngrams"), fields.get("orders")
        if not (isinstance(ngrams, list) and isinstance(orders, list)) or not fields:
            raise ValueError(f"{path}: expected {{'ngrams': [...], 'orders': [...]}}, got "
                             f"{sorted(fields) if fields else type(saved).__name__}")
        try:
            return cls(ngrams, orders)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
