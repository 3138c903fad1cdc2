"""Conditional LayerNorm: exact identity at initialisation (against the HF reference), every norm of every stack
layout on the condition path, training, `.keras` round trips and cached decoding, for the int and tensor forms."""
import keras
import numpy as np
import pytest
import torch
import transformers
from keras import ops

from bert4k import TransformerConfig, build_transformer_model
from bert4k.generation import generate
from bert4k.layers.norms import LayerNorm
from tests.oracles.hf import max_diff, random_ids, randomize, save_both

BERT_CONFIG = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                   max_position_embeddings=48, type_vocab_size=2, hidden_act="gelu")
TINY = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=24, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
# Stack layouts built on the one Transformer, with the number of LayerNorms each must condition.
LAYOUTS = {
    "bert": (dict(), lambda n: 1 + 2 * n + 1),  # embedding, 2 per block, MLM head
    "gpt2": (dict(norm_position="pre", embedding_norm=False, final_norm=True, lm_head="tied", type_vocab_size=0),
             lambda n: 2 * n + 1),  # 2 per block, final
    "gpt2_ml": (dict(norm_position="gpt2_ml", lm_head="tied", type_vocab_size=0), lambda n: 1 + 2 * n),
    "albert": (dict(shared_layers=True, embedding_size=8), lambda n: 1 + 2 + 1),  # one shared block
}


def label_condition(num_labels: int = 3, size: int = 6):
    """bert4keras' tensor form: a label id input → Embedding → [batch, size]."""
    label = keras.Input(shape=(1,), dtype="int32", name="Input-Label")
    vector = keras.layers.Reshape((size,))(keras.layers.Embedding(num_labels, size, name="Label-Embedding")(label))
    return label, vector


def condition_kwargs(form: str) -> tuple[dict, callable]:
    """Builder kwargs for a condition form, and a function `seed -> condition input values` for batch 2."""
    if form == "tensor":
        _, vector = label_condition()
        return dict(layer_norm_cond=vector), lambda seed: np.array([[seed % 3], [(seed + 1) % 3]], "int32")
    kwargs = dict(layer_norm_cond=5)
    if form == "int_hidden":
        kwargs.update(layer_norm_cond_hidden_size=7, layer_norm_cond_hidden_act="relu")
    return kwargs, lambda seed: np.random.default_rng(seed).normal(size=(2, 5)).astype("float32") * 3


def randomize_condition_weights(model, seed: int = 0, only=None) -> None:
    """Give the condition Dense weights (of every norm, or only of `only`) random values; zero the rest."""
    rng = np.random.default_rng(seed)
    for norm in layer_norms(model):
        for weight in (norm.gamma_dense, norm.beta_dense):
            value = rng.normal(size=weight.shape) * 0.5 if only in (None, norm) else np.zeros(weight.shape)
            weight.assign(value.astype("float32"))


def layer_norms(model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, LayerNorm)]


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(**BERT_CONFIG))
    randomize(model, seed=4)
    st_dir, _ = save_both(model, str(tmp_path_factory.mktemp("bert")))
    return model, st_dir


@pytest.mark.parametrize("form", ["int", "int_hidden", "tensor"])
def test_condition_is_exact_identity_at_initialisation(hf_bert, form):
    hf_model, st_dir = hf_bert
    ids = random_ids(2, 10, BERT_CONFIG["vocab_size"], seed=1)
    segments = np.zeros_like(ids)
    with torch.no_grad():
        reference = hf_model(input_ids=torch.tensor(ids, dtype=torch.long),
                             attention_mask=torch.tensor(ids != 0, dtype=torch.long)).prediction_logits.numpy()
    kwargs, make_cond = condition_kwargs(form)
    plain = build_transformer_model(f"{st_dir}/config.json", st_dir, with_mlm=True, logits=True)
    conditioned = build_transformer_model(f"{st_dir}/config.json", st_dir, with_mlm=True, logits=True, **kwargs)
    assert len(layer_norms(conditioned)) == 1 + 2 * BERT_CONFIG["num_hidden_layers"] + 1
    assert all(norm.cond_size for norm in layer_norms(conditioned))
    expected = plain([ids, segments])
    assert max_diff(expected, reference) <= 1e-4
    for seed in (0, 1):
        assert max_diff(conditioned([ids, segments, make_cond(seed)]), expected) <= 1e-6


