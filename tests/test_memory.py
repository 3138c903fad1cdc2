"""Loading a checkpoint without extra copies: block-wise assignment, deferred initialization, and the memory bench."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from bert4k import build_transformer_model
from bert4k.checkpoints.assign import assign_array
from bert4k.models.checkpoint_io import export_checkpoint, load_checkpoint
from tests.test_families import GOOGLE_ALBERT, HF_BERT, HF_GPT2, HF_T5, HF_T5_V11

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("source", ["contiguous", "float64", "strided"])
def test_assign_array_in_blocks_writes_every_value(source):
    rng = np.random.default_rng(0)
    value = rng.standard_normal((37, 11) if source != "strided" else (11, 37)).astype("float64")
    value = value.T if source == "strided" else value
    value = value.astype("float32") if source == "contiguous" else value
    variable = keras.Variable(np.zeros((37, 11), "float32"))
    assign_array(variable, value, block_bytes=3 * 11 * 4)  # 3 rows a block, the last block short
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value.astype("float32"))


CASES = [("bert", HF_BERT, {"with_pool": True}),  # the pooler is not in the checkpoint
         ("bert", HF_BERT, {"layer_norm_cond": 8, "layer_norm_cond_hidden_size": 4}),  # no checkpoint names
         ("bert", HF_BERT, {"attention": "talking_heads"}),
         ("albert", GOOGLE_ALBERT, {"with_pool": True}),
         ("gpt2", HF_GPT2, {}), ("t5", HF_T5, {}), ("t5.1.1", HF_T5_V11, {})]


@pytest.mark.parametrize("family,config,kwargs", CASES, ids=[f"{c[0]}-{'-'.join(c[2]) or 'plain'}" for c in CASES])
def test_deferred_build_equals_build_then_load(tmp_path, family, config, kwargs):
    """`build_transformer_model(config, checkpoint)` (deferred initial values) gives the same weights, bit for bit, as
    building (random values drawn) and then loading: loaded weights from the checkpoint, the others the same draws."""
    keras.utils.set_random_seed(1)
    path = export_checkpoint(build_transformer_model(config, model=family), tmp_path)
    keras.utils.set_random_seed(7)
    ordinary = build_transformer_model(config, model=family, **kwargs)
    load_checkpoint(ordinary, path)
    keras.utils.set_random_seed(7)
    deferred = build_transformer_model(config, path, model=family, **kwargs)
    assert [w.path for w in deferred.weights] == [w.path for w in ordinary.weights]
    for a, b in zip(ordinary.weights, deferred.weights):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.path)
    if kwargs.get("with_pool"):
        assert np.std(deferred.get_layer("Pooler-Dense").kernel.numpy()) > 0.01  # drawn, not left at zero


def test_loaded_weights_draw_no_random_values(tmp_path, monkeypatch):
    keras.utils.set_random_seed(1)
    path = export_checkpoint(build_transformer_model(HF_BERT), tmp_path)
    drawn = []
    original = keras.initializers.TruncatedNormal.__call__

    def counting(self, shape, dtype=None):
        drawn.append(tuple(shape))
        return original(self, shape, dtype=dtype)

    monkeypatch.setattr(keras.initializers.TruncatedNormal, "__call__", counting)
    build_transformer_model(HF_BERT, path)
    assert drawn == []
    build_transformer_model(HF_BERT, path, with_pool=True)
    assert drawn == [(32, 32)]  # the pooler kernel only


def _bench(*args) -> dict:
    out = subprocess.run([sys.executable, os.path.join(REPO, "bench", "bench_memory.py"), *args], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_load_holds_no_second_copy_of_the_weights():
    """2 layers × 768 with a 21128-row vocabulary: what the load adds beyond the weights stays under two copies of
    the largest tensor (the word embeddings); a random initialisation overwritten by the load, or a whole-tensor
    conversion, each cost more than that."""
    result = _bench("--layers", "2")
    assert result["peak_mb"] - result["after_imports_mb"] - result["weights_mb"] < 2 * result["largest_tensor_mb"], result


@pytest.mark.slow
def test_bert_base_peak_within_one_and_a_half_weights():
    result = _bench()
    assert result["peak_over_weights"] <= 1.5, result
