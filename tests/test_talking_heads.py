"""Talking-heads attention: the layer against a numpy implementation of Shazeer et al.'s formula (with unequal head
counts, a mask and a position bias), every application mask on the one stack, the KV cache, `.keras` round trip."""
import keras
import numpy as np
import pytest

from bert4k import build_transformer_model, masks
from bert4k.layers.talking_heads import TalkingHeadsAttention
from tests.oracles.hf import random_ids
from tests.oracles.perturbation import check_application_masks, predict

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
OPTIONS = {"softmax_heads": 3, "value_heads": 4}


def randomize(model, seed=0):
    """Random (non-identity) mixing matrices, so the tests see the heads talk."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith("_mixing"):
            w.assign(rng.normal(size=w.shape).astype("float32"))
    return model


def dense(x, layer):
    return x @ layer.kernel.numpy() + layer.bias.numpy()


def numpy_talking_heads(layer, x, mask, bias):
    """Shazeer et al. 2020, eq. in §2, in float64."""
    b, n, _ = x.shape
    hk, hv, dk, dv = layer.heads, layer.value_heads, layer.key_size, layer.head_size
    q = dense(x, layer.query).reshape(b, n, hk, dk)
    k = dense(x, layer.key).reshape(b, n, hk, dk)
    v = dense(x, layer.value).reshape(b, n, hv, dv)
    logits = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(dk)
    logits = np.einsum("bhij,hl->blij", logits, layer.logits_mixing.numpy()) + bias
    logits = np.where(mask[:, None], logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights = weights / weights.sum(-1, keepdims=True)
    weights = np.einsum("blij,lv->bvij", weights, layer.weights_mixing.numpy())
    out = np.einsum("bvij,bjvd->bivd", weights, v).reshape(b, n, hv * dv)
    return dense(out, layer.attention_output)


def test_layer_equals_numpy_formula():
    layer = TalkingHeadsAttention(2, 4, key_size=5, **OPTIONS)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 8)).astype("float32")
    layer.build(x.shape)
    randomize(layer)
    ids = np.arange(1, 8, dtype="int32")[None].repeat(2, 0)
    ids[1, 5:] = 0
    mask = keras.ops.convert_to_numpy(masks.causal_mask(ids))
    mask[1, 5:, 0] = True  # padding rows see something (an all-masked row is undefined in the oracle)
    bias = rng.normal(size=(1, 3, 7, 7)).astype("float32")
    got = keras.ops.convert_to_numpy(layer(x, attention_mask=mask, position_bias=bias))
    np.testing.assert_allclose(got, numpy_talking_heads(layer, x.astype(np.float64), mask, bias), atol=1e-4)
    assert [tuple(w.shape) for w in (layer.logits_mixing, layer.weights_mixing, layer.value.kernel)] == [
        (2, 3), (3, 4), (8, 16)]


def test_fresh_layer_with_equal_heads_is_plain_attention():
    from bert4k.layers.attention import MultiHeadAttention

    x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")
    talking, plain = TalkingHeadsAttention(2, 4), MultiHeadAttention(2, 4)
    talking.build(x.shape)
    plain.build(x.shape)
    for name in ("query", "key", "value", "attention_output"):
        for a, b in zip(getattr(plain, name).weights, getattr(talking, name).weights):
            b.assign(a)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(talking(x)), keras.ops.convert_to_numpy(plain(x)),
                               atol=1e-6)


def build(application, **kwargs):
    keras.utils.set_random_seed(0)
    model = build_transformer_model(TINY, application=application, attention="talking_heads",
                                    attention_options=OPTIONS, logits=True, **kwargs)
    return randomize(model)


def test_every_application_mask_is_honoured():
    check_application_masks(build, TINY["vocab_size"])


def test_cached_decoding_equals_full_pass():
    model = build("lm")
    ids = random_ids(2, 7, TINY["vocab_size"], seed=3, low=10)
    full = predict(model, ids, np.zeros_like(ids))
    cache = [(np.zeros((2, 7, 2, 8), "float32"), np.zeros((2, 7, 4, 8), "float32")) for _ in model.blocks]
    outs = []
    for start, stop in [(0, 3), (3, 4), (4, 5), (5, 6), (6, 7)]:
        mask = np.zeros((2, stop - start, 7), bool)
        mask[:, :, :stop] = np.tril(np.ones((stop, stop), bool))[start:stop] & (ids[:, None, :stop] != 0)
        positions = np.arange(start, stop, dtype="int32")[None].repeat(2, 0)
        logits, cache = model.call_with_cache(ids[:, start:stop], mask, cache, start, positions=positions)
        outs.append(keras.ops.convert_to_numpy(logits))
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, atol=1e-4)


def test_fit_step_and_keras_round_trip(tmp_path):
    model = build("mlm")
    ids = random_ids(4, 9, TINY["vocab_size"], seed=4)
    zeros = np.zeros_like(ids)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mixing = [w for w in model.weights if w.path.endswith("_mixing")]
    before = [w.numpy().copy() for w in mixing]
    model.fit([ids, zeros], ids, epochs=1, batch_size=4, verbose=0)
    assert all(not np.array_equal(a, w.numpy()) for a, w in zip(before, mixing))
    model.save(tmp_path / "talking.keras")
    loaded = keras.saving.load_model(tmp_path / "talking.keras")
    assert loaded.get_config()["attention"] == "talking_heads"
    np.testing.assert_array_equal(predict(loaded, ids, zeros), predict(model, ids, zeros))


def test_errors():
    with pytest.raises(ValueError, match=r"does not take attention_options \['rank'\]"):
        build_transformer_model(TINY, attention="talking_heads", attention_options={"rank": 2})
    with pytest.raises(ValueError, match="attention must be one of"):
        build_transformer_model(TINY, attention="talking-heads")
    layer = TalkingHeadsAttention(2, 4)
    with pytest.raises(ValueError, match="boolean"):
        layer(np.zeros((1, 3, 8), "float32"), attention_mask={"causal": {}})
