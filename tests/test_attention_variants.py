"""Attention variants: `key_size` ≠ head size, and linear attention (φ = elu + 1) in every supported mask.

The O(n²) definition of linear attention is written once below (`oracle`) and every fast form is proven equal to it.
"""
import keras
import numpy as np
import pytest
import torch
import transformers

from bert4k import build_transformer_model, masks
from bert4k.checkpoints import CheckpointMismatch
from bert4k.layers.attention import MultiHeadAttention
from bert4k.layers.linear_attention import initial_state, linear_attention, linear_mask
from tests.oracles.hf import random_ids, randomize
from tests.oracles.perturbation import changed_rows, predict

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def oracle(q, k, v, mask):
    """out_i = Σ_j m_ij (φq_i·φk_j) v_j / Σ_j m_ij (φq_i·φk_j), φ(x) = elu(x) + 1, in float64 (0 if i sees nothing)."""
    phi = lambda x: np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    scores = np.einsum("bihd,bjhd->bhij", phi(q), phi(k)) * np.asarray(mask, bool)[:, None]
    num = np.einsum("bhij,bjhe->bihe", scores, v)
    den = np.transpose(scores.sum(-1), (0, 2, 1))[..., None]
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def qkv(batch=2, n=11, heads=2, dk=5, dv=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, n, heads, d)).astype("float32") for d in (dk, dk, dv))


def structure(kind, n=11, source=4):
    """Token ids with right padding (row 1 has 3 pads) and UniLM segments (source, then target, pads as 0)."""
    ids = np.arange(1, n + 1, dtype="int32")[None].repeat(2, 0)
    ids[1, n - 3:] = 0
    segments = np.zeros_like(ids)
    segments[:, source:] = 1
    segments[ids == 0] = 0
    boolean = {"bidirectional": masks.bidirectional_mask(ids), "causal": masks.causal_mask(ids),
               "unilm": masks.unilm_mask(ids, segments)}[kind]
    return ids, segments, keras.ops.convert_to_numpy(boolean)


KINDS = ["bidirectional", "causal", "unilm"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk_size", [4, 64])
def test_linear_attention_equals_quadratic_definition(kind, chunk_size):
    q, k, v = qkv()
    ids, segments, boolean = structure(kind)
    out, _ = linear_attention(q, k, v, linear_mask(kind, ids, segments), chunk_size=chunk_size)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), oracle(q, k, v, boolean), atol=1e-5, rtol=0)


def test_left_padding_rows_that_see_nothing_are_zero_not_nan():
    q, k, v = qkv(n=6)
    ids = np.array([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]], dtype="int32")
    out, _ = linear_attention(q, k, v, linear_mask("causal", ids))
    out = keras.ops.convert_to_numpy(out)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, oracle(q, k, v, keras.ops.convert_to_numpy(masks.causal_mask(ids))), atol=1e-5)


def run_in_steps(kind, q, k, v, ids, segments, sizes):
    """Feed the sequence piece by piece through the running state; returns the outputs and the state shapes."""
    state = initial_state(q.shape[0], q.shape[2], q.shape[3], v.shape[3])
    outs, shapes, start = [], set(), 0
    for size in sizes:
        part = slice(start, start + size)
        out, state = linear_attention(q[:, part], k[:, part], v[:, part],
                                      linear_mask(kind, ids[:, part], segments[:, part]), state=state)
        outs.append(keras.ops.convert_to_numpy(out))
        shapes.add(tuple(tuple(t.shape) for t in state))
        start += size
    return np.concatenate(outs, axis=1), shapes


@pytest.mark.parametrize("kind,sizes", [("causal", [3, 1, 1, 4, 1, 1]), ("unilm", [4, 1, 1, 1, 1, 1, 1, 1])])
def test_running_state_steps_equal_whole_sequence(kind, sizes):
    """Cached decoding: the state (Σ φk vᵀ, Σ φk) after a prefix reproduces the full pass token by token."""
    q, k, v = qkv()
    ids, segments, boolean = structure(kind)
    stepped, shapes = run_in_steps(kind, q, k, v, ids, segments, sizes)
    np.testing.assert_allclose(stepped, oracle(q, k, v, boolean), atol=1e-5, rtol=0)
    assert shapes == {((2, 2, 5, 3), (2, 2, 5))}  # constant memory, whatever the prefix length


def test_attention_layer_linear_mode_and_errors():
    layer = MultiHeadAttention(2, 4, key_size=3, attention="linear")
    x = np.random.default_rng(1).normal(size=(2, 7, 8)).astype("float32")
    ids = np.arange(1, 8, dtype="int32")[None].repeat(2, 0)
    full = keras.ops.convert_to_numpy(layer(x, attention_mask=linear_mask("causal", ids)))
    state = initial_state(2, 2, 3, 4)
    steps = []
    for t in range(7):
        out, state = layer(x[:, t:t + 1], attention_mask=linear_mask("causal", ids[:, t:t + 1]), cache=state)
        steps.append(keras.ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="not a boolean"):
        layer(x, attention_mask=masks.causal_mask(ids))
    with pytest.raises(ValueError, match="position bias"):
        layer(x, attention_mask=linear_mask("causal", ids), position_bias=np.zeros((1, 2, 7, 7), "float32"))
    with pytest.raises(ValueError, match="'plm'"):
        build_transformer_model(TINY, application="plm", attention="linear")
    with pytest.raises(ValueError, match="softmax' or 'linear"):
        MultiHeadAttention(2, 4, attention="cosine")


