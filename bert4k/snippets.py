"""bert4keras-compatible helpers: padding, truncation, text splitting, data generators, file access.

Scripts written for `bert4keras.snippets` keep working after `bert4keras` -> `bert4k`.
"""

from __future__ import annotations

import builtins
import json
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DataGenerator",
    "ViterbiDecoder",
    "open",
    "sequence_padding",
    "text_segmentate",
    "to_array",
    "truncate_sequences",
]


def to_array(*args: Any) -> np.ndarray | list[np.ndarray]:
    """Convert each argument to a numpy array; one argument gives one array, several a list."""
    arrays = [np.array(a) for a in args]
    return arrays[0] if len(arrays) == 1 else arrays


def sequence_padding(
    inputs: Sequence,
    length: int | Sequence[int] | None = None,
    value: Any = 0,
    seq_dims: int = 1,
    mode: str = "post",
) -> np.ndarray:
    """Pad (or cut) sequences to one length and stack them into an array.

    The first `seq_dims` axes of every input are sequence axes; trailing axes must agree.
    `length` (an int for all sequence axes, or one per axis) defaults to the longest input.
    `mode="post"` pads at the end, `"pre"` at the start. Longer inputs keep their first
    `length` items in both modes, as in bert4keras.
    """
    if mode not in ("post", "pre"):
        raise ValueError(f'mode must be "post" or "pre", got {mode!r}')
    if len(inputs) == 0:
        raise ValueError("sequence_padding needs at least one sequence")
    arrays = [np.asarray(x) for x in inputs]
    for a in arrays:
        if a.ndim < seq_dims:
            raise ValueError(f"input of shape {a.shape} has fewer than seq_dims={seq_dims} axes")
    if length is None:
        length = np.max([a.shape[:seq_dims] for a in arrays], axis=0)
    elif np.ndim(length) == 0:
        length = [length] * seq_dims
    if len(length) != seq_dims:
        raise ValueError(f"length {list(length)} must give one size per sequence axis ({seq_dims})")
    # An empty list becomes a float array; don't let it decide the output dtype.
    non_empty = [a.dtype for a in arrays if a.size]
    dtype = np.result_type(*non_empty) if non_empty else arrays[0].dtype

    outputs = []
    for a in arrays:
        a = a[tuple(slice(0, n) for n in length)]
        missing = [n - s for n, s in zip(length, a.shape)]
        widths = [(0, m) if mode == "post" else (m, 0) for m in missing]
        widths += [(0, 0)] * (a.ndim - seq_dims)
        outputs.append(np.pad(a.astype(dtype), widths, constant_values=value))
    return np.stack(outputs)


def truncate_sequences(maxlen: int, indices: int | Sequence[int], *sequences: list) -> list[list]:
    """Shorten lists in place until their total length is at most `maxlen`.

    Each step removes one item, at position `indices` (one index, or one per sequence; -1 drops
    the last item, 0 the first) from the currently longest list. `None` sequences are skipped.
    Returns the remaining sequences.
    """
    if maxlen < 0:
        raise ValueError(f"maxlen must be >= 0, got {maxlen}")
    sequences = [s for s in sequences if s is not None]
    if isinstance(indices, int):
        indices = [indices] * len(sequences)
    elif len(indices) != len(sequences):
        raise ValueError(f"got {len(indices)} indices for {len(sequences)} sequences")
    lengths = [len(s) for s in sequences]
    while sum(lengths) > maxlen:
        i = int(np.argmax(lengths))
        sequences[i].pop(indices[i])
        lengths[i] -= 1
    return sequences


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


def _keras_batch(batch):
    """Lists of arrays → tuples (Keras 3 reads a list as one tensor); a trailing `None` (no targets) removed."""
    def as_tuples(x):
        if isinstance(x, (list, tuple)) and x and all(np.ndim(v) > 0 or v is None for v in x):
            return tuple(as_tuples(v) for v in x)
        return x

    batch = as_tuples(batch)
    if isinstance(batch, tuple) and len(batch) > 1 and batch[-1] is None:
        batch = batch[:-1]
    return batch


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

    def forfit(self, random: bool = True) -> Iterator:
        """Repeat `__iter__(random)` forever, e.g. for `model.fit(..., steps_per_epoch=len(g))`.

        Batches are made Keras-3-ready: lists become tuples (Keras 3 reads a list as one tensor spec) and a
        `None` target is dropped (bert4keras' `yield [x1, x2], None` for models whose loss is a `Loss` layer)."""
        while True:
            empty = True
            for batch in self.__iter__(random):
                empty = False
                yield _keras_batch(batch)
            if empty:
                raise ValueError(f"{type(self).__name__}.__iter__ yielded nothing")

    def fortest(self, random: bool = False) -> Iterator:
        """Like `forfit` but yields only the inputs (`batch[0]`)."""
        for batch in self.forfit(random):
            yield batch[0]

    def to_dataset(self, types, shapes, names=None, padded_batch: bool = False):
        """An endless, batched `tf.data.Dataset` over the examples `__iter__(True)` yields.

        `types` and `shapes` mirror one example's structure (e.g. `("int32", "int32")` and
        `([None], [])`). `names` turns a level into dicts: one name, a tuple of names, or a
        tuple of name tuples (e.g. `(("Input-Token", "Input-Segment"), ("label",))`).
        With `padded_batch`, examples may differ in length and are padded to `shapes`
        (None = the longest in the batch).
        """
        import tensorflow as tf

        def name(values):
            if names is None:
                return values
            if isinstance(names, str):
                return {names: values}
            if isinstance(names[0], str):
                return dict(zip(names, values))
            return tuple(dict(zip(k, v)) for k, v in zip(names, values))

        types, shapes = name(types), name(shapes)
        signature = _signature(types, shapes, tf, any_length=padded_batch)

        def generator():
            for example in self.forfit():
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


class ViterbiDecoder:
    """Best label path under transition scores, for CRF-style sequence labelling.

    `trans[i, j]` scores moving from label i to label j; `starts` / `ends` optionally restrict
    which labels may begin or end a path.
    """

    def __init__(self, trans, starts: Sequence[int] | None = None, ends: Sequence[int] | None = None):
        self.trans = np.asarray(trans, dtype=float)
        labels = range(len(self.trans))
        self.non_starts = [i for i in labels if starts is not None and i not in starts]
        self.non_ends = [i for i in labels if ends is not None and i not in ends]

    def decode(self, nodes) -> np.ndarray:
        """Label ids maximising the sum of `nodes[t, label]` and transitions; nodes: [steps, labels]."""
        nodes = np.array(nodes, dtype=float)
        nodes[0, self.non_starts] = -np.inf
        nodes[-1, self.non_ends] = -np.inf
        scores, backpointers = nodes[0], []
        for emission in nodes[1:]:
            total = scores[:, None] + self.trans + emission[None, :]
            backpointers.append(total.argmax(axis=0))
            scores = total.max(axis=0)
        path = [int(scores.argmax())]
        for pointers in reversed(backpointers):
            path.append(int(pointers[path[-1]]))
        return np.array(path[::-1])


# bert4keras' decoder base class, running on bert4k's decoding engine (see bert4k.generation.autoregressive).
from bert4k.generation.autoregressive import AutoRegressiveDecoder

__all__ += ["AutoRegressiveDecoder"]
