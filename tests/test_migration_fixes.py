"""The bert4keras behaviours Keras 3 changed, each restored by the compatibility layer (issue 12 / 13.3 / 13.11),
checked against an independent computation (HF transformers, numpy) where there is a value to check."""
import copy
import json
import pickle

import keras
import numpy as np
import pytest
import torch
import transformers

from bert4k.compat.models import UNSUPPORTED_FAMILIES, ModelHandle
from tests.oracles.hf import max_diff, randomize

VOCAB = 50


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    """A tiny random HF BERT with an MLM head, saved as safetensors."""
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(config)
    randomize(model, seed=3, scale=0.1)
    folder = tmp_path_factory.mktemp("bert")
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


def tiny_dense_model():
    from bert4k.backend import keras as b4k_keras

    x = b4k_keras.layers.Input(shape=(3,))
    return b4k_keras.models.Model(x, b4k_keras.layers.Dense(2, name="dense")(x))


# ---------------------------------------------------------------------------- save_weights with a bare prefix


def test_save_and_load_weights_with_a_bare_prefix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tiny_dense_model()
    model.save_weights("best_model.weights")
    assert (tmp_path / "best_model.weights.weights.h5").is_file()
    saved = [w.numpy() for w in model.weights]
    for w in model.weights:
        w.assign(np.zeros(w.shape))
    model.load_weights("best_model.weights")
    for w, value in zip(model.weights, saved):
        np.testing.assert_array_equal(w.numpy(), value)


def test_models_from_plain_keras_accept_a_bare_prefix_too(tmp_path):
    import bert4k.backend  # noqa: F401 - importing it is what bert4keras scripts do

    x = keras.Input(shape=(2,))
    model = keras.models.Model(x, keras.layers.Dense(1)(x))
    model.save_weights(str(tmp_path / "m.weights"))
    model.load_weights(str(tmp_path / "m.weights"))
    model.save_weights(str(tmp_path / "kept.weights.h5"))  # Keras 3 names pass through unchanged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.weights.h5", "m.weights.weights.h5"]


def test_whole_model_save_and_load_model_with_a_tf_keras_name(tmp_path, monkeypatch):
    """`model.save("test.model")` then `keras.models.load_model("test.model")` (bert4keras' extract-features
    example): the name maps to `test.model.keras` both ways; predictions survive the round trip."""
    from bert4k.backend import keras as b4k_keras

    monkeypatch.chdir(tmp_path)
    model = tiny_dense_model()
    x = np.arange(6, dtype="float32").reshape(2, 3)
    model.save("test.model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.model.keras"]
    loaded = b4k_keras.models.load_model("test.model")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=0)
    model.save("kept.keras")  # Keras 3 names pass through unchanged
    assert (tmp_path / "kept.keras").is_file() and not (tmp_path / "kept.keras.keras").exists()


def test_a_tf_keras_savedmodel_folder_is_refused_by_name(tmp_path):
    from bert4k.backend import keras as b4k_keras

    (tmp_path / "old.model").mkdir()
    with pytest.raises(ValueError, match=r"old\.model is a folder \(a tf\.keras SavedModel\)"):
        b4k_keras.models.load_model(str(tmp_path / "old.model"))


def test_a_tf_keras_checkpoint_prefix_is_refused_by_name(tmp_path):
    model = tiny_dense_model()
    (tmp_path / "old.weights.index").write_bytes(b"")
    with pytest.raises(ValueError, match=r"old\.weights\.index is a tf\.keras TF-format checkpoint"):
        model.load_weights(str(tmp_path / "old.weights"))


# ---------------------------------------------------------------------------- snippets


def test_uniout_imports_as_a_no_op():
    from bert4k.snippets import uniout

    assert uniout.__name__ == "uniout"


def test_keras_batch_does_not_call_ndim_on_lists_of_unequal_arrays():
    from bert4k.snippets import keras_batch

    x = [np.ones((8, 5), "int32"), np.zeros((8, 5), "int32"), np.ones((8, 1), "int32")]
    (inputs,) = keras_batch((x, None))  # `(x,)`: inputs only
    assert isinstance(inputs, tuple) and [b.shape for b in inputs] == [(8, 5), (8, 5), (8, 1)]
    inputs, labels = keras_batch(([[[1, 2], [3, 4]], np.zeros((2, 2))], [[1], [0]]))
    assert inputs[0].tolist() == [[1, 2], [3, 4]] and labels.shape == (2, 1)
    with pytest.raises(ValueError, match=r"batch part \[0\]\[0\] is a ragged list.*sequence_padding"):
        keras_batch(([[[1, 2], [3]], np.zeros((2, 2))], None))


