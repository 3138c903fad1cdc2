"""The decoding adapter protocol that `bert4k.generation.generate` drives, the per-model-class registry, and the
adapter for the one `Transformer` (applications `lm` and `unilm`).

Protocol (subclass `DecodingAdapter`, or provide the same methods):

- `start(inputs, max_new_tokens) -> (logits, state)`: run the prompt / source once (eagerly; anything goes),
  allocate static caches with room for `max_new_tokens` more tokens, and return the logits of the first new token
  (`[rows, vocab]`, float32) and the decoding state. `rows` = number of input rows.
- `step(state, token_ids, index) -> (logits, state)`: feed the generated tokens `token_ids` (`[rows, 1]` int32),
  where `index` (int32 scalar tensor) counts the tokens generated before them (0 for the first), and return the
  logits of the next token. It must trace with fixed shapes and `keras.ops` only: the engine runs it inside one
  compiled `keras.ops.while_loop` (or a compiled step, when streaming) and passes `index` as a tensor, so no step
  retraces. An adapter with `in_place_writes = True` takes `step(..., in_place=True)`: the engine owns the state
  and never reads an old one again, so the caches `start` allocated may be written in place.
- `reorder(state, rows) -> state`: the state of rows `rows` (`[new_rows]` int32), used to give each input
  n rows (samples, beams) and to follow beams. The default gathers axis 0 of every tensor in the state, so keep
  every state tensor batch-major (put per-call constants in per-row tensors).
- `context_ids(inputs)`: per row, the ids `repetition_penalty` counts as already seen before generation (the prompt
  of a causal LM), or None.
- `pad_id`: the id written after a row stops, unless `generate(pad_id=...)` says otherwise.
- `compile`: False when `step` is plain Python/numpy (nothing is traced then); `jit_compile`: XLA for the step
  (None: the engine's measured default for `compute_dtype`); `variables`: the model's variables (JAX compiles
  them as arguments, not constants).

Adapters: each built-in family names its adapter factory in its `Family` record (`bert4k.models.families`);
`register_adapter(model_class, factory)` adds one for other classes or overrides it for a class (and its
subclasses); `factory(model) -> adapter`. Keys may be classes or dotted
names (`"bert4k.models.t5.T5"`) and factories may be `"module:attribute"` strings, so a model module never has to
import this package (imports run generation → models).
"""
from __future__ import annotations

import importlib
import math
import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from bert4k.generation.compile import backend as compile_backend
from bert4k.generation.compile import compiled
from bert4k.layers.kv_cache import cache_rows
from bert4k.models import condition


class DecodingAdapter:
    """Base class of decoding adapters (see the module docstring for the protocol)."""

    pad_id: int = 0
    compile: bool = True
    jit_compile: bool | None = None  # None: the engine's default (by `compute_dtype`)
    compute_dtype: str = "float32"

    def start(self, inputs, max_new_tokens: int):
        raise NotImplementedError

    def step(self, state, token_ids, index):
        raise NotImplementedError

    def reorder(self, state, rows):
        """Rows `rows` of every tensor in `state` (axis 0)."""
        return keras.tree.map_structure(lambda t: ops.take(t, rows, axis=0), state)

    def context_ids(self, inputs) -> list | None:
        return None


# Classes registered by users; the built-in families name their adapter in their `Family` record.
_REGISTRY: dict[Any, Any] = {}
_ADAPTERS: weakref.WeakKeyDictionary[Any, DecodingAdapter] = weakref.WeakKeyDictionary()


def register_adapter(model_class: type | str, factory: Callable[[Any], DecodingAdapter] | str) -> None:
    """Make `generate` drive models of `model_class` (a class or its dotted name) with `factory(model)`."""
    _REGISTRY[model_class] = factory


def _resolve(factory):
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        return getattr(importlib.import_module(module), attribute)
    return factory


def _family_adapter(model):
    """The adapter factory that `model`'s family record names (`bert4k.models.families`), if any."""
    from bert4k.models.families import FAMILIES

    name = getattr(model, "family", None)
    family = FAMILIES.get(name) if isinstance(name, str) else None
    return None if family is None else family.adapter