@pytest.mark.parametrize("form", ["int", "tensor"])
def test_gpt2_condition_is_exact_identity_at_initialisation(tmp_path, form):
    torch.manual_seed(0)
    hf_model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=61, n_positions=24, n_embd=32, n_layer=2, n_head=4, n_inner=40, pad_token_id=0))
    randomize(hf_model, seed=5)
    st_dir, _ = save_both(hf_model, str(tmp_path))
    ids = np.random.default_rng(3).integers(1, 61, size=(2, 9)).astype("int32")
    with torch.no_grad():
        reference = hf_model(input_ids=torch.tensor(ids, dtype=torch.long)).logits.numpy()
    kwargs, make_cond = condition_kwargs(form)
    plain = build_transformer_model(f"{st_dir}/config.json", st_dir, model="gpt2", logits=True)
    conditioned = build_transformer_model(f"{st_dir}/config.json", st_dir, model="gpt2", logits=True, **kwargs)
    assert len(layer_norms(conditioned)) == 2 * 2 + 1 and all(n.cond_size for n in layer_norms(conditioned))
    expected = plain(ids)
    assert max_diff(expected, reference) <= 1e-4
    for seed in (0, 1):
        assert max_diff(conditioned([ids, make_cond(seed)]), expected) <= 1e-6


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layer_norm_follows_the_condition(layout):
    overrides, expected_count = LAYOUTS[layout]
    config = TransformerConfig(**{**TINY, **overrides})
    model = build_transformer_model(config, application="lm", logits=True, layer_norm_cond=4)
    norms = layer_norms(model)
    assert len(norms) == expected_count(config.num_hidden_layers)
    ids = random_ids(2, 7, config.vocab_size, seed=2)
    inputs = [ids] + ([np.zeros_like(ids)] if config.type_vocab_size else [])
    cond_a, cond_b = np.eye(4, dtype="float32")[[0, 0]], np.eye(4, dtype="float32")[[1, 2]]
    for norm in norms:  # only this norm has non-zero condition weights; without its condition the diff is 0
        randomize_condition_weights(model, only=norm)
        change = max_diff(model(inputs + [cond_a]), model(inputs + [cond_b]))
        assert change > 1e-5, f"{layout}: {norm.path} does not receive the condition"


