"""bert4keras' gradient-surgery examples through bert4k (TensorFlow backend), in bert4keras style: gradient penalty
inside a compiled loss, adversarial (FGM) / virtual adversarial training rewriting tf.keras' train function, and
`WebServing`. Each is checked against an independent computation with `tf.GradientTape` on the same numbers."""
import json
import urllib.error
import urllib.parse
import urllib.request

import keras
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="emulates tf.keras: TensorFlow")

VOCAB = 40
CONFIG = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
              max_position_embeddings=16, type_vocab_size=2, hidden_act="gelu", hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)


def tiny_classifier(tmp_path, seed=0, classes=3):
    """bert4keras' classifier: `[CLS]` of a (tiny, random) BERT, then a softmax Dense."""
    from bert4k.backend import keras as b4k_keras
    from bert4k.models import build_transformer_model

    keras.utils.set_random_seed(seed)
    (tmp_path / "bert_config.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    bert = build_transformer_model(config_path=str(tmp_path / "bert_config.json"), return_keras_model=False)
    output = b4k_keras.layers.Lambda(lambda x: x[:, 0])(bert.model.output)
    output = b4k_keras.layers.Dense(classes, activation="softmax", kernel_initializer=bert.initializer)(output)
    return b4k_keras.models.Model(bert.model.input, output)


def batch(seed=0, size=4, length=6):
    """Token ids all distinct (no padding), so per-occurrence and per-row embedding gradients coincide."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1, VOCAB))[:size * length].reshape(size, length).astype("int32")
    return [ids, np.zeros_like(ids)], rng.integers(0, 3, (size, 1)).astype("int32")


def table_of(model):
    return model.get_layer("Embedding-Token").embeddings


def cross_entropy(y, probabilities):
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probabilities))


# ---------------------------------------------------------------------------------------- gradient penalty


def sparse_categorical_crossentropy(y_true, y_pred):
    from bert4k.backend import K

    y_true = K.reshape(y_true, K.shape(y_pred)[:-1])
    y_true = K.cast(y_true, "int32")
    y_true = K.one_hot(y_true, K.shape(y_pred)[-1])
    return K.categorical_crossentropy(y_true, y_pred)


def loss_with_gradient_penalty(y_true, y_pred, epsilon=1):
    """bert4keras' example loss, as written there."""
    from bert4k.backend import K, search_layer

    loss = K.mean(sparse_categorical_crossentropy(y_true, y_pred))
    embeddings = search_layer(y_pred, "Embedding-Token").embeddings
    gp = K.sum(K.gradients(loss, [embeddings])[0].values ** 2)
    return loss + 0.5 * epsilon * gp


def penalised_loss_oracle(model, x, y, epsilon=1.0):
    """The same loss by tf.GradientTape (dense gradient of the table), and the penalty term alone."""
    table = table_of(model).value
    with tf.GradientTape() as tape:
        tape.watch(table)
        loss = cross_entropy(y, model(x, training=False))
    gradient = tf.convert_to_tensor(tape.gradient(loss, table))
    penalty = 0.5 * epsilon * float(tf.reduce_sum(gradient ** 2))
    return float(loss) + penalty, penalty


def test_gradient_penalty_loss_and_its_train_step_match_tape(tmp_path):
    model = tiny_classifier(tmp_path)
    model.compile(loss=loss_with_gradient_penalty, optimizer=keras.optimizers.SGD(0.1))
    x, y = batch()
    expected, penalty = penalised_loss_oracle(model, x, y)
    assert penalty > 1e-3  # the term being checked is not negligible
    assert model.test_on_batch(x, y) == pytest.approx(expected, abs=1e-4)

    # one SGD step: the gradient of (loss + penalty) w.r.t. every weight, the penalty differentiated twice
    weights = model.trainable_weights
    table = table_of(model)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(table.value)
            loss = cross_entropy(y, model(x, training=True))
        penalty = tf.reduce_sum(tf.convert_to_tensor(inner.gradient(loss, table.value)) ** 2)
        total = loss + 0.5 * penalty
    expected_after = [w.numpy() - 0.1 * g.numpy() for w, g in
                      zip(weights, [tf.convert_to_tensor(g) for g in outer.gradient(total, weights)])]
    assert model.train_on_batch(x, y) == pytest.approx(float(total), abs=1e-4)
    for weight, value in zip(weights, expected_after):
        np.testing.assert_allclose(weight.numpy(), value, atol=1e-5, err_msg=weight.path)


def test_search_layer_without_layer_history_outside_a_loss_or_ambiguous_raises(tmp_path):
    from bert4k.backend import search_layer

    with pytest.raises(TypeError, match=r"search_layer\(\.\.\., 'Embedding-Token'\): .*outside a compiled loss"):
        search_layer(keras.ops.ones((2, 2)), "Embedding-Token")

    # two copies of a model inside one: two different layers called 'dense' -> no guess
    inputs = keras.Input((3,))
    first = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")], name="first")
    second = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="dense")], name="second")
    model = keras.Model(inputs, second(first(inputs)))

    def loss(y_true, y_pred):
        search_layer(y_pred, "dense")
        return keras.ops.mean((y_true - y_pred) ** 2)

    model.compile(loss=loss, optimizer="sgd")
    with pytest.raises(ValueError, match=r"2 different layers are called 'dense'"):
        model.train_on_batch(np.zeros((2, 3)), np.zeros((2, 1)))


