"""`generate`: greedy, sampling and beam search for every model with a decoding adapter, on every Keras backend.

The adapter runs the prompt once (`start`, one prefill pass) and then one token per row per `step`. The engine
runs the whole decoding loop as one `keras.ops.while_loop` (token choice, penalties, stop ids, beam reordering and
the model step in the graph), compiled the backend's way (`bert4k.generation.compile`): `tf.function` (XLA for
float32), `jax.jit` (XLA updates the loop-carried caches in place), eager PyTorch. A `streamer` needs the tokens
on the host after every step: then a Python loop drives the same compiled step.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from keras import ops

from bert4k.generation import beam, processors
from bert4k.generation.adapters import DecodingAdapter, adapter_for
from bert4k.generation.compile import backend, compiled, default_in_place
from bert4k.generation.samplers import BeamSearch, Sampler, get_sampler

BUCKET = 32  # output buffers are rounded up to this width: nearby lengths share one compiled loop


def default_jit_compile(adapter) -> bool:
    """XLA for float32 models, not for bfloat16 ones on TensorFlow (XLA's CPU bf16 matmuls are slow; see
    bench/bench_generation.py); always on JAX."""
    if backend() == "jax":
        return True
    return backend() == "tensorflow" and getattr(adapter, "compute_dtype", "float32") == "float32"


def _reorder_fn(adapter) -> Callable:
    return getattr(adapter, "reorder", None) or (lambda state, rows: DecodingAdapter.reorder(adapter, state, rows))


def _step_fn(adapter, in_place: bool) -> Callable:
    """The adapter's step, writing its caches in place when the engine owns them and the backend allows it."""
    if in_place and getattr(adapter, "in_place_writes", False):
        return lambda state, token_ids, index: adapter.step(state, token_ids, index, in_place=True)
    return adapter.step


def _seed(seed: int | None) -> int:
    """An explicit seed; without one, fresh OS entropy (numpy's global random state is never read or advanced)."""
    return int(np.random.default_rng().integers(2 ** 31 - 1)) if seed is None else int(seed)