def test_forfit_accepts_every_batch_length():
    """First two batches of length 4, then 9: a Keras-fixed spec of (None, 4) fails on the third."""
    from bert4k.snippets import DataGenerator, sequence_padding

    lengths = [4, 4, 9, 2, 7, 4]

    class Gen(DataGenerator):
        def __iter__(self, random=False):
            for _, n in self.sample(random):
                ids = sequence_padding([list(range(1, n + 1))] * 2)
                yield [ids, np.zeros_like(ids)], np.array([[n % 2], [1 - n % 2]])

    gen = Gen(lengths, batch_size=1)
    dataset = gen.forfit(random=False)
    assert [tuple(s.shape.as_list()) for s in dataset.element_spec[0]] == [(None, None), (None, None)]
    assert dataset.element_spec[1].shape.as_list() == [None, 1]
    token = keras.Input(shape=(None,), dtype="int32")
    segment = keras.Input(shape=(None,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(token + segment))
    model = keras.Model([token, segment], keras.layers.Dense(2, activation="softmax")(pooled))
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    history = model.fit(dataset, steps_per_epoch=len(gen), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    seen = [b[0][0].shape[1] for b in dataset.take(len(lengths))]
    assert seen == lengths


# ---------------------------------------------------------------------------- predict on nested lists


def test_predict_takes_nested_python_lists(hf_bert):
    from bert4k import build_transformer_model

    folder, reference = hf_bert
    model = build_transformer_model(folder, folder / "model.safetensors")
    token_ids, segment_ids = [2, 7, 9, 3], [0, 0, 1, 1]
    hidden = model.predict([[token_ids], [segment_ids]], verbose=0)
    with torch.no_grad():
        expected = reference.bert(torch.tensor([token_ids]), token_type_ids=torch.tensor([segment_ids]))[0]
    assert max_diff(hidden, expected.numpy()) < 1e-4
    with pytest.raises(ValueError, match="input 0 is a ragged nested list"):
        model.predict([[[1, 2], [3]], [[0, 0], [0]]], verbose=0)


def test_nested_list_inputs_to_a_plain_keras_model_wrapping_the_transformer(hf_bert):
    """bert4keras' integrated-gradients example: `model.predict([[token_ids], [segment_ids]])` where `model` is a
    `keras.models.Model` built over the Transformer's inputs (not a bert4k model)."""
    from bert4k.backend import keras as b4k_keras
    from bert4k.models import build_transformer_model

    folder, _ = hf_bert
    bert = build_transformer_model(folder)
    model = b4k_keras.models.Model(bert.inputs, b4k_keras.layers.Lambda(lambda x: x[:, 0])(bert.output))
    token_ids, segment_ids = [2, 7, 9, 3], [0, 0, 0, 0]
    expected = model.predict([np.array([token_ids]), np.array([segment_ids])], verbose=0)
    np.testing.assert_array_equal(model.predict([[token_ids], [segment_ids]], verbose=0), expected)


# ---------------------------------------------------------------------------- build_transformer_model


def cpm_like_gpt2():
    """A tiny HF GPT-2 with exact GELU (CPM-LM's activation), weights drawn by `randomize` in each test."""
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2,
                                                                n_positions=32, activation_function="gelu"))


def assert_matches_hf_gpt2(model, reference) -> None:
    ids = np.array([[5, 9, 13, 2, 40, 7]])
    with torch.no_grad():
        expected = torch.softmax(reference(torch.tensor(ids)).logits, -1).numpy()
    assert max_diff(model.predict(ids, verbose=0), expected) < 1e-4