def adapter_for(model) -> DecodingAdapter:
    """The (cached) adapter of `model`: one registered for its class or a base class, else the one its family
    record names."""
    if hasattr(model, "start") and hasattr(model, "step"):
        return model
    try:
        return _ADAPTERS[model]
    except (KeyError, TypeError):
        pass
    factories = [_REGISTRY[key] for cls in type(model).__mro__
                 for key in (cls, f"{cls.__module__}.{cls.__qualname__}") if key in _REGISTRY]
    factories.append(_family_adapter(model))
    for factory in factories:
        if factory is not None:
            adapter = _resolve(factory)(model)
            try:
                _ADAPTERS[model] = adapter
            except TypeError:
                pass
            return adapter
    raise TypeError(f"generate: no decoding adapter registered for {type(model).__name__}; "
                    f"register one with bert4k.generation.register_adapter")


def reorder_with_caches(state: dict, rows, heads: int, caches: tuple[str, ...] = ("cache",)) -> dict:
    """Rows `rows` of every tensor in `state`; the entries named in `caches` hold `[rows * heads, ...]` KV caches
    (`MultiHeadAttention.init_cache`), whose rows are the heads of each row."""
    expanded = cache_rows(rows, heads)

    def take(key, value):
        index = expanded if key in caches else rows
        return keras.tree.map_structure(lambda t: ops.take(t, index, axis=0), value)
    return {key: take(key, value) for key, value in state.items()}


# === the one Transformer ===

def _rows_of(x, name: str) -> list[np.ndarray]:
    """A batch as a list of 1-D arrays: accepts a 1-D sequence (one row), a 2-D array, or a list of sequences."""
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    if isinstance(x, np.ndarray):
        if x.ndim == 1:
            return [x]
        if x.ndim == 2:
            return list(x)
        raise ValueError(f"generate: {name} must be 1-D or 2-D, got shape {x.shape}")
    x = list(x)
    if all(np.ndim(v) == 0 for v in x):
        return [np.asarray(x)]
    return [np.asarray(v).reshape(-1) for v in x]


class ModelAdapter(DecodingAdapter):
    """An adapter for one built-in model, held weakly (the registry maps model → adapter weakly: no strong
    reference back keeps the model alive)."""

    def __init__(self, model):
        self._model = weakref.ref(model)

    @property
    def model(self):
        model = self._model()
        if model is None:
            raise ReferenceError("generate: the model of this adapter has been deleted")
        return model

    @property
    def variables(self) -> list:
        return self.model.variables