def generate(model, inputs, max_new_tokens: int, *, method: str | Sampler = "greedy", num_beams: int = 4,
             length_penalty: float = 1.0, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, repetition_penalty: float = 1.0, min_new_tokens: int = 0,
             stop_ids: int | Sequence[int] | None = None, num_samples: int = 1, seed: int | None = None,
             streamer: Callable[[np.ndarray], None] | None = None, pad_id: int | None = None,
             min_stops: int = 1, allowed_ids: Sequence[Sequence[int]] | None = None,
             no_repeat_ngram_size: int = 0, jit_compile: bool | None = None) -> np.ndarray:
    """Generate up to `max_new_tokens` tokens per input row; returns int64 `[rows * num_samples, new_tokens]`.

    `model`: any model with a registered decoding adapter (a `Transformer` with application `lm`/`unilm`, T5, ...)
    or an adapter itself. `inputs`: what the adapter takes (for a `Transformer`: token ids, a list of rows of any
    lengths, or `(token_ids, segment_ids[, cond])`).
    `method`: a `bert4k.generation.samplers.Sampler`, or a registered name built from the settings here: `greedy`;
    `sample` (`temperature`, `top_k`, `top_p`; reproducible with `seed`); `top_k`, `top_p` (sampling with that
    filter); `beam` (`num_beams`, scores `sum log p / length ** length_penalty`). `repetition_penalty` (CTRL, HF
    semantics), `min_new_tokens` (stop ids are banned before it) and `no_repeat_ngram_size` (no n-gram of the
    generated tokens twice; the prompt / source does not count) apply to all methods.
    A row stops at a stop id (kept in the output; `min_stops` counts how many stop ids end a row, bert4keras'
    `min_ends`); later positions hold `pad_id` (default: the adapter's). `allowed_ids`: per input row, the only ids
    it may generate (stop ids are always allowed), e.g. the source's ids for copy-only summaries. The output is as wide as the longest row.
    `num_samples`: rows per input (n samples; the n best beams; greedy repeats). Rows of input i are
    `i*n … i*n+n-1`. `streamer(ids)` is called after each step with the new ids of every row (pad for stopped
    rows); for beam search it is called per position once the search is done. `jit_compile`: compile the loop
    (TensorFlow: XLA; default `default_jit_compile(adapter)`).
    """
    adapter = adapter_for(model)
    sampler = get_sampler(method, temperature=temperature, top_k=top_k, top_p=top_p, num_beams=num_beams,
                          length_penalty=length_penalty)
    searching = isinstance(sampler, BeamSearch)
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be ≥ 1, got {max_new_tokens}")
    if no_repeat_ngram_size < 0:
        raise ValueError(f"generate: no_repeat_ngram_size must be ≥ 0 (0 = off), got {no_repeat_ngram_size}")
    if num_samples < 1 or (searching and not 1 <= num_samples <= sampler.num_beams):
        raise ValueError(f"generate: num_samples must be in 1..num_beams for beam search, got {num_samples}")
    stops = np.asarray([stop_ids] if isinstance(stop_ids, (int, np.integer)) else list(stop_ids or []), np.int64)
    pad = getattr(adapter, "pad_id", 0) if pad_id is None else pad_id
    jit = jit_compile if jit_compile is not None else getattr(adapter, "jit_compile", None)
    jit = default_jit_compile(adapter) if jit is None else bool(jit)
    compile_ = getattr(adapter, "compile", True)
    in_place = compile_ and default_in_place(jit)

    logits, state = adapter.start(inputs, max_new_tokens)
    rows, vocab = int(ops.shape(logits)[0]), int(ops.shape(logits)[1])
    step, reorder = _step_fn(adapter, in_place), _reorder_fn(adapter)
    restricted = allowed_ids is not None
    if restricted:
        allowed = ops.convert_to_tensor(processors.allowed_matrix(allowed_ids, rows, vocab, stops))
        logits, state = processors.restrict(logits, allowed), (state, allowed)
        step, reorder = processors.restricted_step(step), processors.restricted_reorder(reorder)
    use_seen = repetition_penalty != 1.0
    context = adapter.context_ids(inputs) if use_seen and hasattr(adapter, "context_ids") else None
    seen = processors.seen_matrix(context, rows, vocab) if use_seen else np.zeros((rows, 1), bool)
    copies = sampler.num_beams if searching else num_samples
    if copies > 1:
        expand = ops.convert_to_tensor(np.repeat(np.arange(rows), copies).astype("int32"))
        state, logits = reorder(state, expand), ops.take(logits, expand, axis=0)
        seen = seen[np.repeat(np.arange(rows), copies)]
    options = dict(stops=stops, stop_mask=np.isin(np.arange(vocab), stops) if stops.size else None,
                   min_new_tokens=min_new_tokens, repetition_penalty=repetition_penalty, min_stops=min_stops,
                   no_repeat_ngram_size=no_repeat_ngram_size)
    width = -(-max_new_tokens // BUCKET) * BUCKET
    max_new = ops.convert_to_tensor(max_new_tokens, "int32")
    seen = ops.convert_to_tensor(seen)

    def run(key, make):
        fn = compiled(adapter, key, make, jit) if compile_ else make()
        return fn(state, logits, seen, max_new)

    if searching:
        key = ("beam", rows, sampler.key(), num_samples, width, tuple(stops.tolist()), min_stops, min_new_tokens,
               repetition_penalty, use_seen, in_place, restricted, no_repeat_ngram_size)
        tokens, lengths = run(key, lambda: beam.beam_loop(
            step, reorder, batch=rows, beams=sampler.num_beams, num_return=num_samples, width=width,
            length_penalty=sampler.length_penalty, use_seen=use_seen,
            while_loop=ops.while_loop if compile_ else beam.python_while_loop, **options))
        out = beam.results(ops.convert_to_numpy(tokens), ops.convert_to_numpy(lengths), pad)
        if streamer is not None:
            for column in out.T:
                streamer(column)
        return out
    seed_tensor = ops.convert_to_tensor(_seed(seed), "int32")
    if streamer is not None or not compile_:
        return _stream(adapter, step, sampler, logits, state, seen, seed_tensor, max_new_tokens, streamer, pad,
                       use_seen, jit, compile_, (in_place, restricted), **options)
    key = ("loop", sampler.key(), width, tuple(stops.tolist()), min_stops, min_new_tokens, repetition_penalty,
           use_seen, pad, in_place, restricted, no_repeat_ngram_size)
    make = lambda: _sampling_loop(step, sampler, width, pad, use_seen, **options)
    fn = compiled(adapter, key, make, jit)
    tokens, steps = fn(state, logits, seen, max_new, seed_tensor)
    return ops.convert_to_numpy(tokens)[:, :int(ops.convert_to_numpy(steps))].astype(np.int64)


def _choice(sampler, pad, use_seen, *, stops, stop_mask, min_new_tokens, repetition_penalty, min_stops,
            no_repeat_ngram_size) -> Callable:
    """One token per row: `(t, logits, seen, done, count, seed, history) -> (tokens, seen, done, count)`
    (`history` `[rows, width]`: the tokens chosen so far in columns `0 … t-1`)."""
    stop_ids = ops.convert_to_tensor(stops.astype("int32")) if stops.size else None
    stop_mask = ops.convert_to_tensor(stop_mask) if stop_mask is not None else None

    def choose(t, logits, seen, done, count, seed, history):
        scores = processors.penalize(logits, t, seen if use_seen else None, repetition_penalty, stop_mask,
                                     min_new_tokens)
        if no_repeat_ngram_size:
            scores = processors.ban_repeated_ngrams(scores, history, t, no_repeat_ngram_size)
        tokens = ops.where(done, pad, sampler(scores, seed, t))
        if use_seen:
            hit = ops.logical_and(ops.one_hot(tokens, ops.shape(seen)[1], dtype="bool"),
                                  ops.logical_not(ops.expand_dims(done, 1)))
            seen = ops.logical_or(seen, hit)
        if stop_ids is not None:
            hit = ops.any(ops.expand_dims(tokens, 1) == stop_ids[None, :], axis=1)
            count = count + ops.cast(ops.logical_and(hit, ops.logical_not(done)), "int32")
            done = ops.logical_or(done, count >= min_stops)
        return tokens, seen, done, count

    return choose


def _sampling_loop(step, sampler, width: int, pad: int, use_seen: bool, **options) -> Callable:
    """Greedy / sampling as one `ops.while_loop`: `run(state, logits, seen, max_new, seed) -> (tokens, steps)`.

    The body chooses the tokens at `t` and runs the step for them; the loop ends before the step that would follow
    the last token, so no step is wasted and no conditional wraps the step (a conditional around the cache makes
    XLA copy it)."""
    choose = _choice(sampler, pad, use_seen, **options)
    columns = ops.arange(width, dtype="int32")

    def record(out, tokens, t):
        return ops.where(columns[None, :] == t, ops.expand_dims(tokens, 1), out)

    def body(t, logits, state, seen, out, done, count, max_new, seed):
        tokens, seen, done, count = choose(t, logits, seen, done, count, seed, out)
        logits, state = step(state, ops.expand_dims(tokens, 1), t)
        return t + 1, logits, state, seen, record(out, tokens, t), done, count, max_new, seed

    def cond(t, logits, state, seen, out, done, count, max_new, seed):
        return ops.logical_and(t + 1 < max_new, ops.logical_not(ops.all(done)))

    def run(state, logits, seen, max_new, seed):
        rows = ops.shape(logits)[0]
        loop_vars = (ops.convert_to_tensor(0, "int32"), logits, state, seen, ops.full((rows, width), pad, "int32"),
                     ops.zeros((rows,), "bool"), ops.zeros((rows,), "int32"), max_new, seed)
        t, logits, _, seen, out, done, count, _, _ = ops.while_loop(cond, body, loop_vars)
        early = ops.all(done)
        tokens, _, _, _ = choose(t, logits, seen, done, count, seed, out)
        out = record(out, tokens, t)
        return out, ops.where(early, t, t + 1)

    return run


def _stream(adapter, step, sampler, logits, state, seen, seed, max_new_tokens, streamer, pad, use_seen, jit,
            compile_, step_key, **options) -> np.ndarray:
    """Greedy / sampling, Python loop over the compiled step: tokens reach the host (and the streamer) each step."""
    choose = _choice(sampler, pad, use_seen, **options)
    if compile_:
        step = compiled(adapter, ("step", step_key), lambda: step, jit, donate=True)  # JAX: the state is donated
    rows = int(ops.shape(logits)[0])
    done, count = ops.zeros((rows,), "bool"), ops.zeros((rows,), "int32")
    columns = []
    for t in range(max_new_tokens):
        history = (ops.convert_to_tensor(np.stack(columns + [np.full(rows, pad)], axis=1).astype("int32"))
                   if options["no_repeat_ngram_size"] else None)  # only the n-gram ban reads it
        tokens, seen, done, count = choose(ops.convert_to_tensor(t, "int32"), logits, seen, done, count, seed,
                                           history)
        tokens_np = ops.convert_to_numpy(tokens).astype(np.int64)
        columns.append(tokens_np)
        if streamer is not None:
            streamer(tokens_np.copy())
        if bool(ops.convert_to_numpy(ops.all(done))) or t + 1 == max_new_tokens:
            break
        logits, state = step(state, ops.expand_dims(tokens, 1), ops.convert_to_tensor(t, "int32"))
    return np.stack(columns, axis=1)