def test_gpt2_from_a_bert_style_config_matches_hf(tmp_path):
    """CPM-LM as bert4keras reads it: BERT field names, `model='gpt2'`, exact GELU."""
    from bert4k.models import build_transformer_model

    reference = cpm_like_gpt2()
    randomize(reference, seed=5, scale=0.1)
    reference.save_pretrained(tmp_path, safe_serialization=True)
    bert_style = {"vocab_size": VOCAB, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 64, "max_position_embeddings": 32, "hidden_act": "gelu",
                  "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
    (tmp_path / "bert_style.json").write_text(json.dumps(bert_style))
    model = build_transformer_model(tmp_path / "bert_style.json", tmp_path / "model.safetensors", model="gpt2")
    assert_matches_hf_gpt2(model, reference)


def bert4keras_gpt2_names(state: dict) -> dict:
    """HF GPT2LMHeadModel tensors under the names of bert4keras' TF conversion of CPM-LM (hand-written table:
    `gpt/` scope, `transformer/layer_<i>`, q/k/v apart, the pre-LN norms called `input/LayerNorm`)."""
    t = {k.removeprefix("transformer."): v.numpy() for k, v in state.items()}
    out = {"gpt/embeddings/word_embeddings": t["wte.weight"], "gpt/embeddings/position_embeddings": t["wpe.weight"],
           "gpt/output/LayerNorm/gamma": t["ln_f.weight"], "gpt/output/LayerNorm/beta": t["ln_f.bias"]}
    layers = {int(k.split(".")[1]) for k in t if k.startswith("h.")}
    for i in layers:
        s, h = f"gpt/transformer/layer_{i}/", f"h.{i}."
        for n, part in enumerate(np.split(t[h + "attn.c_attn.weight"], 3, axis=1)):
            out[s + f"attention/self/{('query', 'key', 'value')[n]}/kernel"] = part
        for n, part in enumerate(np.split(t[h + "attn.c_attn.bias"], 3)):
            out[s + f"attention/self/{('query', 'key', 'value')[n]}/bias"] = part
        for ours, theirs in (("attention/output/dense", "attn.c_proj"), ("intermediate/dense", "mlp.c_fc"),
                             ("output/dense", "mlp.c_proj")):
            out[s + ours + "/kernel"], out[s + ours + "/bias"] = t[h + theirs + ".weight"], t[h + theirs + ".bias"]
        for ours, theirs in (("attention/input/LayerNorm", "ln_1"), ("input/LayerNorm", "ln_2")):
            out[s + ours + "/gamma"], out[s + ours + "/beta"] = t[h + theirs + ".weight"], t[h + theirs + ".bias"]
    return out


def test_gpt2_from_bert4keras_tf_conversion_matches_hf(tmp_path):
    """CPM_LM_2.6B_TF as bert4keras ships it: a BERT-style config and a TF checkpoint with `gpt/...` names."""
    from bert4k.checkpoints.writers import save_tf_checkpoint
    from bert4k.models import build_transformer_model

    reference = cpm_like_gpt2()
    randomize(reference, seed=9, scale=0.1)
    prefix = save_tf_checkpoint(bert4keras_gpt2_names(reference.state_dict()), tmp_path / "model.ckpt")
    bert_style = {"vocab_size": VOCAB, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 64, "max_position_embeddings": 32, "hidden_act": "gelu"}
    (tmp_path / "config.json").write_text(json.dumps(bert_style))
    model = build_transformer_model(tmp_path / "config.json", prefix, model="gpt2")
    assert not model.load_report.unexpected and not model.load_report.missing
    assert_matches_hf_gpt2(model, reference)


def test_bert4keras_gpt2_conversion_missing_a_projection_is_named():
    from bert4k.checkpoints.gpt2 import bert4keras_gpt2_names

    tensors = {f"gpt/transformer/layer_0/attention/self/{p}/kernel": np.zeros((2, 2)) for p in ("query", "value")}
    with pytest.raises(ValueError, match=r"layer_0/attention/self: no key weight"):
        bert4keras_gpt2_names(tensors)


class MaskAsValues(keras.layers.Layer):
    """Returns the Keras mask its input carries (as 0/1 floats), to check it in predictions."""

    def call(self, x, mask=None):
        return keras.ops.cast(mask, "float32")


@pytest.mark.parametrize("family", ["bert", "albert"])
def test_block_outputs_by_bert4keras_layer_name_and_get_output_at(tmp_path, family):
    """bert4keras' NER/CWS examples: `model.get_layer('Transformer-%d-FeedForward-Norm' % i).output` (BERT) and
    `model.get_layer('Transformer-FeedForward-Norm').get_output_at(i)` (ALBERT's shared block) are the i-th
    block's hidden states (HF `output_hidden_states[i + 1]`), carrying the padding mask."""
    from bert4k.backend import keras as b4k_keras
    from bert4k.models import build_transformer_model

    common = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=32)
    if family == "bert":
        reference = transformers.BertModel(transformers.BertConfig(**common))
    else:
        reference = transformers.AlbertModel(transformers.AlbertConfig(embedding_size=8, **common))
    torch.manual_seed(0)
    randomize(reference, seed=11, scale=0.1)
    reference.save_pretrained(tmp_path, safe_serialization=True)
    model = build_transformer_model(tmp_path / "config.json", tmp_path / "model.safetensors", model=family)
    if family == "bert":
        output = model.get_layer("Transformer-1-FeedForward-Norm").output
    else:
        output = model.get_layer("Transformer-FeedForward-Norm").get_output_at(1)
    probe = b4k_keras.models.Model(model.inputs, [output, MaskAsValues()(output)])
    ids = np.array([[2, 7, 9, 4, 3, 0, 0], [2, 5, 3, 0, 0, 0, 0]])
    hidden, mask = probe.predict([ids, np.zeros_like(ids)], verbose=0)
    with torch.no_grad():
        expected = reference(torch.tensor(ids), attention_mask=torch.tensor(ids != 0).long(),
                             output_hidden_states=True).hidden_states[2].numpy()
    assert max_diff(hidden[ids != 0], expected[ids != 0]) < 1e-4
    np.testing.assert_array_equal(mask, (ids != 0).astype("float32"))
    assert model.get_layer("Transformer-1-FeedForward-Norm" if family == "bert" else
                           "Transformer-FeedForward-Norm") is model.get_layer(
        "Transformer-1-FeedForward-Norm" if family == "bert" else "Transformer-FeedForward-Norm")


