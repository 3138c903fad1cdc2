"""Model-input helpers: batch padding, MLM masking (80/10/10, whole-word for Chinese), tf.data.

Padding and truncation of single sequences live in `bert4k.padding` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bert4k.padding import sequence_padding, truncate_sequences

__all__ = [
    "chinese_word_spans",
    "mlm_dataset",
    "mlm_mask",
    "pad_batch",
    "sequence_padding",
    "truncate_sequences",
]


def pad_batch(
    *columns: Sequence[Sequence[int]], length: int | None = None, value: Any = 0, mode: str = "post"
) -> tuple[np.ndarray, ...]:
    """Pad aligned columns (e.g. token ids and segment ids) to one common length.

    `length` defaults to the longest sequence in any column; longer sequences are cut.
    """
    if not columns or any(len(c) != len(columns[0]) for c in columns):
        raise ValueError(f"need columns with equally many sequences, got {[len(c) for c in columns]}")
    if length is None:
        length = max(len(s) for column in columns for s in column)
    return tuple(sequence_padding(column, length, value, mode=mode) for column in columns)


def mlm_mask(
    token_ids: Sequence[int],
    vocab_size: int,
    mask_id: int,
    special_ids: Iterable[int],
    rate: float = 0.15,
    rng: np.random.Generator | int | None = None,
    word_spans: Sequence[tuple[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of one sequence: returns `(input_ids, labels)` as int32 arrays.

    Each unit (a token, or a whole `word_spans` range `[start, end)` of token positions) is
    selected with probability `rate`. Every selected token independently becomes `mask_id` (80%),
    a random non-special token (10%) or stays itself (10%). `labels` holds the original id at
    selected positions and 0 (ignore) elsewhere. Special ids and id 0 (padding) are never selected.
    """
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.ndim != 1:
        raise ValueError(f"token_ids must be one sequence, got shape {ids.shape}")
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id {mask_id} is outside the vocabulary of size {vocab_size}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)][0]
        raise ValueError(f"token id {bad} is outside the vocabulary of size {vocab_size}")
    forbidden = np.unique(np.array([0, mask_id, *special_ids], dtype=np.int64))
    if np.count_nonzero(forbidden < vocab_size) >= vocab_size:
        raise ValueError("every vocabulary id is special: no random replacement is possible")
    rng = np.random.default_rng(rng)

    # Positions of one word share the draw made at the word's first position.
    unit_start = np.arange(len(ids))
    for start, end in _checked_spans(word_spans or (), len(ids)):
        unit_start[start:end] = start
    selected = rng.random(len(ids))[unit_start] < rate
    selected &= ~np.isin(ids, forbidden)

    action = rng.random(len(ids))
    inputs = ids.copy()
    inputs[selected & (action < 0.8)] = mask_id
    replace = selected & (action >= 0.8) & (action < 0.9)
    inputs[replace] = _random_tokens(rng, int(replace.sum()), vocab_size, forbidden)
    labels = np.where(selected, ids, 0)
    return inputs.astype(np.int32), labels.astype(np.int32)


