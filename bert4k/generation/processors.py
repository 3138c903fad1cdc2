"""Next-token score processing on logits `[rows, vocab]`, in `keras.ops` so the same code runs eagerly (beam search,
Python loop) and inside the compiled decoding loop. HF's order: repetition penalty and min length first, then
temperature → top-k → top-p; sampling is Gumbel-max with noise hashed from `(seed, step)`."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from keras import ops

NEG_INF = float("-inf")


def seen_matrix(context: list | None, rows: int, vocab: int) -> np.ndarray:
    """`[rows, vocab]` bool: which ids each row has already seen (its context ids)."""
    seen = np.zeros((rows, vocab), bool)
    for row, ids in enumerate(context or []):
        ids = np.asarray(ids, dtype=np.int64)
        seen[row, ids[(ids >= 0) & (ids < vocab)]] = True
    return seen


def allowed_matrix(allowed_ids: Sequence[Sequence[int]], rows: int, vocab: int, stops: np.ndarray) -> np.ndarray:
    """`[rows, vocab]` bool: the ids each input row may generate (its `allowed_ids` and every stop id)."""
    if len(allowed_ids) != rows:
        raise ValueError(f"generate: allowed_ids has {len(allowed_ids)} rows, the inputs have {rows}")
    allowed = np.zeros((rows, vocab), bool)
    for row, ids in enumerate(allowed_ids):
        ids = np.asarray(list(ids), dtype=np.int64)
        bad = ids[(ids < 0) | (ids >= vocab)]
        if bad.size:
            raise ValueError(f"generate: allowed_ids row {row} has id {int(bad[0])} outside the vocabulary 0..{vocab - 1}")
        allowed[row, ids] = True
    allowed[:, stops] = True
    return allowed


def restrict(logits, allowed):
    """`logits` with every id outside `allowed` (`[rows, vocab]` bool) at -inf."""
    return ops.where(allowed, ops.cast(logits, "float32"), NEG_INF)


def restricted_step(step: Callable) -> Callable:
    """A decoding step over `(state, allowed)` whose logits keep only the allowed ids."""
    def run(state, token_ids, index):
        inner, allowed = state
        logits, inner = step(inner, token_ids, index)
        return restrict(logits, allowed), (inner, allowed)
    return run


def restricted_reorder(reorder: Callable) -> Callable:
    """The adapter's state reordering, carrying the `allowed` rows along."""
    return lambda state, rows: (reorder(state[0], rows), ops.take(state[1], rows, axis=0))


def penalize(logits, step, seen, repetition_penalty: float, stop_mask, min_new_tokens: int):
    """CTRL repetition penalty on `seen` ids (positive logits ÷ p, negative × p) and no stop id (`stop_mask`,
    `[vocab]` bool) before `min_new_tokens` tokens."""
    scores = ops.cast(logits, "float32")
    if seen is not None and repetition_penalty != 1.0:
        penalized = ops.where(scores > 0, scores / repetition_penalty, scores * repetition_penalty)
        scores = ops.where(seen, penalized, scores)
    if stop_mask is not None and min_new_tokens > 0:
        ban = ops.logical_and(ops.expand_dims(stop_mask, 0), step < min_new_tokens)
        scores = ops.where(ban, NEG_INF, scores)
    return scores


def ban_repeated_ngrams(scores, history, t, n: int):
    """`scores` with -inf on every id that would repeat an `n`-gram of the generated tokens: `history`
    `[rows, width]` holds them in columns `0 … t-1`; an id is banned when the last `n - 1` tokens followed by it
    already occur there (`n` = 1: every generated id)."""
    rows, vocab, width = ops.shape(history)[0], scores.shape[-1], history.shape[1]
    starts = width - n + 1
    if n < 1 or starts < 1:
        return scores
    history = ops.cast(history, "int32")
    positions = ops.arange(starts, dtype="int32")
    match = ops.broadcast_to(positions[None, :] + n - 1 < t, (rows, starts))  # the n-gram at j is complete
    for k in range(n - 1):
        last = ops.take(history, ops.maximum(t - n + 1 + k, 0)[None], axis=1)  # [rows, 1]
        match = ops.logical_and(match, history[:, k:k + starts] == last)
    following = ops.clip(history[:, n - 1:], 0, vocab - 1)  # unfinished columns hold the pad id
    row_ids = ops.broadcast_to(ops.arange(rows, dtype="int32")[:, None], (rows, starts))
    indices = ops.reshape(ops.stack([row_ids, following], axis=-1), (-1, 2))
    hits = ops.scatter(indices, ops.reshape(ops.cast(match, "float32"), (-1,)), (rows, vocab))
    return ops.where(hits > 0, NEG_INF, scores)


