"""How `generate` picks the next tokens: small sampler classes and a registry of names (`method=` strings).

A row sampler maps scores `[rows, vocab]` (after the penalties) to ids `[rows]` int32 in `keras.ops`, as a pure
function of `(scores, seed, step)`, so it runs eagerly and inside the compiled decoding loop alike. `BeamSearch`
is a search over whole hypotheses (see `bert4k.generation.beam`); it carries its settings and no per-row choice.
Register your own with `register_sampler(name, cls)`; `get_sampler(method, **settings)` builds one by name, giving
it the settings its constructor takes.
"""
from __future__ import annotations

import inspect

from keras import ops

from bert4k.generation import processors


class Sampler:
    """Base class: `__call__(scores, seed, step) -> ids`; `key()` identifies its settings for compiled loops."""

    def __call__(self, scores, seed, step):
        raise NotImplementedError

    def key(self) -> tuple:
        return (type(self).__qualname__, *sorted(vars(self).items()))


class Greedy(Sampler):
    """The most likely id."""

    def __call__(self, scores, seed, step):
        return ops.cast(ops.argmax(scores, axis=-1), "int32")


class RandomSampler(Sampler):
    """A draw from softmax(scores / temperature), restricted to the `top_k` best and / or the `top_p` nucleus."""

    def __init__(self, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
        if temperature <= 0:
            raise ValueError(f"generate: temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"generate: top_k must be ≥ 1, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"generate: top_p must be in (0, 1], got {top_p}")
        self.temperature, self.top_k, self.top_p = float(temperature), top_k, top_p

    def __call__(self, scores, seed, step):
        return processors.sample(processors.warp(scores, self.temperature, self.top_k, self.top_p), seed, step)


class TopK(RandomSampler):
    """Sampling among the `top_k` best ids (default 50, as HF)."""

    def __init__(self, top_k: int = 50, temperature: float = 1.0):
        super().__init__(temperature=temperature, top_k=top_k)


class TopP(RandomSampler):
    """Nucleus sampling: the smallest set of best ids with mass ≥ `top_p` (default 0.9)."""

    def __init__(self, top_p: float = 0.9, temperature: float = 1.0):
        super().__init__(temperature=temperature, top_p=top_p)


class BeamSearch(Sampler):
    """Beam search with `num_beams` beams; hypotheses scored `sum log p / length ** length_penalty`."""

    def __init__(self, num_beams: int = 4, length_penalty: float = 1.0):
        if num_beams < 1:
            raise ValueError(f"generate: num_beams must be ≥ 1, got {num_beams}")
        self.num_beams, self.length_penalty = int(num_beams), float(length_penalty)

    def __call__(self, scores, seed, step):
        raise TypeError("BeamSearch chooses whole hypotheses, not one id per row; pass it to generate(method=...)")


_SAMPLERS: dict[str, type[Sampler]] = {"greedy": Greedy, "sample": RandomSampler, "top_k": TopK, "top_p": TopP,
                                       "beam": BeamSearch}


def register_sampler(name: str, cls: type[Sampler]) -> None:
    """Make `generate(method=name, ...)` use `cls` (built with the `generate` settings its constructor names)."""
    _SAMPLERS[name] = cls


def sampler_names() -> tuple[str, ...]:
    return tuple(_SAMPLERS)


def get_sampler(method: str | Sampler, **settings) -> Sampler:
    """The sampler `method` names, built from the `settings` its constructor takes (None = its default)."""
    if isinstance(method, Sampler):
        return method
    if method not in _SAMPLERS:
        raise ValueError(f"generate: unknown method {method!r}; expected one of {sampler_names()} or a Sampler")
    cls = _SAMPLERS[method]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in settings.items() if k in accepted and v is not None})