# --------------------------------------------------------------------- adversarial training (train function)


def adversarial_training(model, embedding_name, epsilon=1):
    """bert4keras' FGM example function, as written there."""
    from bert4k.backend import K, search_layer

    if model.train_function is None:
        model._make_train_function()
    old_train_function = model.train_function
    for output in model.outputs:
        embedding_layer = search_layer(output, embedding_name)
        if embedding_layer is not None:
            break
    if embedding_layer is None:
        raise LookupError("Embedding layer not found")  # bert4keras: Exception
    embeddings = embedding_layer.embeddings
    gradients = K.gradients(model.total_loss, [embeddings])
    gradients = K.zeros_like(embeddings) + gradients[0]
    inputs = model._feed_inputs + model._feed_targets + model._feed_sample_weights
    embedding_gradients = K.function(inputs=inputs, outputs=[gradients], name="embedding_gradients")

    def train_function(inputs):
        grads = embedding_gradients(inputs)[0]
        delta = epsilon * grads / (np.sqrt((grads ** 2).sum()) + 1e-8)
        K.set_value(embeddings, K.eval(embeddings) + delta)
        outputs = old_train_function(inputs)
        K.set_value(embeddings, K.eval(embeddings) - delta)
        return outputs

    model.train_function = train_function


def fgm_step_oracle(model, x, y, learning_rate, epsilon):
    """FGM by hand: table gradient (tape), perturb, a Keras Adam step on the loss, remove the perturbation."""
    table = table_of(model)
    with tf.GradientTape() as tape:
        tape.watch(table.value)
        loss = cross_entropy(y, model(x, training=False))
    gradient = tf.convert_to_tensor(tape.gradient(loss, table.value)).numpy()
    delta = epsilon * gradient / (np.sqrt((gradient ** 2).sum()) + 1e-8)
    table.assign(table.numpy() + delta)
    optimizer = keras.optimizers.Adam(learning_rate)
    with tf.GradientTape() as tape:
        loss = cross_entropy(y, model(x, training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_weights), model.trainable_weights))
    table.assign(table.numpy() - delta)
    return float(loss), delta


def test_fgm_train_function_step_equals_a_step_by_hand(tmp_path):
    x, y = batch(1)
    model, reference = tiny_classifier(tmp_path, seed=3), tiny_classifier(tmp_path, seed=4)
    reference.set_weights(model.get_weights())
    expected_loss, delta = fgm_step_oracle(reference, x, y, 0.01, epsilon=0.5)
    assert np.abs(delta).max() > 1e-2  # a perturbation left in the table would show

    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(0.01),
                  metrics=["sparse_categorical_accuracy"])
    adversarial_training(model, "Embedding-Token", 0.5)
    loss, accuracy = model.train_on_batch(x, y)
    assert loss == pytest.approx(expected_loss, abs=1e-5) and 0 <= accuracy <= 1
    for weight, value in zip(model.weights, reference.weights):
        np.testing.assert_allclose(weight.numpy(), value.numpy(), atol=1e-5, err_msg=weight.path)


def test_fit_runs_an_assigned_train_function_once_per_batch(tmp_path):
    model = tiny_classifier(tmp_path)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    model._make_train_function()
    keras_step, calls = model.train_function, []

    def train_function(inputs):
        calls.append([np.array(a) for a in inputs])
        return keras_step(inputs)

    model.train_function = train_function
    x, y = batch(2, size=6)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    assert len(calls) == 4 and [len(c) for c in calls] == [4] * 4  # 2 epochs of 2 batches: x, s, y, weights
    np.testing.assert_array_equal(np.concatenate([c[0] for c in calls[:2]]), x[0])
    np.testing.assert_array_equal(np.concatenate([c[2] for c in calls[:2]]), y)
    assert all(np.array_equal(c[3], np.ones(len(c[0]), "float32")) for c in calls)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert model.train_function is train_function


