"""bert4keras' `snippets` on Keras 3: data generators, text splitting, file access, Viterbi decoding.

Scripts written for `bert4keras.snippets` keep working after `bert4keras` -> `bert4k` (`bert4k.snippets` re-exports
this module). Padding, truncation (`bert4k.padding`) and `ViterbiDecoder` (`bert4k.viterbi`) are the native ones.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import queue
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from bert4k.compat.decoder import AutoRegressiveDecoder
from bert4k.compat.web import WebServing
from bert4k.padding import sequence_padding, truncate_sequences
from bert4k.viterbi import ViterbiDecoder

__all__ = [
    "AutoRegressiveDecoder",
    "DataGenerator",
    "ViterbiDecoder",
    "WebServing",
    "is_string",
    "keras_batch",
    "open",
    "parallel_apply",
    "parallel_apply_generator",
    "sequence_padding",
    "text_segmentate",
    "to_array",
    "truncate_sequences",
    "uniout",
]

# `from bert4keras.snippets import uniout` made Python 2 print Chinese; on Python 3 it is a no-op module.
uniout = types.ModuleType("uniout", "No-op stand-in for bert4keras' `uniout` (Python 3 prints Unicode already).")


def is_string(s: Any) -> bool:
    """Whether `s` is a `str`."""
    return isinstance(s, str)


def to_array(*args: Any) -> np.ndarray | list[np.ndarray]:
    """Convert each argument to a numpy array; one argument gives one array, several a list."""
    arrays = [np.array(a) for a in args]
    return arrays[0] if len(arrays) == 1 else arrays



def text_segmentate(
    text: str, maxlen: int, seps: str = "\n", strips: str | None = None
) -> list[str]:
    """Split `text` into pieces of at most `maxlen` characters at separators.

    `seps` lists separators from strongest to weakest: text is cut at the first one, neighbouring
    pieces are merged while they fit, and pieces still too long are cut at the next separator.
    A piece without any separator left may stay longer than `maxlen`. Every piece is stripped of
    whitespace and then of the characters in `strips`; empty pieces are dropped.
    """
    text = text.strip().strip(strips)
    if not seps or len(text) <= maxlen:
        return [text] if text else []
    sep, weaker = seps[0], seps[1:]
    pieces = text.split(sep)
    chunks, current = [], ""
    for i, piece in enumerate(pieces):
        if current and piece and len(current) + len(piece) >= maxlen:
            chunks.extend(text_segmentate(current, maxlen, weaker, strips))
            current = ""
        current += piece if i == len(pieces) - 1 else piece + sep
    chunks.extend(text_segmentate(current, maxlen, weaker, strips))
    return chunks


class open:
    """The builtin `open` with bert4keras' extras: line iteration plus optional random access.

    Text modes default to UTF-8. With `indexable=True` the start of every line is recorded, so
    `f[i]` reads line i and `len(f)` counts lines without loading the file; `indexable` may also
    be a path where these offsets are cached as json (read if it exists, written otherwise).
    Random access needs a stateless encoding such as UTF-8. Everything else (read, readline,
    write, seek, ...) is the underlying file's.
    """

    def __init__(
        self,
        name: str | os.PathLike,
        mode: str = "r",
        encoding: str | None = None,
        errors: str = "strict",
        indexable: bool | str | os.PathLike = False,
    ):
        text = "b" not in mode
        self.file = builtins.open(  # noqa: SIM115 - this object owns the file until close()
            name, mode, encoding=(encoding or "utf-8") if text else None, errors=errors if text else None
        )
        self.name = name
        self.offsets: list[int] | None = None
        if indexable:
            self.offsets = self._load_offsets(indexable)

    def _load_offsets(self, indexable: bool | str | os.PathLike) -> list[int]:
        cache = None if indexable is True else indexable
        if cache is not None and os.path.exists(cache):
            with builtins.open(cache, encoding="utf-8") as f:
                return json.load(f)
        offsets, position = [], 0
        with builtins.open(self.name, "rb") as f:
            for line in f:
                offsets.append(position)
                position += len(line)
        if cache is not None:
            with builtins.open(cache, "w", encoding="utf-8") as f:
                json.dump(offsets, f)
        return offsets

    def __getitem__(self, index: int):
        if self.offsets is None:
            raise TypeError(f"{self.name} was not opened with indexable=True")
        self.file.seek(self.offsets[index])
        return self.file.readline()

    def __len__(self) -> int:
        if self.offsets is None:
            raise TypeError(f"{self.name} was not opened with indexable=True")
        return len(self.offsets)

    def __iter__(self):
        return iter(self.file)

    def __next__(self):
        return next(self.file)

    def __getattr__(self, attr: str):
        return getattr(self.file, attr)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.file.close()


def _is_batch_container(value: Any) -> bool:
    """A list/tuple holding an array (or such a list): several model inputs/targets, not one nested list."""
    return isinstance(value, (list, tuple)) and any(hasattr(v, "shape") or _is_batch_container(v) for v in value)


def keras_batch(batch: Any) -> Any:
    """A bert4keras batch in Keras 3's form: containers of arrays → tuples of numpy arrays, dicts kept, other
    leaves → one numpy array each, a trailing `None` (no targets) removed.

    Raises naming the part when a leaf is a ragged list (pad it with `sequence_padding`)."""
    def convert(value, where):
        if isinstance(value, dict):
            return {k: convert(v, f"{where}[{k!r}]") for k, v in value.items()}
        if _is_batch_container(value):
            return tuple(convert(v, f"{where}[{i}]") for i, v in enumerate(value))
        if value is None:
            return None
        try:
            return np.asarray(value)
        except ValueError as error:
            raise ValueError(f"DataGenerator batch part {where} is a ragged list ({error}); pad it with "
                             "sequence_padding before yielding") from error

    if isinstance(batch, (list, tuple)):
        batch = tuple(convert(v, f"[{i}]") for i, v in enumerate(batch))
        if len(batch) > 1 and batch[-1] is None:
            batch = batch[:-1]  # `(x,)`: Keras reads it as inputs only
        return batch
    return convert(batch, "")


def _spec_of(value: Any, tf, where: str):
    """`tf.TensorSpec`s with `value`'s structure, its dtypes, and every axis unknown but a trailing unit one."""
    if isinstance(value, dict):
        return {k: _spec_of(v, tf, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_spec_of(v, tf, f"{where}[{i}]") for i, v in enumerate(value))
    if value is None:
        raise ValueError(f"DataGenerator batch part {where} is None; only a last `None` (no targets) is allowed")
    shape = [None] * value.ndim
    if value.ndim >= 2 and value.shape[-1] == 1:
        shape[-1] = 1  # a trailing unit axis is structure (labels `[batch, 1]`), kept for Keras' sparse losses
    return tf.TensorSpec(shape, tf.as_dtype(value.dtype))


def _check_against(spec, value: Any, tf, where: str, source: str) -> None:
    """Raise naming the part when `value` differs from the first batch's structure, rank or dtype."""
    if isinstance(spec, dict):
        if not isinstance(value, dict) or set(value) != set(spec):
            raise ValueError(f"{source}: batch part {where} changed structure: first {set(spec)}, now {value!r}")
        for k in spec:
            _check_against(spec[k], value[k], tf, f"{where}[{k!r}]", source)
    elif isinstance(spec, tuple):
        if not isinstance(value, tuple) or len(value) != len(spec):
            raise ValueError(f"{source}: batch part {where} changed structure: first {len(spec)} parts, now "
                             f"{type(value).__name__} {getattr(value, 'shape', len(value) if isinstance(value, tuple) else '')}")
        for i, (s, v) in enumerate(zip(spec, value)):
            _check_against(s, v, tf, f"{where}[{i}]", source)
    elif (not isinstance(value, np.ndarray) or value.ndim != spec.shape.rank or tf.as_dtype(value.dtype) != spec.dtype
          or not spec.shape.is_compatible_with(value.shape)):
        got = f"{value.dtype} of rank {value.ndim}" if isinstance(value, np.ndarray) else type(value).__name__
        raise ValueError(f"{source}: batch part {where} is {got} (shape {getattr(value, 'shape', None)}); the "
                         f"first batch had {spec.dtype.name} of shape {spec.shape}")


def _batch_dataset(batches: Callable[[], Iterator], source: str):
    """A `tf.data.Dataset` over `batches()` whose element spec comes from the first batch, all axes `None`."""
    import tensorflow as tf

    first = next(batches())
    spec = _spec_of(first, tf, "")

    def checked():
        for batch in batches():
            _check_against(spec, batch, tf, "", source)
            yield batch

    return _with_next(tf.data.Dataset.from_generator(checked, output_signature=spec), batches)


_NEXTABLE: dict[type, type] = {}


def _with_next(dataset, batches: Callable[[], Iterator]):
    """`dataset`, also answering `next()` as bert4keras' generator did (`dx, dy = next(g.forfit())`, virtual
    adversarial training): `next` walks `batches()` in Python, apart from the iterations Keras makes."""
    base = type(dataset)
    if base not in _NEXTABLE:
        def __next__(self):
            if self.__dict__.get("_bert4k_batches") is None:
                self.__dict__["_bert4k_batches"] = self._bert4k_make_batches()
            return next(self._bert4k_batches)

        _NEXTABLE[base] = type(base.__name__, (base,), {"__next__": __next__, "__module__": __name__})
    dataset.__class__ = _NEXTABLE[base]
    dataset.__dict__["_bert4k_make_batches"] = batches
    return dataset


class DataGenerator:
    """Template for batch generators, as in bert4keras.

    Subclasses implement `__iter__(self, random=False)`, usually looping over
    `self.sample(random)` and yielding a batch when it is full or `is_end` is true.
    For `to_dataset`, `__iter__` must yield single examples instead; tf.data batches them.
    Shuffling uses numpy's global random state (seed it with `np.random.seed`).
    """

    def __init__(self, data: Any, batch_size: int = 32, buffer_size: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.steps = math.ceil(len(data) / batch_size) if hasattr(data, "__len__") else None
        self.buffer_size = buffer_size or batch_size * 1000

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("the data has no length, so the number of batches is unknown")
        return self.steps

    def sample(self, random: bool = False) -> Iterator[tuple[bool, Any]]:
        """Yield `(is_end, item)` for every item, shuffled when `random`; `is_end` marks the last."""
        items = self._shuffled() if random else iter(self.data)
        current = next(items, _NOTHING)
        if current is _NOTHING:
            return
        for following in items:
            yield False, current
            current = following
        yield True, current

    def _shuffled(self) -> Iterator:
        if self.steps is not None:
            for i in np.random.permutation(len(self.data)):
                yield self.data[i]
            return
        # Unsized data: shuffle within a buffer of `buffer_size` items.
        buffer = []
        for item in self.data:
            buffer.append(item)
            if len(buffer) > self.buffer_size:
                yield _pop_random(buffer)
        while buffer:
            yield _pop_random(buffer)

    def __iter__(self, random: bool = False):
        raise NotImplementedError("subclasses of DataGenerator implement __iter__(self, random)")

    def forfit(self, random: bool = True):
        """An endless `tf.data.Dataset` of the batches `__iter__(random)` yields, for `model.fit(...,
        steps_per_epoch=len(g))`.

        Every axis of its element spec is `None` but a trailing unit axis (labels `[batch, 1]`): Keras 3 would
        otherwise fix each axis on which the first batches agree, and a later, longer batch fails. Batches are made Keras-3-ready: lists of arrays become
        tuples (Keras 3 reads a list as one tensor) and a `None` target is dropped (bert4keras' `yield [x1, x2],
        None` for models whose loss is a `Loss` layer). Structure and dtypes are taken from the first batch.
        `next(dataset)` gives the next batch (numpy), as from bert4keras' generator.
        """
        return _batch_dataset(lambda: self._repeat(random), type(self).__name__ + ".forfit")

    def fortest(self, random: bool = False):
        """Like `forfit`, with only the inputs (`batch[0]`) of every batch (for `model.predict(..., steps=)`)."""
        return _batch_dataset(lambda: (batch[0] for batch in self._repeat(random)),
                              type(self).__name__ + ".fortest")

    def _repeat(self, random: bool, convert: bool = True) -> Iterator:
        """`__iter__(random)` forever, each batch converted by `keras_batch` (when `convert`)."""
        while True:
            empty = True
            for batch in self.__iter__(random):
                empty = False
                yield keras_batch(batch) if convert else batch
            if empty:
                raise ValueError(f"{type(self).__name__}.__iter__ yielded nothing")

    def to_dataset(self, types, shapes, names=None, padded_batch: bool = False):
        """An endless, batched `tf.data.Dataset` over the examples `__iter__(True)` yields.

        `types` and `shapes` mirror one example's structure (e.g. `("int32", "int32")` and
        `([None], [])`). `names` turns a level into dicts: one name, a tuple of names, or a
        tuple of name tuples (e.g. `(("Input-Token", "Input-Segment"), ("label",))`).
        With `padded_batch`, examples may differ in length and are padded to `shapes`
        (None = the longest in the batch). A level given one name (e.g. the single output `("Probas",)`) yields
        its value itself: Keras 3 refuses a one-entry dict for a model's single input or output.
        """
        import tensorflow as tf

        def level(keys, values):
            return values[0] if len(keys) == 1 else dict(zip(keys, values))

        def name(values):
            if names is None or isinstance(names, str):
                return values
            if isinstance(names[0], str):
                return level(names, values)
            return tuple(level(k, v) for k, v in zip(names, values))

        types, shapes = name(types), name(shapes)
        signature = _signature(types, shapes, tf, any_length=padded_batch)

        def generator():
            for example in self._repeat(True, convert=False):
                yield _conform(signature, name(example))

        dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
        if padded_batch:
            return dataset.padded_batch(self.batch_size, _conform(signature, shapes))
        return dataset.batch(self.batch_size)


_NOTHING = object()


def _pop_random(items: list):
    """Remove and return a uniformly chosen item (swap it to the end first: O(1))."""
    i = np.random.randint(len(items))
    items[i], items[-1] = items[-1], items[i]
    return items.pop()


def _signature(types, shapes, tf, any_length: bool):
    """`tf.TensorSpec`s with the structure of `types`; unknown sizes where padding follows."""
    if isinstance(types, dict):
        return {k: _signature(t, shapes[k], tf, any_length) for k, t in types.items()}
    if isinstance(types, (tuple, list)):
        return tuple(_signature(t, s, tf, any_length) for t, s in zip(types, shapes))
    shape = [None] * len(shapes) if any_length else shapes
    return tf.TensorSpec(shape, types)


def _conform(structure, value):
    """Rebuild `value` with the nesting of `structure` (lists as tuples), leaves untouched."""
    if isinstance(structure, dict):
        return {k: _conform(s, value[k]) for k, s in structure.items()}
    if isinstance(structure, tuple):
        if len(structure) != len(value):
            raise ValueError(f"expected {len(structure)} parts, got {len(value)}: {value!r}")
        return tuple(_conform(s, v) for s, v in zip(structure, value))
    return value


_WORKER_FUNC: Callable | None = None


def _start_worker(func: Callable | None, seeds) -> None:
    """Pool initializer: remember `func` (if given) in this worker and seed numpy with the next seed, if any is left."""
    global _WORKER_FUNC
    if func is not None:
        _WORKER_FUNC = func
    try:
        np.random.seed(seeds.get_nowait())
    except queue.Empty:
        pass


def _apply_indexed(pair: tuple[int, Any]) -> tuple[int, Any]:
    return pair[0], _WORKER_FUNC(pair[1])


def parallel_apply_generator(func: Callable, iterable: Iterable, workers: int, max_queue_size: int,
                             dummy: bool = False, random_seeds: bool | Sequence | None = True) -> Iterator[tuple]:
    """Apply `func` to every item on `workers` forked processes (threads with `dummy=True`); yields
    `(index, result)` in completion order. `random_seeds`: a numpy seed per worker (`True`: fresh entropy,
    `None`/`False`: leave the state alone). `func` is inherited by the forked workers (closures work, items are
    pickled); `max_queue_size` is accepted for bert4keras' signature, the pool feeds items as workers free up."""
    import multiprocessing
    import multiprocessing.dummy

    if random_seeds is True:
        random_seeds = [None] * workers
    seeds = multiprocessing.dummy.Queue() if dummy else multiprocessing.get_context("fork").Queue()
    for seed in random_seeds or []:
        seeds.put(seed)
    pool_class = multiprocessing.dummy.Pool if dummy else multiprocessing.get_context("fork").Pool
    with pool_class(workers, _start_worker, (None if dummy else func, seeds)) as pool:
        if dummy:  # threads share the module global: bind func here instead
            yield from pool.imap_unordered(lambda pair: (pair[0], func(pair[1])), enumerate(iterable))
        else:
            yield from pool.imap_unordered(_apply_indexed, enumerate(iterable))


def parallel_apply(func: Callable, iterable: Iterable, workers: int, max_queue_size: int,
                   callback: Callable | None = None, dummy: bool = False, random_seeds: bool | Sequence | None = True,
                   unordered: bool = True) -> list | None:
    """`[func(x) for x in iterable]` on `workers` processes/threads: in completion order (`unordered=True`) or input
    order; with `callback`, each result is passed to it instead and nothing is returned."""
    generator = parallel_apply_generator(func, iterable, workers, max_queue_size, dummy, random_seeds)
    if callback is not None:
        for _, result in generator:
            callback(result)
        return None
    results = list(generator)
    if not unordered:
        results.sort(key=lambda pair: pair[0])
    return [result for _, result in results]

