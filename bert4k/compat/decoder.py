"""bert4keras' `AutoRegressiveDecoder`, kept for users who subclass it, running on bert4k's decoding engine.

The user's `predict(self, inputs, output_ids, states)` sees the inputs and everything generated so far and returns
the next-token distribution of each row; decorate it with `@AutoRegressiveDecoder.wraps(default_rtype, use_states)`
(alias `wrap_input_output`). Such a predict recomputes the whole prefix at every step — uncached by nature. For the
KV-cached path call `bert4k.generation.generate(model, ...)` on a `Transformer` (or any model with an adapter).

Differences from bert4keras, all from sharing the engine: `beam_search` keeps finished hypotheses instead of
dropping all but the best of their step (same scoring: summed log-probabilities, no length penalty), and `minlen`
bans the end id until it is reached instead of ignoring early ends. As in bert4keras, `random_sample` takes its
seed from numpy's global RNG, so `np.random.seed` makes it reproducible (`generate` itself never reads that state).
"""
from __future__ import annotations

import functools

import keras
import numpy as np

from bert4k.generation.adapters import DecodingAdapter
from bert4k.generation.engine import generate


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class _PredictAdapter(DecodingAdapter):
    """Drives a decoder's `predict` (numpy, uncompiled); state = per-row inputs and output ids + user states."""

    compile = False

    def __init__(self, decoder: AutoRegressiveDecoder, temperature: float, states):
        self.decoder, self.temperature, self.states = decoder, temperature, states

    def _predict(self, inputs, output_ids):
        scores, self.states = self.decoder.predict(inputs, output_ids, self.states, self.temperature, "logits")
        return np.asarray(scores, dtype=np.float32)

    def start(self, inputs, max_new_tokens: int):
        inputs = [np.array([x]) for x in inputs]
        output_ids = self.decoder.first_output_ids
        return self._predict(inputs, output_ids), {"inputs": inputs, "output_ids": output_ids}

    def step(self, state, token_ids, index):
        output_ids = np.concatenate([state["output_ids"], np.asarray(token_ids)], axis=1)
        return self._predict(state["inputs"], output_ids), {"inputs": state["inputs"], "output_ids": output_ids}

    def reorder(self, state, rows):
        rows = np.asarray(rows)
        return {"inputs": [x[rows] for x in state["inputs"]], "output_ids": state["output_ids"][rows]}


class AutoRegressiveDecoder:
    """Base class of autoregressive decoders (beam search and random sampling), bert4keras-compatible."""

    def __init__(self, start_id: int | None, end_id: int | None, maxlen: int, minlen: int = 1):
        self.start_id, self.end_id, self.maxlen, self.minlen = start_id, end_id, maxlen, minlen
        self.models: dict = {}
        self.first_output_ids = (np.empty((1, 0), dtype=int) if start_id is None
                                 else np.array([[start_id]], dtype=int))

    @staticmethod
    def wraps(default_rtype: str = "probas", use_states: bool = False):
        """Decorator for `predict`: adds `temperature` and `rtype` ('probas' | 'logits' = log-probabilities) and
        the `(prediction, states)` return; `default_rtype` says what the decorated predict returns."""
        def decorator(predict):
            @functools.wraps(predict)
            def new_predict(self, inputs, output_ids, states, temperature=1, rtype=default_rtype):
                if rtype not in ("probas", "logits"):
                    raise ValueError(f"rtype must be 'probas' or 'logits', got {rtype!r}")
                prediction = predict(self, inputs, output_ids, states)
                scores, states = prediction if use_states else (prediction, None)
                scores = np.asarray(scores, dtype=np.float64)
                if default_rtype == "logits":
                    probas = _softmax(scores / temperature)
                else:
                    probas = np.power(scores, 1.0 / temperature) if temperature != 1 else scores
                    probas = probas / probas.sum(axis=-1, keepdims=True)
                return (probas if rtype == "probas" else np.log(probas + 1e-12)), states
            return new_predict
        return decorator

    wrap_input_output = wraps

    def last_token(self, model: keras.Model) -> keras.Model:
        """A model with the same inputs that returns only the last position of each output (cached per model)."""
        if model not in self.models:
            outputs = [output[:, -1] for output in model.outputs]
            self.models[model] = keras.Model(model.inputs, outputs[0] if len(outputs) == 1 else outputs)
        return self.models[model]

    def predict(self, inputs, output_ids, states=None):
        """Override (decorated with `wraps`): next-token distribution of each row of `output_ids`."""
        raise NotImplementedError

    def _run(self, inputs, states, temperature, min_ends, **options) -> list[np.ndarray]:
        start = self.first_output_ids.shape[1]
        stops = [] if self.end_id is None else [self.end_id]
        out = generate(_PredictAdapter(self, temperature, states), inputs, self.maxlen, stop_ids=stops,
                       min_stops=min_ends, min_new_tokens=max(self.minlen - start - 1, 0), **options)
        results = []
        for row in out:
            ends = np.flatnonzero(np.cumsum(np.isin(row, stops)) >= min_ends) if stops else []
            row = row[:ends[0] + 1] if len(ends) else row
            results.append(np.concatenate([self.first_output_ids[0], row]).astype(int))
        return results

    def beam_search(self, inputs, topk: int, states=None, temperature: float = 1, min_ends: int = 1) -> np.ndarray:
        """The best sequence (start id included if any, end id included if reached) with beam width `topk`."""
        return self._run(inputs, states, temperature, min_ends, method="beam", num_beams=topk, length_penalty=0.0)[0]

    def random_sample(self, inputs, n: int, topk: int | None = None, topp: float | None = None, states=None,
                      temperature: float = 1, min_ends: int = 1) -> list[np.ndarray]:
        """`n` sampled sequences, each restricted to the `topk` best / the `topp` nucleus at every step. As in
        bert4keras, `topp >= 1` restricts nothing (the nucleus never fills): the whole distribution is sampled."""
        if topp is not None and topp >= 1:
            topp = None
        return self._run(inputs, states, temperature, min_ends, method="sample", num_samples=n, top_k=topk,
                         top_p=topp, seed=int(np.random.randint(2 ** 31 - 1)))