def test_k_function_of_model_outputs_and_feeds_matches_predict(tmp_path):
    """Virtual adversarial training's `K.function(feeds, model.outputs)`, and a stand-in's arithmetic."""
    from bert4k.backend import K

    model = tiny_classifier(tmp_path)
    model.compile(loss="kld", optimizer="adam")
    feeds = model._feed_inputs + model._feed_targets + model._feed_sample_weights
    x, _ = batch(3)
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    values = x + [y, np.ones(4, "float32")]
    np.testing.assert_allclose(K.function(feeds, model.outputs)(values)[0], model.predict(x, verbose=0), atol=1e-6)
    loss = K.function(feeds, [2.0 * model.total_loss - 1.0])(values)[0]
    probabilities = model.predict(x, verbose=0)
    expected = np.mean(np.sum(y * np.log(y.clip(1e-7) / probabilities), axis=-1))
    assert loss == pytest.approx(2 * expected - 1, abs=1e-5)
    assert K.int_shape(table_of(model)) == (VOCAB, 16)
    with pytest.raises(ValueError, match=r"expected a list of 4 arrays"):
        K.function(feeds, model.outputs)(x)


def test_train_function_internals_refuse_what_they_cannot_emulate(tmp_path):
    from bert4k.backend import K

    model = tiny_classifier(tmp_path)
    with pytest.raises(RuntimeError, match="needs a compiled model"):
        model._make_train_function()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    x, y = batch()
    model.train_on_batch(x, y)  # Keras 3 made its own train function
    with pytest.raises(RuntimeError, match=r"model\.total_loss: .* already has a Keras 3 train function"):
        _ = model.total_loss
    with pytest.raises(NotImplementedError, match=r"K\.function\(updates=\.\.\.\)"):
        K.function([], [], updates=[1])
    with pytest.raises(NotImplementedError, match=r"K\.gradients works on model\.total_loss or inside a traced"):
        K.gradients(keras.ops.ones(()), [table_of(model)])


# ------------------------------------------------------------------------------------------------ WebServing


def request(url, data=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
            return response.status, json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode("utf-8"))


def test_web_serving_answers_as_bert4keras():
    from bert4k.snippets import WebServing

    def gen(text, n=2, k=1):
        if n < 0:
            raise ValueError("n must be >= 0")
        return [text * n, k]

    web = WebServing(host="127.0.0.1", port=0)
    web.route("/gen", gen, {"text": (None, True), "n": (int, False), "k": (int, False)})
    web.route("/post", gen, {"text": (None, True)}, method="POST")
    web.start_in_thread()
    base = f"http://127.0.0.1:{web.port}"
    try:
        query = urllib.parse.urlencode({"text": "苹果", "n": "3"})
        assert request(f"{base}/gen?{query}") == (200, {"code": 0, "desc": "succeeded", "data": ["苹果苹果苹果", 1]})
        assert request(f"{base}/gen?n=3") == (200, {"code": 1, "desc": 'lack of "text" argument', "data": {}})
        assert request(f"{base}/gen?text=a&n=-1") == (200, {"code": 2, "desc": "n must be >= 0", "data": {}})
        status, answer = request(f"{base}/gen?text=a&n=x")
        assert status == 400 and answer["code"] == 1 and '"n"' in answer["desc"]
        body = urllib.parse.urlencode({"text": "好"}).encode()
        assert request(f"{base}/post", body) == (200, {"code": 0, "desc": "succeeded", "data": ["好好", 1]})
        assert request(f"{base}/post?text=a")[0] == 405 and request(f"{base}/nowhere")[0] == 404
    finally:
        web.stop()
    with pytest.raises(ValueError, match="method must be 'GET' or 'POST'"):
        web.route("/x", gen, {}, method="PUT")


def test_forfit_answers_next_as_bert4keras_generator_did():
    """Virtual adversarial training draws unlabelled batches by `next(generator.forfit())` inside a callback, while
    fit iterates another forfit: `next` walks the batches in order, forever, apart from Keras' iteration."""
    from bert4k.snippets import DataGenerator

    class Generator(DataGenerator):
        def __iter__(self, random=False):
            for _, x in self.sample(random):
                yield [np.array([[x]]), np.array([[x, x]])], np.array([[x]])

    batches = Generator([1, 2, 3], batch_size=1).forfit(random=False)
    drawn = [next(batches) for _ in range(4)]
    assert [int(dy[0, 0]) for _, dy in drawn] == [1, 2, 3, 1]
    np.testing.assert_array_equal(drawn[1][0][1], [[2, 2]])
    assert isinstance(batches, tf.data.Dataset)
    assert [int(y[0, 0]) for _, y in batches.take(2).as_numpy_iterator()] == [1, 2]
    assert int(next(batches)[1][0, 0]) == 2