def warp(scores, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """Temperature, then keep the `top_k` best (ties kept), then the smallest best set with mass ≥ `top_p`."""
    if temperature <= 0:
        raise ValueError(f"generate: temperature must be > 0, got {temperature}")
    scores = ops.cast(scores, "float32")
    if temperature != 1.0:
        scores = scores / temperature
    vocab = scores.shape[-1]
    if top_k is not None and 0 < top_k < vocab:
        kth = ops.top_k(scores, top_k, sorted=True)[0][:, -1:]
        scores = ops.where(scores < kth, NEG_INF, scores)
    if top_p is not None and top_p < 1.0:
        ordered = ops.top_k(scores, vocab, sorted=True)[0]
        probs = ops.softmax(ordered, axis=-1)
        before = ops.cumsum(probs, axis=-1) - probs  # mass of the better tokens
        keep = ops.sum(ops.cast(before < top_p, "int32"), axis=-1, keepdims=True)
        threshold = ops.take_along_axis(ordered, ops.maximum(keep, 1) - 1, axis=-1)
        scores = ops.where(scores < threshold, NEG_INF, scores)
    return scores


_MULTIPLIERS = (0x7FEB352D, 0x846CA68B)  # "lowbias32" integer hash (Wellons)
_GOLDEN = 0x9E3779B9


def _int32(value: int) -> int:
    """A 32-bit pattern as the signed int32 with the same bits."""
    return value - (1 << 32) if value >= 1 << 31 else value


def _shift_right(x, bits: int):
    """Logical right shift of int32 bit patterns (`right_shift` is arithmetic on signed ints)."""
    return ops.bitwise_and(ops.right_shift(x, bits), (1 << (32 - bits)) - 1)


def _hash(x):
    """lowbias32 on int32 tensors (wrapping multiplication: the same bits as the uint32 hash on every backend)."""
    for m in _MULTIPLIERS:
        x = ops.bitwise_xor(x, _shift_right(x, 16)) * ops.convert_to_tensor(_int32(m), "int32")
    return ops.bitwise_xor(x, _shift_right(x, 16))


def uniform_noise(shape, seed, step):
    """U(0, 1) noise of `shape` `[rows, vocab]` as a pure function of `(seed, step)`: an integer hash of
    (seed, step, position) in `keras.ops`, bit-identical eagerly, in a compiled loop and under XLA, on every backend
    (TF's stateless random ops give other numbers under XLA)."""
    seed = ops.cast(seed, "int32")
    step = ops.cast(step, "int32")
    key = _hash(ops.bitwise_xor(seed, _hash(step + ops.convert_to_tensor(_int32(_GOLDEN), "int32"))))
    rows, vocab = shape[0], shape[1]
    counter = ops.reshape(ops.arange(rows * vocab, dtype="int32"), (rows, vocab))
    bits = _hash(ops.bitwise_xor(_hash(counter + key), key))
    return (ops.cast(_shift_right(bits, 8), "float32") + 0.5) / float(1 << 24)


def sample(scores, seed, step):
    """One id per row drawn from softmax(scores) (Gumbel-max with noise from `(seed, step)`)."""
    gumbel = -ops.log(-ops.log(uniform_noise(ops.shape(scores), seed, step)))
    return ops.cast(ops.argmax(ops.add(scores, gumbel), axis=-1), "int32")


