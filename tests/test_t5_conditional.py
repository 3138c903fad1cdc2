"""Conditional LayerNorm in T5: exact identity at initialisation (against the HF reference), every RMSNorm of both
stacks on the condition path, `.keras` round trips, serving sub-models and cached decoding, for the int and tensor
forms of `layer_norm_cond`."""
import keras
import numpy as np
import pytest

from bert4k import TransformerConfig, build_transformer_model
from bert4k.generation import generate
from bert4k.layers.norms import RMSNorm
from tests.oracles.hf import max_diff
from tests.test_t5_parity import V11, VOCAB, batch, hf_outputs, hf_t5, save_untied

NUM_NORMS = 2 * V11["num_layers"] + 3 * V11["num_decoder_layers"] + 2  # per encoder / decoder block, final norms
TINY = TransformerConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_decoder_layers=3,
                         num_attention_heads=3, key_size=6, intermediate_size=20, hidden_act="gelu_tanh",
                         feed_forward_proj="gated-gelu", tie_word_embeddings=False, hidden_dropout_prob=0.0,
                         layer_norm_eps=1e-6, relative_attention_num_buckets=8, relative_attention_max_distance=20)


def label_condition(num_labels: int = 3, size: int = 6):
    """bert4keras' tensor form: a label id input → Embedding → [batch, size]."""
    label = keras.Input(shape=(1,), dtype="int32", name="Input-Label")
    return keras.layers.Reshape((size,))(keras.layers.Embedding(num_labels, size, name="Label-Embedding")(label))


def condition_kwargs(form: str, rows: int = 3) -> tuple[dict, callable]:
    """Builder kwargs for a condition form, and `seed -> condition input values` for `rows` rows."""
    if form == "tensor":
        return dict(layer_norm_cond=label_condition()), lambda seed: (np.arange(rows)[:, None] + seed) % 3
    kwargs = dict(layer_norm_cond=5)
    if form == "int_hidden":
        kwargs.update(layer_norm_cond_hidden_size=7, layer_norm_cond_hidden_act="relu")
    return kwargs, lambda seed: np.random.default_rng(seed).normal(size=(rows, 5)).astype("float32") * 3


def rms_norms(model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, RMSNorm)]


def randomize_condition(model, seed: int = 0, only=None) -> None:
    """Random condition weights for every norm (or only `only`; the others zero), the hidden Dense and the label
    embedding, so that every part of the condition path matters."""
    rng = np.random.default_rng(seed)
    for norm in rms_norms(model):
        value = rng.normal(size=norm.gamma_dense.shape) * 0.5 if only in (None, norm) else np.zeros(norm.gamma_dense.shape)
        norm.gamma_dense.assign(value.astype("float32"))
    for weight in model.weights:
        if "Label-Embedding" in weight.path or "LayerNorm-Condition-Dense" in weight.path:
            weight.assign(rng.normal(size=weight.shape).astype("float32"))


@pytest.fixture(scope="module")
def hf_v11(tmp_path_factory):
    model = hf_t5(V11, seed=21, untie=True)
    st_dir, _ = save_untied(model, str(tmp_path_factory.mktemp("t5_cond")))
    return model, st_dir


@pytest.mark.parametrize("form", ["int", "int_hidden", "tensor"])
def test_condition_is_exact_identity_at_initialisation(hf_v11, form):
    hf_model, st_dir = hf_v11
    enc, dec = batch(seed=22)
    _, reference = hf_outputs(hf_model, enc, dec)
    plain = build_transformer_model(st_dir, st_dir, model="t5.1.1", logits=True)
    expected = plain([enc, dec], training=False)
    assert max_diff(expected, reference) <= 1e-4
    kwargs, make_cond = condition_kwargs(form)
    conditioned = build_transformer_model(st_dir, st_dir, model="t5.1.1", logits=True, **kwargs)
    norms = rms_norms(conditioned)
    cond_size = {"int": 5, "int_hidden": 7, "tensor": 6}[form]
    assert len(norms) == NUM_NORMS and all(n.cond_size == cond_size for n in norms)
    assert not any(hasattr(n, "beta_dense") for n in norms)  # γ only: T5 norms have no β
    for seed in (0, 1):
        assert max_diff(conditioned([enc, dec, make_cond(seed)], training=False), expected) <= 1e-6


