"""Packed, whole-word-masked pre-training batches whose content depends only on (seed, step).

`pack()` tokenizes documents once, groups tokens into jieba words, and packs consecutive documents into rows of
`maxlen - 2` tokens. `StepBatches.batch(step)` draws row order (a fresh permutation per pass over the rows) and
masks from `seed` and `step` alone, so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bert4k.data import chinese_word_spans


def pack(docs: Sequence[str], tokenizer, maxlen: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`(token id rows, word id rows)`: rows of ≤ `maxlen - 2` ids (no [CLS]/[SEP]) filled with consecutive
    documents (a long document spans several rows); equal word ids mark the tokens of one jieba word."""
    width = maxlen - 2
    rows, words, ids, wids, next_word = [], [], [], [], 0
    for doc in docs:
        tokens = tokenizer.tokenize(doc)[1:-1]
        if not tokens:
            continue
        word_of = np.arange(len(tokens)) + next_word
        for start, end in chinese_word_spans(doc, tokens, tokenizer.rematch(doc, tokens)):
            word_of[start:end] = word_of[start]
        next_word += len(tokens)
        doc_ids = tokenizer.tokens_to_ids(tokens)
        for i in range(0, len(doc_ids), width):
            piece, piece_words = doc_ids[i:i + width], word_of[i:i + width]
            if len(ids) + len(piece) > width:
                rows.append(np.asarray(ids, "int32"))
                words.append(np.asarray(wids, "int64"))
                ids, wids = [], []
            ids.extend(piece)
            wids.extend(piece_words.tolist())
    if ids:
        rows.append(np.asarray(ids, "int32"))
        words.append(np.asarray(wids, "int64"))
    return rows, words


class StepBatches:
    """Masked-LM batches `(token_ids, segment_ids, positions, labels)` of shape `[batch, maxlen]` × 2 and
    `[batch, k]` × 2, as a function of the step.

    `rate` of each row's tokens is masked, whole jieba words at a time (at most `k` tokens); a masked token becomes
    `[MASK]` with probability `mask_prob`, else a random token with probability `random_prob`, else stays."""

    def __init__(self, rows, words, batch_size: int, maxlen: int, k: int, vocab_size: int, cls_id: int, sep_id: int,
                 mask_id: int, first_normal_id: int, seed: int, rate: float = 0.15, mask_prob: float = 0.8,
                 random_prob: float = 0.1):
        if not rows:
            raise ValueError("StepBatches: no rows")
        self.rows, self.words = rows, words
        self.batch_size, self.maxlen, self.k = batch_size, maxlen, k
        self.vocab_size, self.cls_id, self.sep_id, self.mask_id = vocab_size, cls_id, sep_id, mask_id
        self.first_normal_id, self.seed, self.rate = first_normal_id, seed, rate
        self.mask_prob, self.random_prob = mask_prob, random_prob
        self._perm = (-1, None)

    def _row_index(self, example: int) -> int:
        n = len(self.rows)
        epoch = example // n
        if self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(n))
        return int(self._perm[1][example % n])

    def batch(self, step: int):
        rng = np.random.default_rng([self.seed, 1, step])
        b, length, k = self.batch_size, self.maxlen, self.k
        token_ids = np.zeros((b, length), "int32")
        positions = np.zeros((b, k), "int32")
        labels = np.zeros((b, k), "int32")
        for j in range(b):
            index = self._row_index(step * b + j)
            row, word_of = self.rows[index], self.words[index]
            n = len(row)
            token_ids[j, 0], token_ids[j, 1:n + 1], token_ids[j, n + 1] = self.cls_id, row, self.sep_id
            starts = np.flatnonzero(np.r_[True, word_of[1:] != word_of[:-1]])
            sizes = np.diff(np.r_[starts, n])
            chosen, budget = [], min(k, max(1, round(self.rate * n)))
            for w in rng.permutation(len(starts)):
                if sizes[w] > budget - sum(sizes[c] for c in chosen) and chosen:
                    continue
                chosen.append(w)
                if sum(sizes[c] for c in chosen) >= budget:
                    break
            where = np.sort(np.concatenate([np.arange(starts[w], starts[w] + sizes[w]) for w in chosen]))[:k] + 1
            m = len(where)
            positions[j, :m], labels[j, :m] = where, token_ids[j, where]
            draw = rng.random(m)
            replace = token_ids[j, where].copy()
            replace[draw < self.mask_prob] = self.mask_id
            random = (draw >= self.mask_prob) & (draw < self.mask_prob + self.random_prob)
            replace[random] = rng.integers(self.first_normal_id, self.vocab_size, int(random.sum()))
            token_ids[j, where] = replace
        return token_ids, np.zeros_like(token_ids), positions, labels

    def dataset(self, first_step: int):
        """An endless `tf.data.Dataset` of `(x,)` batches from `first_step` on."""
        import tensorflow as tf

        def generate():
            step = first_step
            while True:
                yield (self.batch(step),)
                step += 1

        b, length, k = self.batch_size, self.maxlen, self.k
        spec = (tuple(tf.TensorSpec(s, tf.int32) for s in ((b, length), (b, length), (b, k), (b, k))),)
        return tf.data.Dataset.from_generator(generate, output_signature=spec).prefetch(4)
