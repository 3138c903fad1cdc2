"""`recompute=True` (gradient checkpointing): the same gradients as without it, with the blocks' forward pass run
again in the backward pass; the option survives `get_config` and `.keras`."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from bert4k import build_transformer_model
from bert4k.layers.block import TransformerBlock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "workers", "recompute_grads.py")
CONFIG = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
              max_position_embeddings=64, type_vocab_size=2, hidden_dropout_prob=0.1,
              attention_probs_dropout_prob=0.1)


def _batch():
    ids = np.random.default_rng(0).integers(1, 50, (2, 12)).astype("int32")
    ids[1, 9:] = 0
    return [ids, np.zeros_like(ids)]


def _gradients(model, graph: bool):
    x = _batch()
    projection = np.random.default_rng(1).standard_normal((2, 12, model.output.shape[-1])).astype("float32")

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True) * projection)
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]

    return [g.numpy() for g in (tf.function(step)() if graph else step())]


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_tensorflow_gradients_equal_and_blocks_run_again(graph, monkeypatch):
    """With dropout on: the recomputation must draw the forward pass's dropout masks to give the same gradients."""
    runs = []
    forward = TransformerBlock._forward
    monkeypatch.setattr(TransformerBlock, "_forward", lambda self, *a: runs.append(self.name) or forward(self, *a))
    results = {}
    for recompute in (False, True):
        keras.utils.set_random_seed(3)
        model = build_transformer_model(CONFIG, application="unilm", recompute=recompute)
        runs.clear()
        results[recompute] = _gradients(model, graph)
        assert runs.count("Transformer-0") == (2 if recompute else 1), runs
    for plain, recomputed in zip(results[False], results[True]):
        np.testing.assert_allclose(recomputed, plain, rtol=0, atol=1e-5)
    assert max(np.abs(g).max() for g in results[False]) > 0.1  # gradients that could differ


def _worker(backend: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, WORKER, backend, "0.1", *args], check=False, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["count"] == 37 and result["max_grad"] > 0.1, result
    assert result["max_diff"] <= 1e-5, result
    return result


def test_jax_gradients_equal():
    result = _worker("jax")
    assert result["recompute_rematerialises"] and not result["plain_rematerialises"], result  # jax.checkpoint in


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_compiled_training_steps_equal(backend):
    """Three `train_on_batch` steps with dropout: the same losses with and without recompute (the dropout seeds
    advance identically), and on PyTorch the same gradients."""
    result = _worker(backend, "fit")
    np.testing.assert_allclose(result["losses_recompute"], result["losses"], rtol=1e-5)


def test_recompute_kept_in_config_and_keras_file(tmp_path):
    model = build_transformer_model(CONFIG, recompute=True)
    assert model.get_config()["recompute"] is True
    assert all(block.get_config()["recompute"] for block in model.blocks)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert restored.recompute and all(block.recompute for block in restored.blocks)
    x = _batch()
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_recompute_model_predicts_like_plain():
    """Inference is unchanged."""
    config = {**CONFIG, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    models = []
    for recompute in (False, True):
        keras.utils.set_random_seed(0)
        models.append(build_transformer_model(config, application="lm", recompute=recompute))
    x = _batch()
    np.testing.assert_allclose(models[1].predict(x, verbose=0), models[0].predict(x, verbose=0), atol=1e-6)