class TransformerAdapter(ModelAdapter):
    """Decodes a `Transformer` built with application `lm` (causal) or `unilm` (source bidirectional, target causal),
    through the model's own cached forward pass (`Transformer.call_with_cache`).

    Inputs: `token_ids` (a 2-D array, a list of sequences of any lengths, or one sequence); or a tuple in the
    model's input order `(token_ids[, segment_ids][, cond])` (segment ids may be left out: zeros), or a dict with
    keys `token_ids`, `segment_ids`, `cond`. Ids equal to the config's `pad_token_id` (if ≥ 0) are padding wherever
    they stand. Rows are re-packed left-padded and each row gets its own positions (`cumsum(mask) - 1`, as HF
    `generate` does), so a batch decodes exactly like its rows one by one.

    `unilm`: the source (segment 0) is encoded once, bidirectionally, in the one prefill pass; generated tokens get
    segment 1 and attend to the whole source and to earlier targets through the cache. The first logits come from
    the source's last token. The cache is `[rows * heads, L, size]` per block, `L` = prompt + new tokens, each
    rounded up to `cache_block` (JAX: the prompt too), so calls with nearby lengths reuse the compiled functions.
    `attention="linear"` models keep a running state `(S, Z)` per block instead (`LinearAttentionAdapter`).
    """

    def __init__(self, model, cache_block: int = 32):
        if getattr(model, "application", None) not in ("lm", "unilm"):
            raise ValueError(f"generate: a Transformer with application {getattr(model, 'application', None)!r} "
                             "cannot decode; build it with application='lm' or 'unilm'")
        super().__init__(model)
        self.input_pad_id = model.config.pad_token_id
        self.pad_id = max(model.config.pad_token_id, 0)
        self.unilm = model.application == "unilm"
        self.cache_block = cache_block
        # the layers carry the dtype policy (`dtype="bfloat16"`), not the functional model itself
        self.compute_dtype = model.blocks[0].compute_dtype

    # --- inputs ---
    def _parse(self, inputs):
        m = self.model
        names = ["token_ids"] + (["segment_ids"] if m.use_segments else []) + (["cond"] if m.layer_norm_cond else [])
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - set(names))
            if unknown:
                raise ValueError(f"generate: unknown input(s) {unknown}; this model takes {names}")
            values = dict(inputs)
        elif isinstance(inputs, tuple):  # positional, never guessed: (ids, x) must not bind segments as the cond
            if not (len(inputs) == len(names) or (len(inputs) == 1 and "cond" not in names)):
                raise ValueError(f"generate: got a tuple of {len(inputs)} inputs; this model takes {names} in this "
                                 "order (segment_ids may be None) or a dict with those keys")
            values = dict(zip(names, inputs))
        else:
            values = {"token_ids": inputs}
        if m.layer_norm_cond and values.get("cond") is None:
            raise ValueError("generate: this model has a LayerNorm condition; pass (token_ids, ..., cond)")
        ids = _rows_of(values["token_ids"], "token_ids")
        segs = (_rows_of(values["segment_ids"], "segment_ids") if values.get("segment_ids") is not None
                else [np.zeros_like(r) for r in ids])
        if len(segs) != len(ids) or any(len(s) != len(r) for s, r in zip(segs, ids)):
            raise ValueError("generate: segment_ids must have the same shape as token_ids")
        if self.input_pad_id >= 0:
            keep = [r != self.input_pad_id for r in ids]
            ids, segs = [r[k] for r, k in zip(ids, keep)], [s[k] for s, k in zip(segs, keep)]
        if any(len(r) == 0 for r in ids):
            raise ValueError("generate: every row needs at least one non-padding token (e.g. [CLS] or a bos id)")
        return ids, segs, values.get("cond")

    def context_ids(self, inputs):
        ids, _, _ = self._parse(inputs)
        return None if self.unilm else ids

    def _prompt(self, inputs, max_new_tokens: int) -> dict:
        """The rows left-padded to one width: ids, segments, validity, positions (numpy), and the condition."""
        cfg = self.model.config
        ids, segs, cond = self._parse(inputs)
        rows, lengths = len(ids), np.array([len(r) for r in ids], dtype="int32")
        prompt = int(lengths.max())
        if cfg.position_offset + prompt + max_new_tokens > cfg.max_position_embeddings:
            raise ValueError(f"generate: prompt length {prompt} + max_new_tokens {max_new_tokens} exceeds the "
                             f"model's max_position_embeddings {cfg.max_position_embeddings}")
        if compile_backend() == "jax":  # one compiled prefill per bucket of prompt lengths
            prompt = _round_up(prompt, self.cache_block)
        token_ids = np.zeros((rows, prompt), "int32")
        segment_ids = np.zeros((rows, prompt), "int32")
        valid = np.zeros((rows, prompt), bool)
        for i, (r, s) in enumerate(zip(ids, segs)):
            token_ids[i, prompt - len(r):], segment_ids[i, prompt - len(r):], valid[i, prompt - len(r):] = r, s, True
        positions = (np.maximum(np.cumsum(valid, axis=1) - 1, 0) + cfg.position_offset).astype("int32")
        return dict(token_ids=token_ids, segment_ids=segment_ids, valid=valid, positions=positions,
                    next_position=lengths + cfg.position_offset, cond=self._condition(cond))

    def _condition(self, cond):
        """The LayerNorm condition vector, computed once per call (condition model, then the hidden Dense)."""
        m = self.model
        if cond is None:
            return None
        return condition.vector(m.condition_model, m.cond_dense, ops.convert_to_tensor(cond)
                                if m.condition_model is None else cond)

    def _forward(self, token_ids, segment_ids, positions, mask, cache, index, cond, in_place=False):
        """The model's cached forward; logits of the last position, `[rows, vocab]` float32."""
        logits, cache = self.model.call_with_cache(token_ids, mask, cache, index, segment_ids=segment_ids,
                                                   positions=positions, condition_vector=cond, last_only=True,
                                                   logits=True, cache_in_place=in_place)
        return ops.cast(logits[:, 0], "float32"), cache

    def _prefill(self):
        """The prompt pass, compiled once per adapter (TensorFlow: a graph with relaxed shapes; eager Keras spends
        ~0.4 s of overhead on a 32-token GPT-2-small prompt)."""
        return compiled(self, "prefill", lambda: self._forward, jit=False, relaxed=True, direct=False)

    # --- decoding ---
    def start(self, inputs, max_new_tokens: int):
        m, p = self.model, self._prompt(inputs, max_new_tokens)
        valid, segment_ids = p["valid"], p["segment_ids"]
        rows, prompt = valid.shape
        total = prompt + _round_up(max_new_tokens, self.cache_block)
        key_valid = np.zeros((rows, total), bool)
        key_valid[:, :prompt] = valid
        if self.unilm:
            level = np.cumsum(segment_ids * valid, axis=1)
            allowed = level[:, None, :] <= level[:, :, None]
        else:
            allowed = np.tril(np.ones((prompt, prompt), bool))[None]
        mask = np.zeros((rows, prompt, total), bool)
        mask[:, :, :prompt] = allowed & valid[:, None, :]
        cache = m.init_cache(rows, total)
        logits, cache = self._prefill()(p["token_ids"], segment_ids, p["positions"], mask, cache,
                                        ops.convert_to_tensor(0, "int32"), p["cond"])
        state = {"cache": cache, "key_valid": ops.convert_to_tensor(key_valid),
                 "position": ops.convert_to_tensor(p["next_position"]), "offset": ops.full((rows,), prompt, "int32")}
        if p["cond"] is not None:
            state["cond"] = p["cond"]
        return logits, state

    in_place_writes = True  # `step(..., in_place=True)` may write the caches `start` allocated in place

    def reorder(self, state, rows):
        return reorder_with_caches(state, rows, self.model.blocks[0].attention.heads)

    def step(self, state, token_ids, index, in_place: bool = False):
        offset = state["offset"][0]
        slot = offset + index
        keys = ops.arange(ops.shape(state["key_valid"])[1], dtype="int32")
        grown = ops.logical_and(keys >= offset, keys <= slot)
        mask = ops.expand_dims(ops.logical_or(state["key_valid"], grown[None, :]), 1)
        positions = ops.expand_dims(state["position"] + index, 1)
        segment_ids = ops.full_like(token_ids, 1 if self.unilm else 0)
        logits, cache = self._forward(token_ids, segment_ids, positions, mask, state["cache"], slot, state.get("cond"),
                                      in_place)
        return logits, {**state, "cache": cache}


