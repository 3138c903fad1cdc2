"""Model inputs given as nested Python lists (bert4keras' `model.predict([[token_ids], [segment_ids]])`)."""
from __future__ import annotations

from typing import Any

import numpy as np


def _as_array(value: Any, which: str) -> Any:
    if not isinstance(value, (list, tuple)):
        return value
    try:
        return np.asarray(value)
    except ValueError as error:
        raise ValueError(f"predict: {which} is a ragged nested list ({error}); pad it first, e.g. with "
                         "bert4k.padding.sequence_padding") from error


def as_input_arrays(x: Any, num_inputs: int) -> Any:
    """`x` with every input that is a nested Python list turned into a numpy array; anything else unchanged.

    For a one-input model a list of lists is that input; for an n-input model a list of n items is one item
    per input."""
    if num_inputs == 1 and isinstance(x, (list, tuple)) and not any(hasattr(v, "shape") for v in x):
        return _as_array(x, "the input")
    if isinstance(x, (list, tuple)) and len(x) == num_inputs:
        return [_as_array(v, f"input {i}") for i, v in enumerate(x)]
    return x