def test_every_norm_follows_the_condition():
    model = build_transformer_model(TINY, model="t5.1.1", logits=True, layer_norm_cond=4)
    assert [t.name for t in model.inputs][2:] == ["Input-LayerNorm-Condition"]
    norms = rms_norms(model)
    assert len(norms) == NUM_NORMS
    enc, dec = batch(seed=23)
    cond_a, cond_b = np.eye(4, dtype="float32")[[0, 0, 0]], np.eye(4, dtype="float32")[[1, 2, 3]]
    for norm in norms:  # only this norm has non-zero condition weights
        randomize_condition(model, seed=1, only=norm)
        change = max_diff(model([enc, dec, cond_a], training=False), model([enc, dec, cond_b], training=False))
        assert change > 1e-5, f"{norm.path} does not receive the condition"


def test_unknown_keywords_raise():
    with pytest.raises(TypeError, match="layer_norm_conditon"):
        build_transformer_model(TINY, model="t5.1.1", layer_norm_conditon=4)
    with pytest.raises(TypeError, match="layer_norm_conditon"):
        build_transformer_model(TINY.replace(max_position_embeddings=16), layer_norm_conditon=4)


@pytest.mark.parametrize("form", ["int_hidden", "tensor"])
def test_keras_round_trip_and_serving_models(form, tmp_path):
    kwargs, make_cond = condition_kwargs(form)
    model = build_transformer_model(TINY, model="t5.1.1", logits=True, **kwargs)
    randomize_condition(model, seed=2)
    enc, dec = batch(seed=24)
    outputs = [model([enc, dec, make_cond(seed)], training=False) for seed in (0, 1)]
    assert max_diff(*outputs) > 1e-3  # the saved model really depends on its condition
    model.save(tmp_path / "t5_cond.keras")
    loaded = keras.saving.load_model(tmp_path / "t5_cond.keras")
    assert [t.name for t in loaded.inputs] == [t.name for t in model.inputs]
    for seed, expected in zip((0, 1), outputs):
        cond = make_cond(seed)
        assert max_diff(loaded([enc, dec, cond], training=False), expected) <= 1e-6
        context = keras.ops.convert_to_numpy(loaded.encoder_model([enc, cond], training=False))
        assert max_diff(loaded.decoder_model([context, enc, dec, cond], training=False), expected) <= 1e-5


def uncached_greedy(t5, enc, cond, steps: int) -> np.ndarray:
    """Greedy decoding by re-running the whole model on the growing decoder prefix (no cache)."""
    dec = np.zeros((len(enc), 1), "int32")
    for _ in range(steps):
        token = np.argmax(keras.ops.convert_to_numpy(t5([enc, dec, cond], training=False))[:, -1], axis=-1)
        dec = np.concatenate([dec, token[:, None].astype("int32")], axis=1)
    return dec[:, 1:]


@pytest.mark.parametrize("form", ["int_hidden", "tensor"])
def test_cached_generation_follows_the_condition(form):
    kwargs, make_cond = condition_kwargs(form, rows=2)
    keras.utils.set_random_seed(0)  # fixed weights: greedy/beam comparisons must not hinge on near-ties
    model = build_transformer_model(TINY, model="t5.1.1", logits=True, **kwargs)
    randomize_condition(model, seed=3)
    enc = np.repeat(batch(seed=25, enc_len=8)[0][:1], 2, axis=0)  # the same source under two conditions
    cond = make_cond(0)
    steps = 6
    cached = generate(model, (enc, cond), steps)
    np.testing.assert_array_equal(cached, uncached_greedy(model, enc, cond, steps))
    assert (cached[0] != cached[1]).any()
    # Beams and repeated samples reorder the condition with the rest of the state: the batch equals its rows.
    beams = generate(model, {"token_ids": enc, "cond": cond}, steps, method="beam", num_beams=3)
    for row in range(2):
        alone = generate(model, (enc[row:row + 1], cond[row:row + 1]), steps, method="beam", num_beams=3)
        np.testing.assert_array_equal(beams[row:row + 1, :alone.shape[1]], alone)
    np.testing.assert_array_equal(generate(model, (enc, cond), steps, num_samples=2), np.repeat(cached, 2, axis=0))
    with pytest.raises(ValueError, match="cond"):
        generate(model, enc, steps)
