"""`generate`: greedy, beam search and sampling for every model with a decoding adapter.

Greedy and sampling run the whole decoding loop as one `tf.while_loop` inside one `tf.function` (token choice,
penalties, stop ids and the model step all in the graph, the step index a loop tensor; XLA-compiled for float32):
GPT-2-small, 1 thread, b4: 78 ms per new token vs 88 for a Python loop over the same compiled step (b1: 51 vs 59).
Beam search (numpy bookkeeping), a `streamer`, uncompiled adapters and other backends use the Python loop over the
same compiled step and the same `processors`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops

from bert4k.generation import processors
from bert4k.generation.adapters import DecodingAdapter, adapter_for
from bert4k.generation.beam import BeamState

METHODS = ("greedy", "sample", "beam")


def default_jit_compile(adapter) -> bool:
    """XLA for float32 models, not for bfloat16 ones. Measured on the 2-core CPUs (GPT-2-small, 1 thread, ms per new
    token, fused loop): float32 b1 51 with XLA vs 74 without, b4 78 vs 93; bfloat16 b1 301 with XLA vs 67 without
    (XLA's CPU bf16 matmuls are slow). See bench/bench_generation.py."""
    return getattr(adapter, "compute_dtype", "float32") == "float32"


def _tf():
    import tensorflow as tf

    return tf


def _compile(adapter, key, fn: Callable, jit_compile: bool) -> Callable:
    """`fn` wrapped once per adapter and `key` in `tf.function`."""
    cache = adapter.__dict__.setdefault("_bert4k_compiled", {})
    if key not in cache:
        cache[key] = _tf().function(fn, jit_compile=bool(jit_compile))
    return cache[key]


def _step_fn(adapter, jit_compile: bool) -> Callable:
    """The adapter's step with in-place cache writes where the engine owns the caches and XLA does not compile."""
    if getattr(adapter, "in_place_writes", False) and not jit_compile:
        return lambda state, token_ids, index: adapter.step(state, token_ids, index, in_place=True)
    return adapter.step


def _reorder_fn(adapter) -> Callable:
    return getattr(adapter, "reorder", None) or (lambda state, rows: DecodingAdapter.reorder(adapter, state, rows))


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
    `method`: `greedy`; `sample` (`temperature`, `top_k`, `top_p`; reproducible with `seed`); `beam` (`num_beams`,
    scores `sum log p / length ** length_penalty`). `repetition_penalty` (CTRL, HF semantics) and `min_new_tokens`
    (stop ids are banned before it) apply to all methods.
    A row stops at a stop id (kept in the output; `min_stops` counts how many stop ids end a row, bert4keras'
    `min_ends`); later positions hold `pad_id` (default: the adapter's). The output is as wide as the longest row.
    `num_samples`: rows per input (n samples; the n best beams; greedy repeats). Rows of input i are
    `i*n … i*n+n-1`. `streamer(ids)` is called after each step with the new ids of every row (pad for stopped
    rows); for beam search it is called per position once the search is done. `jit_compile`: XLA for the loop / step
    (default: `default_jit_compile(adapter)`).
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
    jit = jit_compile if jit_compile is not None else getattr(adapter, "jit_compile", None)
    jit = default_jit_compile(adapter) if jit is None else jit
    compiled = getattr(adapter, "compile", True) and keras.backend.backend() == "tensorflow"
    seed = int(np.random.randint(2 ** 31 - 1)) if seed is None else int(seed)

    logits, state = adapter.start(inputs, max_new_tokens)
    rows, vocab = ops.shape(logits)
    seen = None
    if repetition_penalty != 1.0:
        context = adapter.context_ids(inputs) if hasattr(adapter, "context_ids") else None
        seen = processors.seen_matrix(context, rows, vocab)
    copies = num_beams if method == "beam" else num_samples
    reorder = _compile(adapter, "reorder", _reorder_fn(adapter), False) if compiled else _reorder_fn(adapter)
    if copies > 1:
        expand = np.repeat(np.arange(rows), copies).astype("int32")
        state, logits = reorder(state, expand), ops.take(logits, expand, axis=0)
        seen = seen[expand] if seen is not None else None
    stop_mask = np.isin(np.arange(vocab), stops) if stops.size else None
    options = dict(stops=stops, stop_mask=stop_mask, min_new_tokens=min_new_tokens,
                   repetition_penalty=repetition_penalty, min_stops=min_stops, pad=pad)
    step = _compile(adapter, ("step", jit), _step_fn(adapter, jit), jit) if compiled else adapter.step

    def index(t):
        return _tf().constant(t, dtype="int32") if compiled else t

    if method == "beam":
        out = _beam(step, reorder, index, logits, state, seen, rows, num_beams, num_samples, max_new_tokens,
                    length_penalty, **options)
        if streamer is not None:
            for column in out.T:
                streamer(column)
        return out
    sampling = dict(method=method, temperature=temperature, top_k=top_k, top_p=top_p)
    if compiled and streamer is None:
        return _fused(adapter, jit, logits, state, seen, seed, max_new_tokens, sampling, options)
    return _sequential(step, index, logits, state, seen, seed, max_new_tokens, sampling, streamer, **options)


def _sequential(step, index, logits, state, seen, seed, max_new_tokens, sampling, streamer, *, stops, stop_mask,
                min_new_tokens, repetition_penalty, min_stops, pad) -> np.ndarray:
    """Greedy / sampling, Python loop: one token per row per step."""
    rows = ops.shape(logits)[0]
    out = np.full((rows, max_new_tokens), pad, dtype=np.int64)
    done = np.zeros(rows, bool)
    stop_count = np.zeros(rows, np.int64)
    for t in range(max_new_tokens):
        scores = processors.penalize(logits, t, seen, repetition_penalty, stop_mask, min_new_tokens)
        tokens = np.where(done, pad, ops.convert_to_numpy(processors.choose(scores, seed=seed, step=t, **sampling)))
        out[:, t] = tokens
        if seen is not None:
            seen[np.arange(rows)[~done], tokens[~done]] = True
        if streamer is not None:
            streamer(tokens.copy())
        stop_count += np.isin(tokens, stops) & ~done
        done |= stop_count >= min_stops
        if done.all() or t + 1 == max_new_tokens:
            return out[:, :t + 1]
        logits, state = step(state, tokens[:, None].astype("int32"), index(t))
    return out


def _fused(adapter, jit, logits, state, seen, seed, max_new_tokens, sampling, options) -> np.ndarray:
    """Greedy / sampling as one compiled `tf.while_loop`; returns the tokens of the steps it ran."""
    tf = _tf()
    key = ("loop", jit, seen is not None, tuple(sorted(sampling.items())),
           tuple(options["stops"].tolist()), options["min_new_tokens"], options["repetition_penalty"],
           options["min_stops"], options["pad"])
    loop = _compile(adapter, key, _loop_fn(adapter, jit, sampling, **options), jit)
    width = -(-max_new_tokens // 32) * 32  # buffer bucket: nearby lengths share one trace
    args = [state, tf.convert_to_tensor(logits), tf.constant(seed, tf.int32), tf.constant(max_new_tokens, tf.int32),
            tf.zeros((width,), tf.int32)]
    if seen is not None:
        args.append(tf.convert_to_tensor(seen))
    tokens, steps = loop(*args)
    return tokens.numpy()[:, :int(steps)].astype(np.int64)


def _loop_fn(adapter, jit, sampling, *, stops, stop_mask, min_new_tokens, repetition_penalty,
             min_stops, pad) -> Callable:
    tf = _tf()
    stop_ids = tf.constant(stops.astype("int32")) if stops.size else None
    stop_mask = tf.constant(stop_mask) if stop_mask is not None else None
    step = _step_fn(adapter, jit)

    def loop(state, logits, seed, max_new, buffer, seen=None):
        rows, vocab = tf.shape(logits)[0], logits.shape[-1]
        out = tf.fill([tf.shape(buffer)[0], rows], tf.constant(pad, tf.int32))
        done = tf.zeros([rows], tf.bool)
        count = tf.zeros([rows], tf.int32)

        def body(t, logits, state, seen, out, done, count):
            scores = processors.penalize(logits, t, seen, repetition_penalty, stop_mask, min_new_tokens)
            tokens = tf.where(done, pad, processors.choose(scores, seed=seed, step=t, **sampling))
            out = tf.tensor_scatter_nd_update(out, [[t]], tokens[None])
            if seen is not None:
                seen = tf.logical_or(seen, tf.logical_and(tf.one_hot(tokens, vocab, True, False), ~done[:, None]))
            if stop_ids is not None:
                hit = tf.reduce_any(tokens[:, None] == stop_ids[None, :], axis=1)
                count = count + tf.cast(tf.logical_and(hit, ~done), tf.int32)
                done = tf.logical_or(done, count >= min_stops)
            more = tf.logical_and(t + 1 < max_new, tf.logical_not(tf.reduce_all(done)))
            logits, state = tf.cond(more, lambda: step(state, tokens[:, None], t), lambda: (logits, state))
            return t + 1, logits, state, seen, out, done, count

        def cond(t, logits, state, seen, out, done, count):
            return tf.logical_and(t < max_new, tf.logical_not(tf.reduce_all(done)))

        if seen is None:  # keep the loop variables free of None
            def body_no_seen(t, logits, state, out, done, count):
                t, logits, state, _, out, done, count = body(t, logits, state, None, out, done, count)
                return t, logits, state, out, done, count
            t, _, _, out, _, _ = tf.while_loop(
                lambda t, logits, state, out, done, count: cond(t, logits, state, None, out, done, count),
                body_no_seen, (tf.constant(0), logits, state, out, done, count))
        else:
            t, _, _, _, out, _, _ = tf.while_loop(cond, body, (tf.constant(0), logits, state, seen, out, done, count))
        return tf.transpose(out), t

    return loop


def _beam(step, reorder, index, logits, state, seen, batch, num_beams, num_return, max_new_tokens, length_penalty,
          *, stops, stop_mask, min_new_tokens, repetition_penalty, min_stops, pad) -> np.ndarray:
    beams = BeamState(batch, num_beams, num_return, max_new_tokens, length_penalty, stops, min_stops)
    for t in range(max_new_tokens):
        scores = processors.penalize(logits, t, seen, repetition_penalty, stop_mask, min_new_tokens)
        source, tokens = beams.advance(ops.convert_to_numpy(ops.log_softmax(scores, axis=-1)), t)
        if beams.done.all():
            break
        state = reorder(state, source.astype("int32"))
        if seen is not None:
            seen = seen[source]
            seen[np.arange(len(tokens)), tokens] = True
        logits, state = step(state, tokens[:, None].astype("int32"), index(t))
    return beams.results(pad)
