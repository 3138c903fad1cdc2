"""Next-token score processing on logits `[rows, vocab]`, in `keras.ops` so the same code runs eagerly (beam search,
Python loop) and inside the compiled decoding loop. HF's order: repetition penalty and min length first, then
temperature → top-k → top-p; sampling is Gumbel-max with noise hashed from `(seed, step)`."""
from __future__ import annotations

import keras
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


def _hash_np(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        for m in _MULTIPLIERS:
            x = (x ^ (x >> np.uint32(16))) * np.uint32(m)
        return x ^ (x >> np.uint32(16))


def _hash_tf(x):
    import tensorflow as tf

    for m in _MULTIPLIERS:
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16)) * tf.constant(m, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def uniform_noise(shape, seed, step):
    """U(0, 1) noise of `shape` `[rows, vocab]` as a pure function of `(seed, step)`: an integer hash of
    (seed, step, position), bit-identical eagerly, in a compiled loop, under XLA and in numpy (TF's stateless
    random ops give other numbers under XLA)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        key = _hash_tf(tf.cast(seed, tf.uint32) ^ _hash_tf(tf.cast(step, tf.uint32) + tf.constant(_GOLDEN, tf.uint32)))
        counter = tf.reshape(tf.range(tf.reduce_prod(shape)), shape)
        bits = _hash_tf(_hash_tf(tf.cast(counter, tf.uint32) + key) ^ key)
        return (tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) + 0.5) / float(1 << 24)
    key = _hash_np(np.uint32(seed) ^ _hash_np(np.uint32(step) + np.uint32(_GOLDEN)))
    counter = np.arange(int(np.prod(shape)), dtype=np.uint32).reshape(shape)
    bits = _hash_np(_hash_np(counter + key) ^ key)
    return (((bits >> np.uint32(8)).astype(np.float32) + 0.5) / float(1 << 24)).astype(np.float32)


def sample(scores, seed, step):
    """One id per row drawn from softmax(scores) (Gumbel-max with noise from `(seed, step)`)."""
    gumbel = -ops.log(-ops.log(uniform_noise(ops.shape(scores), seed, step)))
    return ops.cast(ops.argmax(scores + gumbel, axis=-1), "int32")


def choose(scores, method: str, seed, step, temperature: float, top_k: int | None, top_p: float | None):
    """The next ids: argmax for `greedy`, a warped sample for `sample`."""
    if method == "greedy":
        return ops.cast(ops.argmax(scores, axis=-1), "int32")
    return sample(warp(scores, temperature, top_k, top_p), seed, step)