def test_inner_block_layer_names_and_bad_node_indices_are_refused_by_name():
    from bert4k.models import build_transformer_model

    model = build_transformer_model(dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=32), model="albert")
    with pytest.raises(ValueError, match=r"Transformer-0-MultiHeadSelfAttention.*'Transformer-<sub-layer>'"):
        model.get_layer("Transformer-0-MultiHeadSelfAttention")
    with pytest.raises(ValueError, match=r"called 2 time\(s\); node indices run from -2 to 1"):
        model.get_layer("Transformer").get_output_at(2)
    with pytest.raises(ValueError, match=r"called 2 times \(a shared block\); use get_output_at"):
        _ = model.get_layer("Transformer-FeedForward-Norm").output


def test_in_train_phase_follows_fit_and_predict_in_a_layer_without_a_training_argument():
    """bert4keras' theseus example: `K.in_train_phase(output, target)` in a `call(inputs)` with no `training`
    argument picks `output` in training steps and `target` in predict, like tf.keras' learning phase."""
    from bert4k.backend import K
    from bert4k.backend import keras as b4k_keras

    class Choose(b4k_keras.layers.Layer):
        def call(self, inputs):
            return K.in_train_phase(inputs * 0 + 1, lambda: inputs * 0 - 1)

    x = b4k_keras.layers.Input(shape=(2,))
    model = b4k_keras.models.Model(x, Choose()(x))
    data = np.zeros((3, 2), dtype="float32")
    np.testing.assert_array_equal(model.predict(data, verbose=0), -np.ones((3, 2)))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(data, training=True)), np.ones((3, 2)))
    assert K.learning_phase() == 0 and K.in_train_phase(1, 2, training=True) == 1