class LinearAttentionAdapter(TransformerAdapter):
    """Decodes a `Transformer` built with `attention="linear"`: per block a running state `(S, Z)` =
    `(Σ φk vᵀ, Σ φk)` over the keys seen so far replaces the KV cache, so a step costs O(d²) per head and the
    decoding state does not grow with the generated length. The prompt runs once (lm: causal; unilm: the source
    bidirectional); each generated token is one causal step of width 1 (no chunk padding)."""

    in_place_writes = False
    reorder = DecodingAdapter.reorder  # running states are batch-major

    def start(self, inputs, max_new_tokens: int):
        m, p = self.model, self._prompt(inputs, max_new_tokens)
        rows = p["valid"].shape[0]
        valid = ops.convert_to_tensor(p["valid"])
        if self.unilm:
            mask = {"unilm": {"key_valid": valid, "segment_ids": ops.convert_to_tensor(p["segment_ids"])}}
        else:
            mask = {"causal": {"key_valid": valid}}
        states = m.init_cache(rows, 0)
        logits, states = self._prefill()(p["token_ids"], p["segment_ids"], p["positions"], mask, states, None,
                                         p["cond"])
        state = {"cache": states, "position": ops.convert_to_tensor(p["next_position"])}
        if p["cond"] is not None:
            state["cond"] = p["cond"]
        return logits, state

    def step(self, state, token_ids, index, in_place: bool = False):
        mask = {"causal": {"key_valid": ops.ones_like(token_ids, dtype="bool")}}
        positions = ops.expand_dims(state["position"] + index, 1)
        segment_ids = ops.full_like(token_ids, 1 if self.unilm else 0)
        logits, states = self._forward(token_ids, segment_ids, positions, mask, state["cache"], None,
                                       state.get("cond"))
        return logits, {**state, "cache": states}


def transformer_adapter(model, cache_block: int = 32) -> TransformerAdapter:
    """The adapter for a `Transformer`: the KV-cache one, or the running-state one for linear attention."""
    attention = getattr(model, "attention", "softmax")
    if attention == "linear":
        return LinearAttentionAdapter(model, cache_block)
    if attention != "softmax":
        raise ValueError(f"generate: no cached decoding for attention={attention!r}")
    return TransformerAdapter(model, cache_block)


def _round_up(n: int, block: int) -> int:
    return int(math.ceil(n / block) * block)
