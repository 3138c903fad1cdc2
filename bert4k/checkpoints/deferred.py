"""Build a model without drawing the random initial values that a checkpoint load overwrites.

`with deferred_initialization() as calls:` builds with zeros in place of bert4k's random initializers and
records each call; after the load, `initialize_unloaded(model, calls, loaded)` draws, for the weights the load did
not assign, exactly the values an ordinary build would have given them (each initializer instance keeps its seed).
Drawing truncated normals for BERT-base takes longer than the rest of building it, and its temporaries raise the
peak memory of a load.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bert4k.layers.initializers import DEFERRED_CALLS, DeferredCall


@contextlib.contextmanager
def deferred_initialization() -> Iterator[list[DeferredCall]]:
    """Within: bert4k's random initializers give zeros; yields the list of the calls answered so."""
    calls: list[DeferredCall] = []
    token = DEFERRED_CALLS.set(calls)
    try:
        yield calls
    finally:
        DEFERRED_CALLS.reset(token)


def _parent_path(variable) -> str:
    return variable.path.rpartition("/")[0]


def deferred_variables(model, calls: list[DeferredCall]) -> list[tuple[object, DeferredCall]]:
    """Pair each deferred call with the variable of `model` it initialised.

    A call knows its layer's path and the shape; within one layer, calls and variables of one shape pair in creation
    order. Raises `RuntimeError` when a layer holds a different number of such variables than calls (a pairing
    that could hand one weight's initial values to another)."""
    by_key: dict[tuple[str, tuple], list] = {}
    for variable in model.weights:
        by_key.setdefault((_parent_path(variable), tuple(variable.shape)), []).append(variable)
    calls_by_key: dict[tuple[str, tuple], list[DeferredCall]] = {}
    for call in calls:
        calls_by_key.setdefault((call.parent_path, call.shape), []).append(call)
    pairs = []
    for key, group in calls_by_key.items():
        variables = by_key.get(key, [])
        if len(variables) != len(group):
            raise RuntimeError(f"deferred initialization: layer {key[0]!r} made {len(group)} deferred weight(s) of "
                               f"shape {key[1]} but holds {len(variables)} of that shape")
        pairs.extend(zip(variables, group))
    return pairs


def initialize_unloaded(model, calls: list[DeferredCall], loaded: set[int]) -> list[str]:
    """Give every deferred variable whose `id` is not in `loaded` its ordinary random initial value; returns their
    paths."""
    initialized = []
    for variable, call in deferred_variables(model, calls):
        if id(variable) not in loaded:
            variable.assign(call.initializer(call.shape, dtype=call.dtype))
            initialized.append(variable.path)
    return initialized
