"""Padding and truncation of token sequences (numpy): the batch-level helpers every data pipeline needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["sequence_padding", "truncate_sequences"]


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
