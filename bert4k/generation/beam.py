"""Beam bookkeeping: which (beam, token) pairs survive a step, finished hypotheses, and the exact stopping rule.

A hypothesis' score is `sum of log-probabilities / length ** length_penalty`, where length counts its generated
tokens (a final stop id included). A hypothesis finishes when it emits a stop id (the `min_stops`-th) or reaches
`max_new_tokens`. An input stops early only when no running beam can still beat its `num_return`-th finished
hypothesis: with `length_penalty ≥ 0` a running sum `s ≤ 0` can at best become `s / max_new_tokens ** α`.
With beams wide enough that nothing is pruned this returns exactly the best sequence by that score.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Hypotheses:
    """The best `keep` finished hypotheses of one input, best first."""

    keep: int
    items: list = dataclasses.field(default_factory=list)  # (score, tokens)

    def add(self, score: float, tokens: list[int]) -> None:
        self.items.append((score, tokens))
        self.items.sort(key=lambda item: -item[0])
        del self.items[self.keep:]

    def full(self) -> bool:
        return len(self.items) >= self.keep

    def worst(self) -> float:
        return self.items[-1][0]


class BeamState:
    """Running beams of `batch` inputs × `beams` rows (row = input * beams + beam)."""

    def __init__(self, batch: int, beams: int, num_return: int, max_new_tokens: int, length_penalty: float,
                 stop_ids: np.ndarray, min_stops: int = 1):
        self.batch, self.beams, self.max_new_tokens = batch, beams, max_new_tokens
        self.length_penalty, self.stop_ids, self.min_stops = length_penalty, stop_ids, min_stops
        self.scores = np.full((batch, beams), -np.inf)
        self.scores[:, 0] = 0.0  # all beams start identical: expand only the first
        self.tokens = np.zeros((batch, beams, 0), dtype=np.int64)
        self.stops = np.zeros((batch, beams), dtype=np.int64)
        self.finished = [Hypotheses(num_return) for _ in range(batch)]
        self.done = np.zeros(batch, bool)

    def normalized(self, score: float, length: int) -> float:
        return score / (length ** self.length_penalty)

    def advance(self, log_probs: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Choose the next beams from `log_probs` `[batch*beams, vocab]`; returns (source rows, new tokens)."""
        batch, beams = self.batch, self.beams
        vocab = log_probs.shape[-1]
        total = (self.scores[:, :, None] + log_probs.reshape(batch, beams, vocab)).reshape(batch, -1)
        width = min(2 * beams, total.shape[1])
        top = np.argpartition(-total, width - 1, axis=1)[:, :width]
        last = step + 1 == self.max_new_tokens
        new_scores = np.full((batch, beams), -np.inf)
        new_tokens = np.zeros((batch, beams), dtype=np.int64)
        source = np.zeros((batch, beams), dtype=np.int64)
        new_stops = np.zeros((batch, beams), dtype=np.int64)
        for b in range(batch):
            if self.done[b]:
                continue
            order = top[b][np.argsort(-total[b, top[b]], kind="stable")]
            kept = 0
            for flat in order:
                score = total[b, flat]
                if score == -np.inf:
                    break
                beam, token = divmod(int(flat), vocab)
                stops = self.stops[b, beam] + int(token in self.stop_ids)
                if (token in self.stop_ids and stops >= self.min_stops) or last:
                    self.finished[b].add(self.normalized(score, step + 1), [*self.tokens[b, beam], token])
                elif kept < beams:
                    new_scores[b, kept], new_tokens[b, kept], source[b, kept] = score, token, beam
                    new_stops[b, kept] = stops
                    kept += 1
            self.done[b] = last or self._cannot_improve(b, new_scores[b], step)
        rows = (np.arange(batch)[:, None] * beams + source).reshape(-1)
        self.tokens = np.concatenate([self.tokens[np.arange(batch)[:, None], source], new_tokens[:, :, None]], 2)
        self.scores, self.stops = new_scores, new_stops
        return rows, new_tokens.reshape(-1)

    def _cannot_improve(self, b: int, running: np.ndarray, step: int) -> bool:
        best = running.max()
        if best == -np.inf:
            return True
        if not self.finished[b].full():
            return False
        alpha = self.length_penalty
        length = self.max_new_tokens if alpha >= 0 else step + 2
        return self.finished[b].worst() >= best / (length ** alpha)

    def results(self, pad_id: int) -> np.ndarray:
        """`[batch * num_return, longest]` best first per input, padded with `pad_id`."""
        sequences = [tokens for hyps in self.finished
                     for _, tokens in hyps.items + [(None, [])] * (hyps.keep - len(hyps.items))]
        width = max((len(s) for s in sequences), default=0)
        out = np.full((len(sequences), width), pad_id, dtype=np.int64)
        for i, tokens in enumerate(sequences):
            out[i, :len(tokens)] = tokens
        return out
