"""bert4keras APIs that its examples use, called as the examples call them (import renamed), each checked against
numpy or a hand-derived value. Snippets' data helpers: tests/test_snippets.py; optimizers: tests/test_training.py;
fixed Keras 3 breaks: tests/test_migration_fixes.py."""
import numpy as np
import pytest

from bert4k.backend import (
    K,
    batch_gather,
    keras,
    multilabel_categorical_crossentropy,
    search_layer,
    sequence_masking,
    set_gelu,
    sparse_multilabel_categorical_crossentropy,
)
from bert4k.layers import LayerNormalization, Loss
from bert4k.snippets import WebServing, is_string, parallel_apply

RNG = np.random.default_rng(0)


def numpy_of(x):
    return keras.ops.convert_to_numpy(x)


# ---------------------------------------------------------------------------- K


def test_k_functions_the_examples_call_match_numpy():
    a = RNG.normal(size=(3, 4)).astype("float32")
    labels = np.array([1, 0, 3])
    probs = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
    assert np.isclose(numpy_of(K.sum(a)), a.sum(), atol=1e-5)
    assert np.allclose(numpy_of(K.mean(a, 1)), a.mean(1), atol=1e-6)
    assert K.int_shape(keras.ops.convert_to_tensor(a)) == (3, 4)
    assert np.isclose(numpy_of(K.prod(K.shape(a))), 12)
    assert K.floatx() == "float32" and numpy_of(K.cast(a > 0, K.floatx())).dtype == np.float32
    np.testing.assert_allclose(numpy_of(K.sparse_categorical_crossentropy(labels, probs)),
                               -np.log(probs[np.arange(3), labels]), rtol=1e-5)
    one_hot = np.eye(4, dtype="float32")[labels]
    np.testing.assert_array_equal(numpy_of(K.one_hot(labels, 4)), one_hot)
    np.testing.assert_allclose(numpy_of(K.categorical_crossentropy(one_hot, probs)),
                               -np.log(probs[np.arange(3), labels]), rtol=1e-5)
    sig = 1 / (1 + np.exp(-a))
    np.testing.assert_allclose(numpy_of(K.binary_crossentropy((a > 0).astype("float32"), sig)),
                               -((a > 0) * np.log(sig) + (a <= 0) * np.log(1 - sig)), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(numpy_of(K.not_equal(labels, 0)), labels != 0)
    np.testing.assert_array_equal(numpy_of(K.reshape(a, (4, 3))), a.reshape(4, 3))
    np.testing.assert_array_equal(numpy_of(K.concatenate([a, a], 1)), np.concatenate([a, a], 1))
    np.testing.assert_array_equal(numpy_of(K.zeros_like(a)), np.zeros_like(a))
    draws = numpy_of(K.random_binomial(shape=[10000], p=0.3))
    assert set(np.unique(draws)) <= {0.0, 1.0} and abs(draws.mean() - 0.3) < 0.03


def test_k_variables_eval_and_set_value():
    variable = keras.Variable(np.ones((2, 2), "float32"))
    K.set_value(variable, K.eval(variable) + 2.5)
    np.testing.assert_array_equal(K.eval(variable), np.full((2, 2), 3.5))


@pytest.mark.parametrize("name", ["placeholder", "update"])
def test_graph_mode_k_functions_raise_naming_the_alternative(name):
    with pytest.raises(NotImplementedError, match=f"K.{name}: Keras 3 has no graph-mode"):
        getattr(K, name)
    with pytest.raises(AttributeError, match="keras.ops.frobnicate"):
        K.frobnicate  # noqa: B018


def test_set_gelu_switches_the_gelu_a_config_means():
    from bert4k import config

    before = config.ACTIVATIONS["gelu"]
    try:
        set_gelu("tanh")
        assert config.TransformerConfig(vocab_size=5, hidden_size=4, num_hidden_layers=1, num_attention_heads=1,
                                        intermediate_size=8, hidden_act="gelu").hidden_act == "gelu_tanh"
        set_gelu("erf")
        assert config.ACTIVATIONS["gelu"] == "gelu_erf"
        with pytest.raises(ValueError, match="set_gelu"):
            set_gelu("fast")
    finally:
        config.ACTIVATIONS["gelu"] = before


# ---------------------------------------------------------------------------- backend helpers


def test_batch_gather_matches_numpy():
    params = RNG.normal(size=(2, 5, 3)).astype("float32")
    rows = np.array([[4, 0], [1, 1]])
    np.testing.assert_array_equal(numpy_of(batch_gather(params, rows)),
                                  np.stack([params[b, rows[b]] for b in range(2)]))
    scores = RNG.normal(size=(2, 3, 6)).astype("float32")
    picks = np.array([[[5, 0], [1, 2], [3, 3]], [[0, 0], [4, 1], [2, 5]]])
    np.testing.assert_array_equal(numpy_of(batch_gather(scores, picks)), np.take_along_axis(scores, picks, -1))
    np.testing.assert_array_equal(numpy_of(batch_gather(params, rows.astype("float32"))),
                                  numpy_of(batch_gather(params, rows)))


def test_sequence_masking_matches_numpy():
    x = RNG.normal(size=(2, 4, 3)).astype("float32")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]])
    out = numpy_of(sequence_masking(x, mask, "-inf"))
    np.testing.assert_array_equal(out[mask == 1], x[mask == 1])
    assert (out[mask == 0] == -1e12).all()
    scores = RNG.normal(size=(2, 3, 4)).astype("float32")
    out = numpy_of(sequence_masking(scores, mask, 0.0, axis=2))
    np.testing.assert_array_equal(out, scores * mask[:, None, :])


