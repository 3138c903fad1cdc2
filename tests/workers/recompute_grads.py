"""Gradients of one loss for a tiny BERT built with and without `recompute=True`, on one backend; prints JSON.

    python recompute_grads.py tensorflow|jax|torch DROPOUT [fit]

Run in a fresh process: the backend is fixed at start-up. Both models start from the same seed (same weights and
dropout seeds); the loss is a fixed random projection of the sequence output, in training mode. With `fit`, also the
losses of three compiled training steps of each.
"""
import json
import os
import sys

BACKEND, DROPOUT, FIT = sys.argv[1], float(sys.argv[2]), sys.argv[3:] == ["fit"]
os.environ["KERAS_BACKEND"] = BACKEND
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from bert4k import build_transformer_model

CONFIG = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
              max_position_embeddings=64, type_vocab_size=2, hidden_dropout_prob=DROPOUT,
              attention_probs_dropout_prob=DROPOUT)
rng = np.random.default_rng(0)
IDS = rng.integers(1, 50, (2, 12)).astype("int32")
IDS[1, 9:] = 0  # padding: the mask enters the recomputed blocks
PROJECTION = rng.standard_normal((2, 12, 32)).astype("float32") / 100


def gradients(recompute: bool) -> tuple[list[np.ndarray], bool]:
    """The loss gradients for every trainable weight, and whether the differentiated program rematerialises."""
    keras.utils.set_random_seed(3)
    model = build_transformer_model(CONFIG, recompute=recompute)
    x = [IDS, np.zeros_like(IDS)]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True) * PROJECTION)
        return [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)], recompute
    if BACKEND == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def loss(trainable):
            y, _ = model.stateless_call(trainable, frozen, x, training=True)
            return (y * PROJECTION).sum()

        program = str(jax.make_jaxpr(jax.grad(loss))(trainable))
        return [np.asarray(g) for g in jax.jit(jax.grad(loss))(trainable)], ("remat" in program or "checkpoint" in program)
    import torch

    (model(x, training=True) * torch.tensor(PROJECTION)).sum().backward()
    return [v.value.grad.numpy() for v in model.trainable_variables], recompute


def train_losses(recompute: bool) -> list[float]:
    """Three compiled training steps (`train_on_batch`), dropout seeds advancing between them."""
    keras.utils.set_random_seed(3)
    model = build_transformer_model(CONFIG, with_mlm=True, recompute=recompute)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return [float(model.train_on_batch([IDS, np.zeros_like(IDS)], IDS)) for _ in range(3)]


plain, plain_remat = gradients(False)
recomputed, remat = gradients(True)
result = {"max_diff": max(float(np.abs(a - b).max()) for a, b in zip(plain, recomputed)),
          "max_grad": max(float(np.abs(a).max()) for a in plain), "count": len(plain),
          "plain_rematerialises": plain_remat, "recompute_rematerialises": remat}
if FIT:
    result.update(losses=train_losses(False), losses_recompute=train_losses(True))
print(json.dumps(result))
