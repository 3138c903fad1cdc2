"""`generate`: greedy, beam search and sampling for every model with a decoding adapter, over one compiled step.

The loop is Python over a compiled step (`tf.function` of `adapter.step`, fixed shapes, the step index passed as a
tensor, so it traces once per batch/cache shape); token choice runs in numpy on the step's float32 logits.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

from bert4k.generation import processors
from bert4k.generation.adapters import DecodingAdapter, adapter_for
from bert4k.generation.beam import BeamState

METHODS = ("greedy", "sample", "beam")
# XLA on this CPU: measured by bench/bench_generation.py (see the README's generation numbers).
DEFAULT_JIT_COMPILE = False


def _compiled(adapter, name: str, jit_compile: bool) -> Callable:
    """`adapter.<name>` wrapped once in `tf.function` (TensorFlow backend, compilable adapters only)."""
    fn = getattr(adapter, name, None)
    if fn is None:  # duck-typed adapter without reorder
        fn = lambda state, rows: DecodingAdapter.reorder(adapter, state, rows)
    if not getattr(adapter, "compile", True) or keras.backend.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    cache = adapter.__dict__.setdefault("_bert4k_compiled", {})
    key = (name, jit_compile)
    if key not in cache:
        cache[key] = tf.function(fn, jit_compile=jit_compile if name == "step" else False)
    return cache[key]


def _index(t: int, compiled: bool):
    if not compiled:
        return t
    import tensorflow as tf

    return tf.constant(t, dtype=tf.int32)


def _numpy(x) -> np.ndarray:
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float32)


def generate(model, inputs, max_new_tokens: int, *, method: str = "greedy", num_beams: int = 4,
             length_penalty: float = 1.0, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, repetition_penalty: float = 1.0, min_new_tokens: int = 0,
             stop_ids: int | Sequence[int] | None = None, num_samples: int = 1, seed: int | None = None,
             streamer: Callable[[np.ndarray], None] | None = None, pad_id: int | None = None,
             min_stops: int = 1, jit_compile: bool | None = None) -> np.ndarray:
    """Generate up to `max_new_tokens` tokens per input row; returns int64 `[rows * num_samples, new_tokens]`.

    `model`: any model with a registered decoding adapter (a `Transformer` with application `lm`/`unilm`, T5, ...)
    or an adapter itself. `inputs`: what the adapter takes (for a `Transformer`: token ids, a list of rows of any
    lengths, or `(token_ids, segment_ids[, cond])`).
    `method`: `greedy`; `sample` (`temperature`, `top_k`, `top_p`, reproducible with `seed`); `beam` (`num_beams`,
    scores `sum log p / length ** length_penalty`). `repetition_penalty` (CTRL, HF semantics) and `min_new_tokens`
    (stop ids are banned before it) apply to all methods.
    A row stops at a stop id (kept in the output; `min_stops` counts how many stop ids end a row, bert4keras'
    `min_ends`); later positions hold `pad_id` (default: the adapter's). The output is as wide as the longest row.
    `num_samples`: rows per input (n samples; the n best beams; greedy repeats). Rows of input i are
    `i*n … i*n+n-1`. `streamer(ids)` is called after each step with the new ids of every row (pad for stopped
    rows); for beam search it is called per position once the search is done.
    """
    adapter = adapter_for(model)
    if method not in METHODS:
        raise ValueError(f"generate: unknown method {method!r}; expected one of {METHODS}")
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be ≥ 1, got {max_new_tokens}")
    if num_samples < 1 or (method == "beam" and not 1 <= num_samples <= num_beams):
        raise ValueError(f"generate: num_samples must be in 1..num_beams for beam search, got {num_samples}")
    stops = np.asarray([stop_ids] if isinstance(stop_ids, (int, np.integer)) else list(stop_ids or []), np.int64)
    pad = getattr(adapter, "pad_id", 0) if pad_id is None else pad_id
    jit = next(v for v in (jit_compile, getattr(adapter, "jit_compile", None), DEFAULT_JIT_COMPILE) if v is not None)
    compiled = getattr(adapter, "compile", True) and keras.backend.backend() == "tensorflow"
    step = _compiled(adapter, "step", jit)
    reorder = _compiled(adapter, "reorder", False)

    logits, state = adapter.start(inputs, max_new_tokens)
    logits = _numpy(logits)
    rows, vocab = logits.shape
    context = adapter.context_ids(inputs) if repetition_penalty != 1.0 and hasattr(adapter, "context_ids") else None
    seen = processors.seen_matrix(context, rows, vocab) if repetition_penalty != 1.0 else None
    copies = num_beams if method == "beam" else num_samples
    if copies > 1:
        expand = np.repeat(np.arange(rows), copies)
        state, logits = reorder(state, expand.astype("int32")), logits[expand]
        seen = seen[expand] if seen is not None else None
    options = dict(stops=stops, min_new_tokens=min_new_tokens, repetition_penalty=repetition_penalty,
                   min_stops=min_stops, pad=pad, compiled=compiled)
    if method == "beam":
        out = _beam(step, reorder, logits, state, seen, rows, num_beams, num_samples, max_new_tokens,
                    length_penalty, **options)
        if streamer is not None:
            for column in out.T:
                streamer(column)
        return out
    rng = np.random.default_rng(seed)

    def choose(scores):
        if method == "greedy":
            return np.argmax(scores, axis=-1)
        return processors.sample(processors.warp(scores, temperature, top_k, top_p), rng)

    return _sequential(step, logits, state, seen, max_new_tokens, choose, streamer, **options)


def _sequential(step, logits, state, seen, max_new_tokens, choose, streamer, *, stops, min_new_tokens,
                repetition_penalty, min_stops, pad, compiled) -> np.ndarray:
    """Greedy / sampling: one token per row per step."""
    rows = logits.shape[0]
    out = np.full((rows, max_new_tokens), pad, dtype=np.int64)
    done = np.zeros(rows, bool)
    stop_count = np.zeros(rows, np.int64)
    for t in range(max_new_tokens):
        scores = processors.penalize(logits, t, seen, repetition_penalty, stops, min_new_tokens)
        tokens = np.where(done, pad, choose(scores))
        out[:, t] = tokens
        if seen is not None:
            seen[np.arange(rows)[~done], tokens[~done]] = True
        if streamer is not None:
            streamer(tokens.copy())
        stop_count += np.isin(tokens, stops) & ~done
        done |= stop_count >= min_stops
        if done.all() or t + 1 == max_new_tokens:
            return out[:, :t + 1]
        logits, state = step(state, tokens[:, None].astype("int32"), _index(t, compiled))
        logits = _numpy(logits)
    return out


def _beam(step, reorder, logits, state, seen, batch, num_beams, num_return, max_new_tokens, length_penalty, *,
          stops, min_new_tokens, repetition_penalty, min_stops, pad, compiled) -> np.ndarray:
    beams = BeamState(batch, num_beams, num_return, max_new_tokens, length_penalty, stops, min_stops)
    for t in range(max_new_tokens):
        scores = processors.penalize(logits, t, seen, repetition_penalty, stops, min_new_tokens)
        source, tokens = beams.advance(processors.log_softmax(scores), t)
        if beams.done.all():
            break
        state = reorder(state, source.astype("int32"))
        if seen is not None:
            seen = seen[source]
            seen[np.arange(len(tokens)), tokens] = True
        logits, state = step(state, tokens[:, None].astype("int32"), _index(t, compiled))
        logits = _numpy(logits)
    return beams.results(pad)