def test_random_sample_with_topp_of_one_or_more_samples_the_whole_distribution():
    """bert4keras' conditional-LM example calls `random_sample(..., topp=5)`: its nucleus never fills, so every
    token stays possible; with topp=0.9 the 5% tail (token 3, after 0.95 of the mass) is cut."""
    from bert4k.snippets import AutoRegressiveDecoder

    probas = np.array([0.5, 0.3, 0.15, 0.05])

    class Fixed(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            return np.tile(probas, (len(output_ids), 1))

    decoder = Fixed(start_id=None, end_id=None, maxlen=1)
    np.random.seed(0)
    wide = np.concatenate(decoder.random_sample([[1]], 400, topp=5))
    narrow = np.concatenate(decoder.random_sample([[1]], 400, topp=0.9))  # 0.95 itself is a float32 tie
    assert 3 in wide and 3 not in narrow
    assert abs(np.mean(wide == 0) - 0.5) < 0.1


def test_k_gradients_inside_a_layer_during_predict_match_numpy():
    """bert4keras' integrated-gradients example: a layer computing `K.gradients(output, [input])[0] * input` inside
    a model run by predict; for `y = x W + b` the gradient of `y[:, label]` is `W[:, label]`."""
    from bert4k.backend import K, batch_gather
    from bert4k.backend import keras as b4k_keras

    class Gradient(b4k_keras.layers.Layer):
        def call(self, inputs):
            x, y, label = inputs
            return K.gradients(batch_gather(y, label), [x])[0] * x

        def compute_output_shape(self, input_shape):
            return input_shape[0]

    x_in, label_in = b4k_keras.layers.Input(shape=(3,)), b4k_keras.layers.Input(shape=(1,), dtype="int32")
    dense = b4k_keras.layers.Dense(4)
    model = b4k_keras.models.Model([x_in, label_in], Gradient()([x_in, dense(x_in), label_in]))
    x = np.random.default_rng(0).standard_normal((5, 3)).astype("float32")
    labels = np.array([[0], [3], [1], [2], [3]])
    kernel = dense.kernel.numpy()
    np.testing.assert_allclose(model.predict([x, labels], verbose=0), kernel[:, labels[:, 0]].T * x, atol=1e-6)
    with pytest.raises(NotImplementedError, match="inside a traced computation.*override train_step"):
        K.gradients(keras.ops.sum(dense(x)), [dense.kernel])


def test_search_layer_finds_a_layer_upstream_of_a_keras_tensor():
    """bert4keras' `search_layer(model.output, name)` (tf.keras' graph-mode internals, searched from tensors inside
    a loss, are in tests/test_migration_training.py)."""
    from bert4k.backend import search_layer

    model = tiny_dense_model()
    assert search_layer(model.output, "dense") is model.get_layer("dense")
    assert search_layer(model.output, "nowhere") is None


def test_compound_tokens_are_means_of_the_listed_embeddings(hf_bert):
    from bert4k.models import build_transformer_model

    folder, reference = hf_bert
    keep_tokens = list(range(0, VOCAB, 2))  # 25 kept ids; compound ids index the kept vocabulary
    compound = [[3, 4], ([1, 6, 7], [1.0, 2.0, 1.0])]
    model = build_transformer_model(folder, folder / "model.safetensors", with_mlm=True, keep_tokens=keep_tokens,
                                    compound_tokens=compound)
    embeddings = reference.bert.embeddings.word_embeddings.weight.detach().numpy()[keep_tokens]
    bias = reference.cls.predictions.bias.detach().numpy()[keep_tokens]
    expected_rows = np.stack([embeddings[[3, 4]].mean(0), (embeddings[1] + 2 * embeddings[6] + embeddings[7]) / 4])
    table = model.get_layer("Embedding-Token").embeddings.numpy()
    assert table.shape == (27, 16)
    assert max_diff(table[:25], embeddings) == 0
    assert max_diff(table[25:], expected_rows) < 1e-6
    mlm_bias = [w for w in model.weights if w.shape == (27,)]
    assert len(mlm_bias) == 1
    assert max_diff(mlm_bias[0].numpy()[25:], [bias[[3, 4]].mean(), (bias[1] + 2 * bias[6] + bias[7]) / 4]) < 1e-6
    plain = build_transformer_model(folder, folder / "model.safetensors", with_mlm=True, keep_tokens=keep_tokens)
    ids = np.array([[2, 5, 9, 3]])
    ours = model.predict([ids, np.zeros_like(ids)], verbose=0)
    assert ours.shape == (1, 4, 27)
    # Same hidden states; the distribution over the 25 old tokens renormalised equals the plain model's.
    old = ours[..., :25] / ours[..., :25].sum(-1, keepdims=True)
    assert max_diff(old, plain.predict([ids, np.zeros_like(ids)], verbose=0)) < 1e-5
    with pytest.raises(ValueError, match=r"compound_tokens\[0\]"):
        build_transformer_model(folder, folder / "model.safetensors", compound_tokens=[[99]])


def test_native_builder_refuses_compound_tokens(hf_bert):
    from bert4k import build_transformer_model

    folder, _ = hf_bert
    with pytest.raises((TypeError, ValueError), match="compound_tokens"):
        build_transformer_model(folder, compound_tokens=[[1, 2]])


@pytest.mark.parametrize("family", sorted(UNSUPPORTED_FAMILIES))
def test_unsupported_families_are_named(family, hf_bert):
    from bert4k.models import build_transformer_model

    folder, _ = hf_bert
    with pytest.raises(NotImplementedError, match=f"model='{family}'.*does not implement"):
        build_transformer_model(folder, model=family)


def test_model_classes_and_refused_options_are_named(hf_bert):
    from bert4k.models import build_transformer_model

    folder, _ = hf_bert
    with pytest.raises(NotImplementedError, match="model classes cannot be passed"):
        build_transformer_model(folder, model=keras.Model)
    with pytest.raises(NotImplementedError, match="autoresize_weights"):
        build_transformer_model(folder, autoresize_weights=True)
    with pytest.raises(ValueError, match="unknown model 'bart'"):
        build_transformer_model(folder, model="bart")


def test_model_handle_copies_and_pickles_without_recursion(hf_bert):
    from bert4k.models import build_transformer_model

    folder, _ = hf_bert
    handle = build_transformer_model(folder, return_keras_model=False)
    assert isinstance(handle, ModelHandle) and handle.output is handle.model.output
    assert copy.copy(handle).model is handle.model
    with pytest.raises(AttributeError):
        object.__new__(ModelHandle).anything  # noqa: B018 - the attribute access is the test
    restored = pickle.loads(pickle.dumps(handle))
    assert [w.shape for w in restored.model.weights] == [w.shape for w in handle.model.weights]
    report = handle.load_weights_from_checkpoint(folder / "model.safetensors")
    assert report is not None


def test_global_pointer_takes_bert4keras_rope_spelling():
    """bert4keras' GPLinker example: `GlobalPointer(heads, head_size, RoPE=False, tril_mask=False)`; the scores
    are then plain `q·k / sqrt(d)` of the dense projections (numpy), no rotary positions."""
    import bert4k.backend  # noqa: F401 - what the example imports first
    from bert4k.layers import EfficientGlobalPointer, GlobalPointer

    x = np.random.default_rng(1).standard_normal((1, 5, 6)).astype("float32")
    layer = GlobalPointer(heads=1, head_size=4, RoPE=False, tril_mask=False)
    scores = keras.ops.convert_to_numpy(layer(x))
    kernel, bias = layer.dense.kernel.numpy(), layer.dense.bias.numpy()
    qk = x[0] @ kernel + bias
    q, k = qk[:, 0:4], qk[:, 4:8]
    assert layer.rope is False and layer.get_config()["rope"] is False
    np.testing.assert_allclose(scores[0, 0], q @ k.T / 2.0, atol=1e-5)
    assert EfficientGlobalPointer(heads=2, head_size=4, RoPE=False).rope is False
    with pytest.raises(TypeError, match="RoPE .* or rope, not both"):
        GlobalPointer(heads=1, head_size=4, RoPE=False, rope=True)


# ---------------------------------------------------------------------------- Loss layer


def test_loss_layer_sees_exact_integer_ids_under_mixed_bfloat16():
    from bert4k.backend import K
    from bert4k.layers import Loss

    values = np.array([[21127, 8020, 3300]])

    class Distance(Loss):
        def compute_loss(self, inputs, mask=None):
            return K.sum(K.abs(inputs - values.astype("float32")))

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        ids = keras.Input(shape=(None,), dtype="int32")
        model = keras.Model(ids, Distance()(ids))
        model.compile(optimizer="sgd")
        loss = model.evaluate(values, verbose=0)
    finally:
        keras.config.set_dtype_policy(policy)
    assert loss == 0.0  # bfloat16 would give |21120-21127| + |8032-8020| + |3296-3300| = 23


def test_crf_loss_on_batches_of_unknown_length_matches_numpy():
    """forfit's batches have unknown lengths inside the compiled train step; the CRF must still work there."""
    import tensorflow as tf

    from bert4k.layers import ConditionalRandomField
    from tests.test_migration_examples import numpy_crf_nll

    crf = ConditionalRandomField()
    crf(keras.Input(shape=(None, 3)))
    loss = tf.function(crf.sparse_loss, input_signature=[tf.TensorSpec([None, None], tf.int32),
                                                         tf.TensorSpec([None, None, 3], tf.float32)])
    emissions = np.random.default_rng(1).normal(size=(2, 4, 3)).astype("float32")
    labels = np.array([[0, 2, 1, 1], [2, 2, 0, 1]], dtype="int32")
    trans = keras.ops.convert_to_numpy(crf.trans)
    np.testing.assert_allclose(loss(labels, emissions).numpy(),
                               [numpy_crf_nll(e, trans, y) for e, y in zip(emissions, labels)], rtol=1e-5)