def _checked_spans(spans: Iterable[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    spans = sorted((int(s), int(e)) for s, e in spans)
    previous_end = 0
    for start, end in spans:
        if not 0 <= start < end <= length:
            raise ValueError(f"word span ({start}, {end}) is empty or outside 0..{length}")
        if start < previous_end:
            raise ValueError(f"word span ({start}, {end}) overlaps the previous one")
        previous_end = end
    return spans


def _random_tokens(rng: np.random.Generator, n: int, vocab_size: int, forbidden: np.ndarray):
    """n ids drawn uniformly from the vocabulary without the forbidden ones."""
    tokens = rng.integers(0, vocab_size, n)
    redraw = np.isin(tokens, forbidden)
    while redraw.any():
        tokens[redraw] = rng.integers(0, vocab_size, int(redraw.sum()))
        redraw = np.isin(tokens, forbidden)
    return tokens


def chinese_word_spans(
    text: str, tokens: Sequence[str], mapping: Sequence[Sequence[int]] | None = None
) -> list[tuple[int, int]]:
    """Token ranges `[start, end)` that form one jieba word, for whole-word masking.

    `mapping[i]` lists the character positions in `text` that token i covers (what
    `Tokenizer.rematch(text, tokens)` returns; empty for special tokens). Without it, tokens are
    found in `text` left to right, case-insensitively, after dropping a leading "##"; bracketed
    tokens such as "[CLS]" and tokens that cannot be found cover nothing. Tokens that straddle
    a word boundary join the words on both sides into one group. Only groups of two or more
    tokens are returned; every other token is a word of its own.
    """
    if mapping is None:
        mapping = _find_tokens(text, tokens)
    elif len(mapping) != len(tokens):
        raise ValueError(f"mapping has {len(mapping)} entries for {len(tokens)} tokens")
    import jieba

    word_of = np.empty(len(text), dtype=np.int64)
    for w, (_, start, end) in enumerate(jieba.tokenize(text)):
        word_of[start:end] = w

    # A group grows while the next token starts in a word the group already touches; a token
    # covering nothing (a special) stands alone. The trailing [] closes the last group.
    spans, start, last_word = [], 0, -1
    for i, chars in enumerate([*mapping, []]):
        words = word_of[list(chars)]
        if words.size and words.min() <= last_word:
            last_word = max(last_word, int(words.max()))
            continue
        if i - start >= 2:
            spans.append((start, i))
        start, last_word = i, int(words.max()) if words.size else -1
    return spans


def _find_tokens(text: str, tokens: Sequence[str]) -> list[list[int]]:
    lowered, cursor, mapping = text.lower(), 0, []
    for token in tokens:
        piece = token.removeprefix("##")
        found = -1
        if piece and not (piece.startswith("[") and piece.endswith("]") and len(piece) > 2):
            found = lowered.find(piece.lower(), cursor)
        if found < 0:
            mapping.append([])
            continue
        mapping.append(list(range(found, found + len(piece))))
        cursor = found + len(piece)
    return mapping


def mlm_dataset(
    texts: Sequence[str],
    tokenizer: Any,
    maxlen: int,
    batch_size: int,
    seed: int | None = 0,
    rate: float = 0.15,
    whole_word: bool = True,
    vocab_size: int | None = None,
    mask_id: int | None = None,
    special_ids: Iterable[int] | None = None,
):
    """A `tf.data.Dataset` of `((token_ids, segment_ids), labels)` MLM batches, padded with 0.

    Each text is tokenized with `tokenizer.tokenize(text, maxlen=maxlen)` (bert4keras' API:
    adds [CLS]/[SEP] and truncates) and masked by `mlm_mask`, whole words grouped by
    `chinese_word_spans` (with `tokenizer.rematch` when the tokenizer has it). Masks are drawn
    anew on every pass over the data (dynamic masking), from one generator seeded by `seed`.
    `vocab_size`, `mask_id` and `special_ids` default to the tokenizer's vocabulary size and the
    ids of [MASK] and [PAD], [CLS], [SEP], [MASK]. Empty texts are skipped.
    """
    import tensorflow as tf

    if vocab_size is None:
        vocab_size = _vocab_size(tokenizer)
    if mask_id is None:
        mask_id = tokenizer.token_to_id("[MASK]")
    if special_ids is None:
        special_ids = [tokenizer.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")]
    special_ids = list(special_ids)
    rng = np.random.default_rng(seed)

    def examples():
        for text in texts:
            if not text.strip():
                continue
            tokens = tokenizer.tokenize(text, maxlen=maxlen)
            spans = None
            if whole_word:
                mapping = tokenizer.rematch(text, tokens) if hasattr(tokenizer, "rematch") else None
                spans = chinese_word_spans(text, tokens, mapping)
            inputs, labels = mlm_mask(
                tokenizer.tokens_to_ids(tokens), vocab_size, mask_id, special_ids, rate, rng, spans
            )
            yield (inputs, np.zeros_like(inputs)), labels

    ids = tf.TensorSpec([None], tf.int32)
    dataset = tf.data.Dataset.from_generator(examples, output_signature=((ids, ids), ids))
    return dataset.padded_batch(batch_size)


def _vocab_size(tokenizer: Any) -> int:
    for attr in ("vocab_size", "_vocab_size"):
        size = getattr(tokenizer, attr, None)
        if isinstance(size, int):
            return size
    if hasattr(tokenizer, "__len__"):
        return len(tokenizer)
    raise TypeError("cannot read the vocabulary size from the tokenizer: pass vocab_size=")
