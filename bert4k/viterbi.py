"""Viterbi decoding in numpy: the best label path of one sequence under emission and transition scores.

`ViterbiDecoder(trans, starts, ends).decode(nodes)` has bert4keras' shape (`bert4keras.snippets.ViterbiDecoder`);
`best_path(nodes, trans)` also returns the path's score. Use them on the output of
`bert4k.layers.ConditionalRandomField` row by row (cut to the real length), with `trans = crf.trans`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def best_path(nodes, trans) -> tuple[np.ndarray, float]:
    """`(labels [steps], score)` maximising `Σ_t nodes[t, y_t] + Σ_t trans[y_{t-1}, y_t]`.

    `nodes`: `[steps, labels]` scores (`-inf` forbids a label at a step); `trans`: `[labels, labels]`, from → to.
    Ties go to the lowest label id. Raises for shapes that disagree or when every path is forbidden.
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    trans = np.asarray(trans, dtype=np.float64)
    if nodes.ndim != 2 or trans.shape != (nodes.shape[1], nodes.shape[1]):
        raise ValueError(f"nodes must be [steps, labels] and trans [labels, labels], got {nodes.shape} and "
                         f"{trans.shape}")
    if len(nodes) == 0:
        return np.zeros(0, dtype=np.int64), 0.0
    scores, pointers = nodes[0], []
    for emission in nodes[1:]:
        total = scores[:, None] + trans + emission[None, :]
        pointers.append(total.argmax(axis=0))
        scores = total.max(axis=0)
    if not np.isfinite(scores.max()):
        raise ValueError("no label path has a finite score (every path is forbidden)")
    path = [int(scores.argmax())]
    for pointer in reversed(pointers):
        path.append(int(pointer[path[-1]]))
    return np.array(path[::-1]), float(scores.max())


class ViterbiDecoder:
    """bert4keras' decoder: `trans[i, j]` scores label i → label j; `starts` / `ends` (label ids) optionally
    restrict the first and last label of a path."""

    def __init__(self, trans, starts: Sequence[int] | None = None, ends: Sequence[int] | None = None):
        self.trans = np.asarray(trans, dtype=np.float64)
        if self.trans.ndim != 2 or self.trans.shape[0] != self.trans.shape[1]:
            raise ValueError(f"trans must be a square [labels, labels] matrix, got shape {self.trans.shape}")
        labels = range(len(self.trans))
        for name, allowed in (("starts", starts), ("ends", ends)):
            bad = [i for i in (allowed or ()) if i not in labels]
            if bad:
                raise ValueError(f"{name}: label ids {bad} are outside 0..{len(self.trans) - 1}")
        self.non_starts = [i for i in labels if starts is not None and i not in starts]
        self.non_ends = [i for i in labels if ends is not None and i not in ends]

    def decode(self, nodes) -> np.ndarray:
        """The best label ids `[steps]` for `nodes` `[steps, labels]` (not modified)."""
        nodes = np.array(nodes, dtype=np.float64)
        if nodes.ndim == 2 and len(nodes):
            nodes[0, self.non_starts] = -np.inf
            nodes[-1, self.non_ends] = -np.inf
        return best_path(nodes, self.trans)[0]
