"""KV-cache writes are functional on every public path: a cache made inside a compiled function (where TensorFlow
folds it into a constant) is the same zeros on every call, and a cache passed in is never modified.

Oracle: numpy attention over the keys / values written so far."""
import keras
import numpy as np
import pytest
from keras import ops

from bert4k.config import TransformerConfig
from bert4k.layers.attention import MultiHeadAttention
from bert4k.layers.kv_cache import cache_rows, write_cache
from bert4k.models.t5 import T5
from bert4k.models.transformer import Transformer


def compiled(fn):
    """`fn` compiled the backend's way (where the bug lived: TF folds a zeros cache made inside into a constant)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


@pytest.mark.parametrize("shape", [(6, 5, 4), (2, 5, 3, 4)])
def test_write_cache_leaves_its_input_alone(shape):
    cache = ops.zeros(shape)
    update = np.random.default_rng(0).normal(size=(shape[0], 2, *shape[2:])).astype("float32")
    out = write_cache(cache, update, 2)
    assert float(ops.sum(ops.abs(cache))) == 0.0
    expected = np.zeros(shape, "float32")
    expected[:, 2:4] = update
    np.testing.assert_array_equal(ops.convert_to_numpy(out), expected)


@pytest.mark.parametrize("shape", [(6, 5, 4), (2, 5, 3, 4)])
def test_write_cache_in_place_writes_the_same_rows(shape):
    """The engine's in-place write (TensorFlow `InplaceUpdate`, PyTorch `copy_`; JAX: functional) equals numpy's."""
    rng = np.random.default_rng(1)
    start = rng.normal(size=shape).astype("float32")
    update = rng.normal(size=(shape[0], 2, *shape[2:])).astype("float32")
    out = write_cache(ops.convert_to_tensor(start), ops.convert_to_tensor(update), 1, in_place=True)
    expected = start.copy()
    expected[:, 1:3] = update
    np.testing.assert_array_equal(ops.convert_to_numpy(out), expected)


def test_cache_rows_are_the_heads_of_each_row():
    cache = np.arange(3 * 2 * 4).reshape(3 * 2, 4)  # rows 0..2, heads 0..1
    picked = ops.convert_to_numpy(ops.take(cache, cache_rows(np.array([2, 0, 2], "int32"), 2), axis=0))
    np.testing.assert_array_equal(picked, cache.reshape(3, 2, 4)[[2, 0, 2]].reshape(6, 4))


def test_a_cache_in_the_old_token_major_layout_is_refused():
    layer = MultiHeadAttention(heads=2, head_size=4)
    x = np.zeros((1, 1, 8), "float32")
    layer(x)
    stale = (np.zeros((1, 3, 2, 4), "float32"),) * 2
    with pytest.raises(ValueError, match=r"cache must be \[batch \* heads \(2\), length, size=4\].*got shape "
                                         r"\(1, 3, 2, 4\)"):
        layer(x, attention_mask=np.ones((1, 1, 3), bool), cache=stale, cache_index=0)


def numpy_attention(q, k, v):
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", probs, v)


def test_attention_cache_made_inside_a_compiled_function_is_fresh_each_call():
    layer = MultiHeadAttention(heads=2, head_size=4)
    x = np.random.default_rng(0).normal(size=(1, 1, 8)).astype("float32")
    layer(x)

    @compiled
    def step(x):
        cache = layer.init_cache(1, 3)
        mask = ops.convert_to_tensor(np.array([[[True, False, False]]]))
        return layer(x, attention_mask=mask, cache=cache, cache_index=0)

    sums = [float(ops.sum(step(x)[1][0])) for _ in range(3)]
    assert sums[0] == sums[1] == sums[2] != 0.0
    out, (k, _) = step(x)
    q = ops.convert_to_numpy(layer._split_heads(layer.query(x), 4))
    k_new, v_new = (ops.convert_to_numpy(t) for t in layer.project_key_value(x))
    np.testing.assert_allclose(ops.convert_to_numpy(k)[:, :1], k_new.transpose(0, 2, 1, 3).reshape(2, 1, 4), atol=1e-6)
    heads = numpy_attention(q, k_new, v_new).reshape(1, 1, 8)
    reference = ops.convert_to_numpy(layer.attention_output(heads))
    np.testing.assert_allclose(ops.convert_to_numpy(out), reference, atol=1e-5)


def test_transformer_call_with_cache_in_a_compiled_function_repeats():
    cfg = TransformerConfig(vocab_size=23, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=24, max_position_embeddings=16, type_vocab_size=0, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0)
    model = Transformer(cfg, application="lm")
    ids = np.array([[3, 5, 7]], "int32")
    full = ops.convert_to_numpy(model(ids))

    @compiled
    def prefill(ids):
        cache = model.init_cache(1, 4)
        mask = ops.convert_to_tensor(np.tril(np.ones((3, 4), bool), 0)[None])
        return model.call_with_cache(ids, mask, cache, 0)

    for _ in range(3):  # the bug: each call wrote on top of the last call's keys
        probs, cache = prefill(ids)
        np.testing.assert_allclose(ops.convert_to_numpy(probs), full, atol=1e-5)
    cache_keys = ops.convert_to_numpy(cache[0][0])
    assert cache_keys.shape == (1 * 2, 4, 8)
    assert np.abs(cache_keys[:, 3]).max() == 0.0


def test_t5_init_cache_and_decode_step_do_not_alias():
    cfg = TransformerConfig(vocab_size=23, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=24, key_size=8, relative_attention_num_buckets=8,
                            hidden_dropout_prob=0.0, feed_forward_proj="relu", pad_token_id=0)
    model = T5(cfg, logits=True)
    enc = np.array([[4, 5, 6, 0]], "int32")
    dec = np.array([[0, 9]], "int32")
    full = ops.convert_to_numpy(model([enc, dec]))
    context = model.encode(enc)
    context_cache, context_mask = model.context_cache(context), model.encoder_mask(enc)

    @compiled
    def first(token):
        return model.decode_step(token, model.init_cache(1, 4), 0, context_cache, context_mask)

    for _ in range(3):
        logits, cache = first(dec[:, :1])
        np.testing.assert_allclose(ops.convert_to_numpy(logits)[:, 0], full[:, 0], atol=1e-5)
    kept = ops.convert_to_numpy(cache[0][0]).copy()
    logits, _ = model.decode_step(dec[:, 1:], cache, 1, context_cache, context_mask)
    np.testing.assert_allclose(ops.convert_to_numpy(logits)[:, 0], full[:, 1], atol=1e-5)
    np.testing.assert_array_equal(ops.convert_to_numpy(cache[0][0]), kept)  # the step left its input alone


def test_compiled_decoding_loop_copies_no_cache_and_no_embedding_table():
    """XLA's optimised loop body (TF-XLA and JAX, greedy, batch 1) holds no cache-sized copy or transpose: a step writes
    its rows in place and the attention reads the cache where it lies; nor an op as large as the `[vocab, hidden]`
    table: the tied head reads the table where it lies (written `h · tableᵀ`, XLA copied the transposed table every
    step). `bench/decoding_hlo.py` reads the HLO dump."""
    import json
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, os.path.join(repo, "bench", "decoding_hlo.py"), "--prompt", "96",
                             "--vocab", "3000"],
                            check=False, env={**os.environ, "PYTHONPATH": repo}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["backend"] for r in reports] == ["tensorflow", "jax"]
    for report in reports:
        assert report["modules"] > 0, report
        assert report["cache_sized_ops_in_loop"] == [], report
        assert report["table_sized_ops_in_loop"] == [], report
