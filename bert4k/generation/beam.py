"""Beam search as one `keras.ops.while_loop` (in-graph beam reordering), for every backend.

A hypothesis' score is `sum of log-probabilities / length ** length_penalty`, where length counts its generated
tokens (a final stop id included). A hypothesis finishes when it emits a stop id (the `min_stops`-th) or reaches
`max_new_tokens`. Each step takes the `2 * beams` best (beam, token) extensions of every input: finishing ones
compete for the `num_return` finished slots, the first `beams` others become the running beams. An input stops
early only when no running beam can still beat its `num_return`-th finished hypothesis: with `length_penalty ≥ 0`
a running sum `s ≤ 0` can at best become `s / max_new_tokens ** α`. With beams wide enough that nothing is pruned
this returns exactly the best sequences by that score.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from keras import ops

from bert4k.generation import processors

NEG_INF = float("-inf")


def beam_loop(step: Callable, reorder: Callable, *, batch: int, beams: int, num_return: int, width: int,
              length_penalty: float, stops: np.ndarray, stop_mask, min_stops: int, min_new_tokens: int,
              repetition_penalty: float, use_seen: bool, no_repeat_ngram_size: int = 0,
              while_loop: Callable = ops.while_loop) -> Callable:
    """`run(state, logits, seen, max_new) -> (tokens [batch, num_return, width], lengths [batch, num_return])`,
    built from `keras.ops` only; `logits` / `state` have `batch * beams` rows (row = input * beams + beam).
    `while_loop`: `python_while_loop` for adapters whose step is plain Python / numpy."""
    alpha = float(length_penalty)
    stop_ids = ops.convert_to_tensor(stops.astype("int32")) if stops.size else None
    stop_mask = ops.convert_to_tensor(stop_mask) if stop_mask is not None else None
    columns = ops.arange(width, dtype="int32")

    def gather(x, index):  # x [batch, n, ...], index [batch, m] → [batch, m, ...]
        index = ops.reshape(index, (batch, -1) + (1,) * (len(x.shape) - 2))
        return ops.take_along_axis(x, ops.broadcast_to(index, (batch, index.shape[1], *x.shape[2:])), axis=1)

    def body(t, logits, state, seen, run_tokens, run_scores, run_stops, fin_tokens, fin_scores, fin_len, done,
             max_new):
        vocab = logits.shape[-1]
        scores = processors.penalize(logits, t, seen if use_seen else None, repetition_penalty, stop_mask,
                                     min_new_tokens)
        if no_repeat_ngram_size:
            history = ops.reshape(run_tokens, (batch * beams, width))
            scores = processors.ban_repeated_ngrams(scores, history, t, no_repeat_ngram_size)
        log_probs = ops.reshape(ops.log_softmax(scores, axis=-1), (batch, beams, vocab))
        total = ops.reshape(ops.expand_dims(run_scores, -1) + log_probs, (batch, beams * vocab))
        candidates = min(2 * beams, beams * vocab)
        cand_scores, flat = ops.top_k(total, candidates, sorted=True)
        flat = ops.cast(flat, "int32")
        source, token = flat // vocab, flat % vocab
        is_stop = (ops.any(ops.expand_dims(token, -1) == stop_ids, axis=-1) if stop_ids is not None
                   else ops.zeros_like(token, "bool"))
        cand_stops = gather(run_stops, source) + ops.cast(is_stop, "int32")
        last = t + 1 >= max_new
        finishing = ops.logical_or(ops.logical_and(is_stop, cand_stops >= min_stops), last)
        valid = ops.logical_and(cand_scores > NEG_INF, ops.logical_not(ops.expand_dims(done, -1)))
        # running: the first `beams` valid, non-finishing candidates, in score order
        keep = ops.logical_and(valid, ops.logical_not(finishing))
        rank = ops.where(keep, candidates - ops.arange(candidates, dtype="int32")[None, :], 0)
        _, chosen = ops.top_k(rank, beams, sorted=True)
        chosen = ops.cast(chosen, "int32")
        kept = gather(keep, chosen)
        new_scores = ops.where(kept, gather(cand_scores, chosen), NEG_INF)
        new_source, new_token = gather(source, chosen), gather(token, chosen)
        new_stops = gather(cand_stops, chosen)
        # finished: the best `num_return` of the old ones and the finishing candidates
        cand_tokens = gather(run_tokens, source)
        cand_tokens = ops.where(columns[None, None, :] == t, ops.expand_dims(token, -1), cand_tokens)
        length = ops.cast(t + 1, "float32")
        cand_final = ops.where(ops.logical_and(valid, finishing), cand_scores / length ** alpha, NEG_INF)
        all_scores = ops.concatenate([fin_scores, cand_final], axis=1)
        all_tokens = ops.concatenate([fin_tokens, cand_tokens], axis=1)
        all_len = ops.concatenate([fin_len, ops.full((batch, candidates), 1, "int32") * (t + 1)], axis=1)
        fin_scores, best = ops.top_k(all_scores, num_return, sorted=True)
        best = ops.cast(best, "int32")
        fin_tokens, fin_len = gather(all_tokens, best), gather(all_len, best)
        # stopping rule
        running_best = ops.max(new_scores, axis=1)
        full = ops.sum(ops.cast(fin_scores > NEG_INF, "int32"), axis=1) >= num_return
        bound_length = ops.cast(max_new, "float32") if alpha >= 0 else ops.cast(t + 2, "float32")
        cannot = ops.logical_or(running_best == NEG_INF,
                                ops.logical_and(full, fin_scores[:, -1] >= running_best / bound_length ** alpha))
        done = ops.logical_or(done, ops.logical_or(last, cannot))
        # follow the beams
        rows = ops.reshape(ops.arange(batch, dtype="int32")[:, None] * beams + new_source, (-1,))
        state = reorder(state, rows)
        tokens = ops.reshape(new_token, (-1,))
        if use_seen:
            seen = ops.logical_or(ops.take(seen, rows, axis=0), ops.one_hot(tokens, vocab, dtype="bool"))
        run_tokens = ops.where(columns[None, None, :] == t, ops.expand_dims(new_token, -1),
                               gather(run_tokens, new_source))
        logits, state = step(state, ops.expand_dims(tokens, 1), t)
        return (t + 1, logits, state, seen, run_tokens, new_scores, new_stops, fin_tokens, fin_scores, fin_len, done,
                max_new)

    def cond(t, logits, state, seen, run_tokens, run_scores, run_stops, fin_tokens, fin_scores, fin_len, done,
             max_new):
        return ops.logical_and(t < max_new, ops.logical_not(ops.all(done)))

    def run(state, logits, seen, max_new):
        first = np.full((batch, beams), NEG_INF, "float32")
        first[:, 0] = 0.0  # all beams start identical: expand only the first
        loop_vars = (ops.convert_to_tensor(0, "int32"), logits, state, seen,
                     ops.zeros((batch, beams, width), "int32"), ops.convert_to_tensor(first),
                     ops.zeros((batch, beams), "int32"), ops.zeros((batch, num_return, width), "int32"),
                     ops.full((batch, num_return), NEG_INF, "float32"), ops.zeros((batch, num_return), "int32"),
                     ops.zeros((batch,), "bool"), max_new)
        out = while_loop(cond, body, loop_vars)
        fin_tokens, fin_scores, fin_len = out[7], out[8], out[9]
        return fin_tokens, ops.where(fin_scores > NEG_INF, fin_len, 0)

    return run


def python_while_loop(cond: Callable, body: Callable, loop_vars: tuple) -> tuple:
    """`ops.while_loop`'s contract as a plain Python loop (nothing traced: for uncompiled numpy adapters)."""
    while bool(ops.convert_to_numpy(cond(*loop_vars))):
        loop_vars = tuple(body(*loop_vars))
    return loop_vars


def results(tokens: np.ndarray, lengths: np.ndarray, pad_id: int) -> np.ndarray:
    """`[batch * num_return, longest]` best first per input, positions past each hypothesis' end = `pad_id`."""
    tokens = tokens.reshape(-1, tokens.shape[-1]).astype(np.int64)
    lengths = lengths.reshape(-1)
    width = int(lengths.max(initial=0))
    out = np.where(np.arange(width)[None, :] < lengths[:, None], tokens[:, :width], pad_id)
    return out.astype(np.int64)
