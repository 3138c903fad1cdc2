"""Gradient checkpointing: a function whose activations are recomputed in the backward pass instead of kept."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import keras


def seed_states(layer: keras.layers.Layer) -> list:
    """The state variables of the seed generators (dropout) inside `layer`."""
    weights = {id(w) for w in layer.weights}
    return [v for v in layer.variables if id(v) not in weights]


def recompute_grad(fn: Callable, states: Sequence = ()) -> Callable:
    """`fn(*tensors)` that keeps none of its intermediate activations for the backward pass and recomputes them
    there: `keras.remat` (TensorFlow `tf.recompute_grad`, JAX `jax.checkpoint`, PyTorch
    `torch.utils.checkpoint`).

    `states`: seed-generator state variables `fn` advances (its dropout layers, see `seed_states`). Each run of `fn`
    starts from the states read before the forward pass, so the recomputation draws the same dropout masks as the
    forward pass and ends in the same states; without this, dropout would differ between the two and the gradients
    would be those of another forward pass."""
    if not states:
        return keras.remat(fn)
    if keras.backend.backend() == "jax":
        return _jax_recompute_grad(fn, states)

    def wrapped(*tensors):
        start = [keras.ops.copy(state.value) for state in states]

        def from_start(*args):
            for state, value in zip(states, start):
                state.assign(value)
            return fn(*args)

        return keras.remat(from_start)(*tensors)

    return wrapped


def _jax_recompute_grad(fn: Callable, states: Sequence) -> Callable:
    """JAX: the states enter and leave `jax.checkpoint` as arguments and outputs (a state assigned inside it and read
    after it would leak a tracer of the checkpointed function)."""

    def pure(tensors, start):
        for state, value in zip(states, start):
            state.assign(value)
        return fn(*tensors), [state.value for state in states]

    def wrapped(*tensors):
        outputs, end = keras.remat(pure)(tensors, [state.value for state in states])
        for state, value in zip(states, end):
            state.assign(value)
        return outputs

    return wrapped
