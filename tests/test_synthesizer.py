"""Synthesizer attention (dense / random / factorized random): the layer against numpy implementations of Tay et
al.'s formulas under a mask, every application mask on the one stack, the fixed maximum length, the refused KV cache,
and the `.keras` round trip."""
import keras
import numpy as np
import pytest

from bert4k import build_transformer_model, generate, masks
from bert4k.layers.synthesizer import SynthesizerAttention
from tests.oracles.hf import random_ids
from tests.oracles.perturbation import check_application_masks, predict

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
KINDS = ["dense", "random", "factorized"]


def dense(x, layer):
    return x @ layer.kernel.numpy() + layer.bias.numpy()


def numpy_synthesizer(layer, x, mask):
    """Tay et al. 2020 §3: B from the token (dense) or free parameters (random, R1·R2ᵀ), softmax, times V."""
    b, n, _ = x.shape
    h, d, length = layer.heads, layer.head_size, layer.max_length
    if layer.synthesizer == "dense":
        hidden = np.maximum(dense(x, layer.synth_hidden), 0)
        logits = dense(hidden, layer.synth_logits).reshape(b, n, h, length).transpose(0, 2, 1, 3)[..., :n]
    elif layer.synthesizer == "random":
        logits = np.broadcast_to(layer.random_logits.numpy()[None, :, :n, :n], (b, h, n, n))
    else:
        r1, r2 = layer.factor_query.numpy()[:, :n], layer.factor_key.numpy()[:, :n]
        logits = np.broadcast_to(np.einsum("hir,hjr->hij", r1, r2)[None], (b, h, n, n))
    logits = np.where(mask[:, None], logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights = weights / weights.sum(-1, keepdims=True)
    v = dense(x, layer.value).reshape(b, n, h, d)
    out = np.einsum("bhij,bjhd->bihd", weights, v).reshape(b, n, h * d)
    return dense(out, layer.attention_output)


@pytest.mark.parametrize("kind", KINDS)
def test_layer_equals_numpy_formula(kind):
    layer = SynthesizerAttention(2, 4, synthesizer=kind, max_length=9, rank=3, initializer_range=0.5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 8)).astype("float32")
    layer.build(x.shape)
    ids = np.arange(1, 8, dtype="int32")[None].repeat(2, 0)
    ids[1, 5:] = 0
    segments = np.array([[0, 0, 0, 1, 1, 1, 1]] * 2, "int32")
    segments[ids == 0] = 0
    mask = keras.ops.convert_to_numpy(masks.unilm_mask(ids, segments))
    got = keras.ops.convert_to_numpy(layer(x, attention_mask=mask))
    np.testing.assert_allclose(got, numpy_synthesizer(layer, x.astype(np.float64), mask), atol=1e-4)
    if kind != "dense":  # random kinds: the attention weights ignore the content; only V carries it
        other = x.copy()
        other[:, 4] += 1.0
        moved = np.abs(keras.ops.convert_to_numpy(layer(other, attention_mask=mask)) - got).max(-1)
        assert (moved[0, :4] == 0).all() and (moved[0, 4:] > 1e-4).all()  # rows 0–3 cannot see target 4


def build(kind):
    def build_for(application):
        keras.utils.set_random_seed(0)
        return build_transformer_model(TINY, application=application, attention=f"synthesizer_{kind}",
                                       attention_options={"rank": 4} if kind == "factorized" else None, logits=True,
                                       initializer_range=0.2)
    return build_for


@pytest.mark.parametrize("kind", KINDS)
def test_every_application_mask_is_honoured(kind):
    check_application_masks(build(kind), TINY["vocab_size"])


@pytest.mark.parametrize("kind", KINDS)
def test_keras_round_trip_and_shapes(kind, tmp_path):
    model = build(kind)("mlm")
    shapes = {w.path.split("/", 2)[-1]: tuple(w.shape) for w in model.weights if "Transformer-0/" in w.path}
    synthesized = {k: v for k, v in shapes.items() if "query" in k or "key" in k or "random" in k or "synth" in k
                   or "factor" in k}
    expected = {"dense": {"synthesizer_hidden/kernel": (16, 16), "synthesizer_hidden/bias": (16,),
                          "synthesizer_logits/kernel": (16, 64), "synthesizer_logits/bias": (64,)},
                "random": {"random_logits": (2, 32, 32)},
                "factorized": {"factor_query": (2, 32, 4), "factor_key": (2, 32, 4)}}[kind]
    assert {k.removeprefix("MultiHeadSelfAttention/"): v for k, v in synthesized.items()} == expected
    ids = random_ids(2, 9, TINY["vocab_size"], seed=4)
    zeros = np.zeros_like(ids)
    model.save(tmp_path / "synth.keras")
    loaded = keras.saving.load_model(tmp_path / "synth.keras")
    assert loaded.get_config()["attention"] == f"synthesizer_{kind}"
    np.testing.assert_array_equal(predict(loaded, ids, zeros), predict(model, ids, zeros))


def test_fit_step_trains_the_synthesized_weights():
    model = build("random")("lm")
    ids = random_ids(4, 10, TINY["vocab_size"], seed=5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    random_logits = [w for w in model.weights if w.path.endswith("random_logits")]
    before = [w.numpy().copy() for w in random_logits]
    history = model.fit([ids, np.zeros_like(ids)], np.roll(ids, -1, 1), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(not np.array_equal(a, w.numpy()) for a, w in zip(before, random_logits))


def test_errors_name_the_variant():
    layer = SynthesizerAttention(2, 4, synthesizer="random", max_length=6)
    x = np.zeros((1, 8, 8), "float32")
    with pytest.raises(ValueError, match="sequence length 8 exceeds max_length 6"):
        layer(x)
    model = build("dense")("lm")
    cache = [(np.zeros((1, 4, 2, 8), "float32"),) * 2 for _ in model.blocks]
    with pytest.raises(ValueError, match="synthesizer_dense' has no KV-cache form"):
        model.call_with_cache(np.ones((1, 1), "int32"), np.ones((1, 1, 4), bool), cache, 0)
    with pytest.raises(ValueError, match="no cached decoding for attention='synthesizer_dense'"):
        generate(model, np.ones((1, 3), "int32"), 2)
    with pytest.raises(ValueError, match="synthesizer must be one of"):
        SynthesizerAttention(2, 4, synthesizer="mixed")
    with pytest.raises(ValueError, match=r"does not take attention_options \['softmax_heads'\]"):
        build_transformer_model(TINY, attention="synthesizer_random", attention_options={"softmax_heads": 2})
    with pytest.raises(ValueError, match="self-attention only"):
        layer(np.zeros((1, 4, 8), "float32"), key_value=np.zeros((1, 4, 8), "float32"))