def numpy_multilabel(y_true, y_pred):
    loss = []
    for t, s in zip(y_true.reshape(-1, y_true.shape[-1]), y_pred.reshape(-1, y_pred.shape[-1])):
        loss.append(np.log1p(np.exp(s[t == 0]).sum()) + np.log1p(np.exp(-s[t == 1]).sum()))
    return np.array(loss).reshape(y_true.shape[:-1])


def test_multilabel_crossentropies_match_the_numpy_formula():
    y_pred = RNG.normal(size=(3, 2, 7)).astype("float32")
    positives = np.array([[[1, 4], [0, 0]], [[6, 2], [3, 0]], [[5, 0], [2, 1]]])  # 0 = padding with mask_zero
    dense = np.zeros_like(y_pred)
    for index in np.ndindex(positives.shape[:-1]):
        dense[index][positives[index]] = 1
    np.testing.assert_allclose(numpy_of(multilabel_categorical_crossentropy(dense, y_pred)),
                               numpy_multilabel(dense, y_pred), rtol=1e-5)
    distinct = np.array([[[1, 4], [0, 2]], [[6, 2], [3, 0]], [[5, 0], [2, 1]]])
    dense_distinct = np.zeros_like(y_pred)
    for index in np.ndindex(distinct.shape[:-1]):
        dense_distinct[index][distinct[index]] = 1
    np.testing.assert_allclose(numpy_of(sparse_multilabel_categorical_crossentropy(distinct, y_pred)),
                               numpy_multilabel(dense_distinct, y_pred), rtol=1e-4)
    # mask_zero: index 0 pads the positives and class 0 is no class.
    without_zero = dense[..., 1:].copy()
    for index in np.ndindex(positives.shape[:-1]):
        without_zero[index] = 0
        without_zero[index][[p - 1 for p in positives[index] if p]] = 1
    np.testing.assert_allclose(numpy_of(sparse_multilabel_categorical_crossentropy(positives, y_pred, True)),
                               numpy_multilabel(without_zero, y_pred[..., 1:]), rtol=1e-4)