def test_linear_encoder_perturbation():
    model = build_transformer_model(TINY, attention="linear")
    ids = random_ids(1, 8, TINY["vocab_size"], seed=4, low=10)
    segments = np.zeros_like(ids)
    assert changed_rows(model, ids, segments, 5) == list(range(8))  # every position sees every real token
    padded = np.concatenate([ids, np.zeros((1, 4), "int32")], axis=1)  # padding must not be seen
    np.testing.assert_allclose(predict(model, padded, np.zeros_like(padded))[:, :8], predict(model, ids, segments),
                               atol=1e-5)


def test_linear_lm_perturbation():
    model = build_transformer_model(TINY, application="lm", attention="linear", logits=True)
    ids = random_ids(1, 8, TINY["vocab_size"], seed=5, low=10)
    segments = np.zeros_like(ids)
    for position in (0, 3, 7):
        assert changed_rows(model, ids, segments, position) == list(range(position, 8))


def test_linear_unilm_perturbation():
    model = build_transformer_model(TINY, application="unilm", attention="linear", logits=True)
    ids = random_ids(1, 9, TINY["vocab_size"], seed=6, low=10)
    segments = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1]], dtype="int32")
    assert changed_rows(model, ids, segments, 2) == list(range(9))  # source: seen by everyone
    assert changed_rows(model, ids, segments, 6) == [6, 7, 8]  # target: by itself and later targets only


@pytest.mark.parametrize("application,segments", [("lm", [0] * 7), ("unilm", [0, 0, 0, 1, 1, 1, 1])])
def test_linear_model_cached_decoding_equals_full_pass(application, segments):
    """The model's decoding step (`call_with_cache`) with per-block running states equals the full forward pass."""
    model = build_transformer_model(TINY, application=application, attention="linear", logits=True)
    ids = random_ids(2, 7, TINY["vocab_size"], seed=7, low=10)
    segments = np.array([segments, segments], dtype="int32")
    full = predict(model, ids, segments)
    kind = {"lm": "causal", "unilm": "unilm"}[application]
    heads, size = TINY["num_attention_heads"], TINY["hidden_size"] // TINY["num_attention_heads"]
    cache = [initial_state(2, heads, size, size) for _ in model.blocks]
    pieces = [(0, 3), (3, 4), (4, 5), (5, 6), (6, 7)]
    outs = []
    for start, stop in pieces:
        part = slice(start, stop)
        positions = np.arange(start, stop, dtype="int32")[None].repeat(2, 0)
        logits, cache = model.call_with_cache(ids[:, part], linear_mask(kind, ids[:, part], segments[:, part]), cache,
                                              None, segment_ids=segments[:, part], positions=positions)
        outs.append(keras.ops.convert_to_numpy(logits))
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, atol=1e-4)


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=64)
    model = transformers.BertModel(config)
    randomize(model, seed=2)
    folder = tmp_path_factory.mktemp("bert_small")
    model.save_pretrained(folder, safe_serialization=True)
    return str(folder)


def test_linear_attention_loads_the_same_checkpoint_weights(hf_bert):
    softmax = build_transformer_model(f"{hf_bert}/config.json", hf_bert)
    linear = build_transformer_model(f"{hf_bert}/config.json", hf_bert, attention="linear")
    assert [w.path for w in linear.weights] == [w.path for w in softmax.weights]
    for a, b in zip(linear.weights, softmax.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_linear_fit_step_and_keras_round_trip(tmp_path):
    model = build_transformer_model(TINY, application="lm", attention="linear", logits=True)
    ids = random_ids(4, 10, TINY["vocab_size"], seed=8)
    segments = np.zeros_like(ids)
    labels = np.roll(ids, -1, axis=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit([ids, segments], labels, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
    path = tmp_path / "linear.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config()["attention"] == "linear"
    np.testing.assert_array_equal(predict(loaded, ids, segments), predict(model, ids, segments))


def test_key_size_changes_only_query_and_key_shapes():
    base = build_transformer_model(TINY)
    wide = build_transformer_model(TINY, key_size=12)
    shapes = lambda m: {w.path: tuple(w.shape) for w in m.weights}
    base_shapes, wide_shapes = shapes(base), shapes(wide)
    assert base_shapes.keys() == wide_shapes.keys()
    changed = {p for p in base_shapes if base_shapes[p] != wide_shapes[p]}
    expected = {f"Transformer-{i}/MultiHeadSelfAttention/{name}/{part}"
                for i in range(2) for name in ("query", "key") for part in ("kernel", "bias")}
    assert changed == expected
    for path in changed:
        assert wide_shapes[path] == ((16, 24) if path.endswith("kernel") else (24,))
    ids = random_ids(2, 6, TINY["vocab_size"])
    assert predict(wide, ids, np.zeros_like(ids)).shape == (2, 6, 16)


def test_key_size_checkpoint_mismatch_names_variable_and_shapes(hf_bert):
    with pytest.raises(CheckpointMismatch) as error:
        build_transformer_model(f"{hf_bert}/config.json", hf_bert, key_size=12)
    message = str(error.value)
    assert ("encoder.layer.0.attention.self.query.weight (checkpoint (16, 16) vs model variable "
            "Transformer-0/MultiHeadSelfAttention/query/kernel (16, 24))") in message
    assert "encoder.layer.1.attention.self.key.bias (checkpoint (16,) vs model variable" in message
    assert "value" not in message