def test_fit_moves_the_condition_weights():
    config = TransformerConfig(**{**TINY, "type_vocab_size": 0})
    kwargs, make_cond = condition_kwargs("tensor")
    model = build_transformer_model(config, application="lm", logits=True, **kwargs)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config.vocab_size, size=(8, 6)).astype("int32")
    cond = np.concatenate([make_cond(seed) for seed in range(4)])
    before = model([ids[:2], cond[:2]])
    assert max_diff(before, model([ids[:2], cond[2:4]])) <= 1e-6
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit([ids[:, :-1], cond], ids[:, 1:], batch_size=4, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    dense = [w for norm in layer_norms(model) for w in (norm.gamma_dense, norm.beta_dense)]
    assert max(float(ops.max(ops.abs(w))) for w in dense) > 0
    same = np.repeat(ids[:1], 2, axis=0)  # the same tokens under the two conditions of make_cond(0)
    out = model([same, make_cond(0)])
    assert max_diff(out[0], out[1]) > 1e-4


@pytest.mark.parametrize("form", ["int_hidden", "tensor"])
def test_keras_save_load_round_trip(form, tmp_path):
    config = TransformerConfig(**TINY)
    kwargs, make_cond = condition_kwargs(form)
    model = build_transformer_model(config, with_mlm=True, logits=True, **kwargs)
    randomize_condition_weights(model, seed=3)
    ids = random_ids(2, 8, config.vocab_size, seed=5)
    inputs = [ids, np.zeros_like(ids)]
    outputs = [model(inputs + [make_cond(seed)]) for seed in (0, 1)]
    assert max_diff(*outputs) > 1e-3  # the saved model really depends on its condition
    path = str(tmp_path / "conditioned.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [t.name for t in loaded.inputs] == [t.name for t in model.inputs]
    for seed, expected in zip((0, 1), outputs):
        assert max_diff(loaded(inputs + [make_cond(seed)]), expected) <= 1e-6


def test_tensor_condition_inputs_are_found_or_given():
    config = TransformerConfig(**{**TINY, "type_vocab_size": 0})
    label, vector = label_condition()
    style = keras.Input(shape=(2,), name="Input-Style")
    both = keras.layers.Concatenate()([vector, keras.layers.Dense(3)(style)])
    found = build_transformer_model(config, layer_norm_cond=both)
    assert [t.name for t in found.inputs] == ["Input-Token", "Input-Label", "Input-Style"]
    given = build_transformer_model(config, layer_norm_cond=both, additional_input_layers=[style, label])
    assert [t.name for t in given.inputs] == ["Input-Token", "Input-Style", "Input-Label"]
    with pytest.raises(ValueError, match="additional_input_layers"):
        build_transformer_model(config, layer_norm_cond=4, additional_input_layers=label)


@pytest.mark.parametrize("form", ["int_hidden", "tensor"])
def test_cached_decoding_with_condition_equals_full_forward(form):
    overrides, _ = LAYOUTS["gpt2"]
    config = TransformerConfig(**{**TINY, **overrides})
    kwargs, make_cond = condition_kwargs(form)
    model = build_transformer_model(config, application="lm", logits=True, **kwargs)
    randomize_condition_weights(model, seed=7)
    ids = np.random.default_rng(1).integers(1, config.vocab_size, size=(2, 6)).astype("int32")
    cond = make_cond(0)
    full = model([ids, cond])
    length = ids.shape[1]
    cache = model.init_cache(2, length)
    causal = np.tril(np.ones((length, length), bool))
    for step in range(length):
        mask = np.repeat(causal[None, step:step + 1], 2, axis=0)
        positions = np.full((2, 1), step, "int32")
        logits, cache = model.call_with_cache(ids[:, step:step + 1], mask, cache, step, positions=positions, cond=cond)
        assert max_diff(logits[:, 0], full[:, step]) <= 1e-4


@pytest.mark.parametrize("form", ["int_hidden", "tensor"])
def test_shared_decoder_follows_the_condition(form):
    overrides, _ = LAYOUTS["gpt2"]
    config = TransformerConfig(**{**TINY, **overrides})
    kwargs, make_cond = condition_kwargs(form)
    keras.utils.set_random_seed(0)  # the rest of the weights: seeded, so near-ties cannot flip the test
    model = build_transformer_model(config, application="lm", logits=True, **kwargs)
    randomize_condition_weights(model, seed=11)
    for weight in model.weights:  # make the label embedding / hidden condition Dense matter too
        if "Label-Embedding" in weight.path or "LayerNorm-Condition-Dense" in weight.path:
            weight.assign(np.random.default_rng(12).normal(size=weight.shape).astype("float32"))
    prompt = np.array([[5, 9, 3], [5, 9, 3]], "int32")  # the same prompt under the two conditions of make_cond(0)
    cond = make_cond(0)
    ids = prompt
    for _ in range(6):  # greedy decoding by full forward passes over the growing sequence
        next_ids = np.argmax(keras.ops.convert_to_numpy(model([ids, cond]))[:, -1], axis=-1).astype("int32")
        ids = np.concatenate([ids, next_ids[:, None]], axis=1)
    cached = generate(model, (prompt, cond), 6, method="greedy")
    np.testing.assert_array_equal(cached, ids[:, 3:])
    assert (ids[0] != ids[1]).any()  # the two conditions lead to different continuations
    logits_a = keras.ops.convert_to_numpy(model([prompt, cond]))[:, -1]
    assert max_diff(logits_a[0], logits_a[1]) > 1e-3  # the two conditions really disagree at the first step