def test_search_layer_finds_the_embedding_inside_a_bert4k_model():
    from bert4k.models import build_transformer_model

    config = dict(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    bert = build_transformer_model(config, return_keras_model=False)
    output = keras.layers.Dense(2)(keras.layers.Lambda(lambda x: x[:, 0])(bert.model.output))
    layer = search_layer(output, "Embedding-Token")
    assert layer is bert.model.get_layer("Embedding-Token") and tuple(layer.embeddings.shape) == (30, 8)
    assert search_layer(output, "No-Such-Layer") is None


# ---------------------------------------------------------------------------- layers


def test_conditional_layer_normalization_matches_numpy():
    """relation extraction: `LayerNormalization(conditional=True)([output, subject])`."""
    x = RNG.normal(size=(2, 3, 4)).astype("float32")
    cond = RNG.normal(size=(2, 5)).astype("float32")
    layer = LayerNormalization(conditional=True, hidden_units=6, hidden_activation="tanh")
    layer([keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(cond)])
    for w in layer.weights:
        w.assign(RNG.normal(size=w.shape).astype("float32"))
    weights = {w.path.split("/")[-1]: w.numpy() for w in layer.weights}
    hidden = np.tanh(cond @ weights["kernel"])
    gamma = weights["gamma"] + hidden @ weights["gamma_dense"]
    beta = weights["beta"] + hidden @ weights["beta_dense"]
    normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
    expected = normed * gamma[:, None] + beta[:, None]
    np.testing.assert_allclose(numpy_of(layer([x, cond])), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"condition must be \[batch, size\]"):
        LayerNormalization(conditional=True)([x, x])


def test_loss_layer_output_axis_masks_and_compute_output_shape():
    """A Loss over `[y_true, y_pred]` returning `y_pred`, whose `compute_loss` sees the inputs' Keras masks."""
    seen = {}

    class MaskedCrossEntropy(Loss):
        def compute_loss(self, inputs, mask=None):
            y_true, y_pred = inputs
            seen["mask"] = mask
            y_mask = K.cast(mask[1], K.floatx())
            loss = K.sparse_categorical_crossentropy(y_true, y_pred)
            return K.sum(loss * y_mask) / K.sum(y_mask)

    ids = keras.Input(shape=(None,), dtype="int32")
    hidden = keras.layers.Embedding(6, 4, mask_zero=True)(ids)  # masks id 0, as bert4keras' token embedding
    probs = keras.layers.Dense(6, activation="softmax")(hidden)
    output = MaskedCrossEntropy(1)([ids, probs])
    model = keras.Model(ids, output)
    model.compile(optimizer="sgd")
    batch = np.array([[1, 2, 3, 0], [4, 5, 0, 0]])
    predicted = model.predict(batch, verbose=0)
    picked = predicted[np.arange(2)[:, None], np.arange(4)[None], batch]
    expected = -np.log(picked)[batch != 0].mean()
    assert np.isclose(model.evaluate(batch, verbose=0), expected, rtol=1e-5)
    assert seen["mask"][0] is None and seen["mask"][1] is not None
    assert MaskedCrossEntropy(1).compute_output_shape([(None, 4), (None, 4, 6)]) == (None, 4, 6)


def test_a_custom_layer_with_compute_output_shape_and_compute_mask_in_a_functional_model():
    """bert-of-theseus style: a user Layer subclass overriding compute_output_shape / compute_mask."""

    class FirstHalf(keras.layers.Layer):
        def call(self, inputs, mask=None):
            return inputs[..., : inputs.shape[-1] // 2]

        def compute_output_shape(self, input_shape):
            return input_shape[:-1] + (input_shape[-1] // 2,)

        def compute_mask(self, inputs, mask=None):
            return mask

    x = keras.Input(shape=(3, 8))
    y = FirstHalf()(x)
    assert tuple(y.shape) == (None, 3, 4)
    data = RNG.normal(size=(2, 3, 8)).astype("float32")
    np.testing.assert_array_equal(keras.Model(x, y).predict(data, verbose=0), data[..., :4])


# ---------------------------------------------------------------------------- snippets


def square(x):
    return x * x


@pytest.mark.parametrize("dummy", [True, False])
def test_parallel_apply_equals_a_loop(dummy):
    data = list(range(40))
    assert sorted(parallel_apply(square, data, workers=2, max_queue_size=4, dummy=dummy)) == [x * x for x in data]
    assert parallel_apply(lambda x: x + 1, data, 2, 4, dummy=dummy, unordered=False) == [x + 1 for x in data]
    results = []
    assert parallel_apply(square, data[:5], 2, 4, callback=results.append, dummy=dummy) is None
    assert sorted(results) == [0, 1, 4, 9, 16]


def test_is_string_and_web_serving():
    assert is_string("文本") and not is_string(b"bytes")
    assert WebServing(port=8864).routes == {}  # answers requests: tests/test_migration_training.py


def test_tokenizer_attributes_the_examples_read(vocab_path):
    from bert4k.tokenizers import Tokenizer, load_vocab

    tokenizer = Tokenizer(str(vocab_path), do_lower_case=True)
    vocab = load_vocab(str(vocab_path))
    assert (tokenizer._token_start_id, tokenizer._token_end_id, tokenizer._token_mask_id) == (
        vocab["[CLS]"], vocab["[SEP]"], vocab["[MASK]"])
    assert tokenizer._vocab_size == len(vocab)
    tokens = tokenizer.tokenize("科学技术", maxlen=4)
    assert tokens == ["[CLS]", "科", "学", "[SEP]"]
    assert tokenizer.tokens_to_ids(tokens) == [vocab[t] for t in tokens]
    assert tokenizer.rematch("科学技术", tokenizer.tokenize("科学技术")) == [[], [0], [1], [2], [3], []]
    token_dict, keep_tokens = load_vocab(str(vocab_path), simplified=True,
                                         startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    token_of = {i: t for t, i in vocab.items()}
    assert [token_of[i] for i in keep_tokens[:4]] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    assert all(token_dict[token_of[i]] == n for n, i in enumerate(keep_tokens))


def test_gplinker_loss_on_efficient_global_pointer_matches_numpy():
    """gplinker: `EfficientGlobalPointer as GlobalPointer` and its sparse multilabel loss over flattened spans."""
    from bert4k.layers import EfficientGlobalPointer as GlobalPointer

    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    logits = GlobalPointer(heads=3, head_size=4, use_bias=False)(x)  # [2, 3, 5, 5]
    shape = K.shape(logits)
    spans = np.array([[[[0, 1], [2, 4]], [[1, 1], [0, 0]], [[3, 3], [0, 0]]],
                      [[[4, 4], [0, 0]], [[0, 2], [1, 3]], [[0, 0], [0, 0]]]])  # [b, heads, k, (start, end)]
    # as gplinker's globalpointer_crossentropy: index = start * seq + end, padding spans (0, 0) with mask_zero
    y_true = spans[..., 0] * 5 + spans[..., 1]
    flat = K.reshape(logits, (shape[0], -1, K.prod(shape[2:])))
    loss = K.mean(K.sum(sparse_multilabel_categorical_crossentropy(y_true, flat, True), axis=1))
    scores = numpy_of(flat)
    dense = np.zeros((2, 3, 24))  # class 0 (span 0..0) is padding: dropped, the rest shift by one
    for index in np.ndindex(y_true.shape[:-1]):
        dense[index][[t - 1 for t in y_true[index] if t]] = 1
    expected = numpy_multilabel(dense, scores[..., 1:]).sum(1).mean()
    assert np.isclose(numpy_of(loss), expected, rtol=1e-4)
