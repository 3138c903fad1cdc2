"""Ranking data: LIBSVM `label idx:value ...` rows grouped into queries by a `.query` file of list sizes."""
from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence

import numpy as np

PAD_LABEL = -1  # label of padded documents in a padded batch; losses and metrics skip them


@dataclasses.dataclass
class RankingList:
    """The documents of one query: `features` `[n, f]` float32, graded `labels` `[n]` (int, ≥ 0), optionally each
    document's 0-based `initial_rank` `[n]` from a base ranker."""

    features: np.ndarray
    labels: np.ndarray
    initial_rank: np.ndarray | None = None


def _parse_row(line: str, path, number: int, num_features: int | None) -> tuple[int, dict[int, float]]:
    parts = line.split()
    try:
        label = int(float(parts[0]))
        values = {int(i): float(v) for i, v in (p.split(":", 1) for p in parts[1:])}
    except (ValueError, IndexError) as error:
        raise ValueError(f"{path}:{number}: expected 'label idx:value ...', got {line[:60]!r}") from error
    if label < 0:
        raise ValueError(f"{path}:{number}: relevance label must be ≥ 0, got {label}")
    if values and (min(values) < 0 or (num_features is not None and max(values) >= num_features)):
        raise ValueError(f"{path}:{number}: feature index out of range [0, {num_features}): "
                         f"{min(values)}..{max(values)}")
    return label, values


def read_libsvm_ranking(path: str | os.PathLike, query_path: str | os.PathLike | None = None,
                        num_features: int | None = None) -> list[RankingList]:
    """Queries of a LIBSVM ranking file; `query_path` (default `path + ".query"`) holds one list size per line.

    Missing features are 0. `num_features` fixes the width (default: 1 + the largest index in the file), so a test
    file can be read with the training file's width.
    """
    query_path = f"{path}.query" if query_path is None else query_path
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    with open(query_path, encoding="utf-8") as f:
        sizes = [int(line) for line in f if line.strip()]
    if sum(sizes) != len(lines):
        raise ValueError(f"{query_path}: list sizes sum to {sum(sizes)} but {path} has {len(lines)} rows")
    rows = [_parse_row(line, path, i + 1, num_features) for i, line in enumerate(lines)]
    width = num_features if num_features is not None else 1 + max((max(v) for _, v in rows if v), default=-1)
    features = np.zeros((len(rows), width), np.float32)
    for i, (_, values) in enumerate(rows):
        for j, value in values.items():
            features[i, j] = value
    labels = np.array([label for label, _ in rows], np.int32)
    bounds = np.cumsum([0, *sizes])
    return [RankingList(features[a:b], labels[a:b]) for a, b in itertools.pairwise(bounds)]


def pad_initial_ranks(lists: Sequence[RankingList], length: int) -> np.ndarray:
    """`[q, length]` int32 initial ranks (0 on padding); every list must have `initial_rank`."""
    ranks = np.zeros((len(lists), length), np.int32)
    for i, r in enumerate(lists):
        if r.initial_rank is None:
            raise ValueError(f"pad_initial_ranks: list {i} has no initial_rank")
        ranks[i, :len(r.initial_rank)] = r.initial_rank
    return ranks


def pad_lists(lists: Sequence[RankingList], length: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(features [q, length, f], labels [q, length], mask [q, length])`; padded slots get zero features,
    label `PAD_LABEL` and mask 0. `length` defaults to the longest list; a longer list is an error."""
    longest = max(len(r.labels) for r in lists)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"pad_lists: a list has {longest} documents, more than length={length}")
    width = lists[0].features.shape[1]
    features = np.zeros((len(lists), length, width), np.float32)
    labels = np.full((len(lists), length), PAD_LABEL, np.int32)
    mask = np.zeros((len(lists), length), np.int32)
    for i, r in enumerate(lists):
        n = len(r.labels)
        features[i, :n], labels[i, :n], mask[i, :n] = r.features, r.labels, 1
    return features, labels, mask
