"""Training set-up: weight-decay exclusions act on the right variables, schedule values by hand, gradient
accumulation equals one averaged update, EMA replaces the weights, resume continues an interrupted run."""
import csv

import keras
import numpy as np
import pytest

from bert4k import build_transformer_model, training
from bert4k.heads import build_sequence_classifier

TINY = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _classifier():
    keras.utils.set_random_seed(0)
    return build_sequence_classifier(build_transformer_model(TINY), 2, dropout=0.0)


def _data(n=16, seq=6):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 40, (n, seq)).astype("int32")
    return [ids, np.zeros_like(ids)], (ids[:, 1] % 2).astype("int32")


def _small_model():
    """A two-layer MLP: enough for the optimizer and callback behaviour, cheap to trace."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])


def _small_data(n=16):
    x = np.random.default_rng(0).normal(size=(n, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


def test_weight_decay_skips_norms_and_biases():
    model = _classifier()
    lr, wd = 0.1, 0.5
    optimizer = training.create_optimizer(model, lr, weight_decay=wd, clipnorm=None)
    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    # Zero gradients: Adam's step is 0, so only the decoupled decay moves a variable: w ← w (1 − lr·wd).
    optimizer.apply_gradients([(np.zeros(v.shape, "float32"), v) for v in variables])
    excluded = {v.path for v in training.no_decay_variables(model)}
    assert excluded, "nothing excluded"
    for v, old in zip(variables, before):
        is_norm_or_bias = v.name in ("gamma", "beta", "bias")
        assert (v.path in excluded) == is_norm_or_bias, v.path
        expected = old if is_norm_or_bias else old * (1 - lr * wd)
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, err_msg=v.path)
    assert any("Norm/gamma" in p for p in excluded) and any(p.endswith("Classifier-Dense/bias") for p in excluded)


def test_warmup_linear_decay_values():
    schedule = training.warmup_linear_decay(2.0, total_steps=100, warmup_steps=10)
    expected = {0: 0.0, 5: 1.0, 10: 2.0, 55: 1.0, 100: 0.0, 150: 0.0}
    for step, value in expected.items():
        assert float(schedule(step)) == pytest.approx(value, abs=1e-6), step
    constant = training.warmup_linear_decay(1.0, total_steps=10, warmup_steps=0, final_multiplier=0.5)
    assert [float(constant(s)) for s in (0, 5, 10, 20)] == pytest.approx([1.0, 0.75, 0.5, 0.5])


def test_piecewise_linear_matches_bert4keras_example():
    # bert4keras: {1000: 1, 2000: 0.1} rises from 0 to 1 over [0, 1000], falls to 0.1 by 2000, then stays.
    schedule = training.PiecewiseLinearSchedule(1.0, {1000: 1, 2000: 0.1})
    for step, value in {0: 0.0, 500: 0.5, 1000: 1.0, 1500: 0.55, 2000: 0.1, 5000: 0.1}.items():
        assert float(schedule(step)) == pytest.approx(value, abs=1e-6), step
    restored = training.PiecewiseLinearSchedule.from_config(schedule.get_config())
    assert float(restored(1500)) == pytest.approx(0.55)


def test_optimizer_uses_the_schedule():
    model = _classifier()
    optimizer = training.create_optimizer(model, 1e-3, total_steps=100, warmup=0.1)
    assert float(optimizer.learning_rate) == pytest.approx(0.0)
    optimizer.iterations.assign(5)
    assert float(optimizer.learning_rate) == pytest.approx(5e-4)
    optimizer.iterations.assign(55)
    assert float(optimizer.learning_rate) == pytest.approx(5e-4)


def test_gradient_accumulation_equals_one_averaged_update():
    accumulating = training.create_optimizer(_classifier(), 1e-2, grad_accum_steps=2, weight_decay=0.0, clipnorm=None)
    assert accumulating.gradient_accumulation_steps == 2
    assert training.create_optimizer(_classifier(), 1e-2, grad_accum_steps=1).gradient_accumulation_steps is None
    var_a = keras.Variable(np.ones(3, "float32"))
    var_b = keras.Variable(np.ones(3, "float32"))
    g1, g2 = np.array([1.0, -2.0, 0.5], "float32"), np.array([3.0, 0.0, -0.5], "float32")
    accumulating.apply_gradients([(g1, var_a)])
    np.testing.assert_array_equal(var_a.numpy(), np.ones(3))  # no update after the first micro-batch
    accumulating.apply_gradients([(g2, var_a)])
    single = keras.optimizers.AdamW(1e-2, weight_decay=0.0, epsilon=1e-6)
    single.apply_gradients([((g1 + g2) / 2, var_b)])
    np.testing.assert_allclose(var_a.numpy(), var_b.numpy(), rtol=1e-6)


def test_ema_weights_replace_the_model_weights_after_fit():
    model = _small_model()
    optimizer = training.create_optimizer(model, 1e-2, use_ema=True, ema_momentum=0.5)
    assert optimizer.use_ema and optimizer.ema_momentum == 0.5
    model.compile(optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _small_data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert optimizer.iterations.numpy() == 2
    averages = optimizer._model_variables_moving_average
    for v, avg in zip(model.trainable_variables, averages):
        np.testing.assert_array_equal(v.numpy(), avg.numpy())


def test_callbacks_write_log_and_curve_and_resume(tmp_path):
    x, y = _small_data()

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    def run(extra):
        model = _small_model()
        model.compile(training.create_optimizer(model, 1e-3), loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        callbacks = training.training_callbacks(str(tmp_path), before=[training.EpochEvaluation(lambda: {"f": 1.0})])
        model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=callbacks + extra)

    with pytest.raises(KeyboardInterrupt):
        run([Interrupt()])
    assert (tmp_path / "backup").is_dir()
    run([])  # resumes at epoch 2
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert {"loss", "f"} <= set(rows[0]), rows[0]
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "backup").exists()  # removed once training finished


def test_best_weights_keeps_the_best_epoch_across_a_resume(tmp_path):
    """Dev values 0.2, 0.9, NaN, 0.5: training ends with the weights of epoch 2, also when the run is split in two
    (the record on disk carries the best over to the second `fit`)."""
    x, y = _small_data()
    values = iter([0.2, 0.9, float("nan"), 0.5])
    model = _small_model()
    model.compile(keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([w.copy() for w in model.get_weights()])

    def fit(epochs, initial_epoch):
        best = training.BestWeights(str(tmp_path / "best.weights.h5"), "dev")
        model.fit(x, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=8, verbose=0,
                  callbacks=[training.EpochEvaluation(lambda: {"dev": next(values)}), best, Snapshot()])
        return best

    fit(2, 0)
    best = fit(4, 2)
    assert best.best() == {"epoch": 2, "value": 0.9, "monitor": "dev"}
    assert not np.allclose(snapshots[1][0], snapshots[3][0])
    for got, want in zip(model.get_weights(), snapshots[1]):
        np.testing.assert_array_equal(got, want)


def test_mixed_precision_heads_stay_float32():
    previous = training.use_mixed_precision("mixed_bfloat16")
    try:
        model = _classifier()
        assert model.get_layer("Embedding-Token").compute_dtype == "bfloat16"
        logits = model.predict(_data()[0], verbose=0)
        assert logits.dtype == np.float32
    finally:
        keras.config.set_dtype_policy(previous)


def test_set_seed_repeats_initialisation():
    training.set_seed(3)
    a = build_transformer_model(TINY).get_weights()
    training.set_seed(3)
    b = build_transformer_model(TINY).get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))


# === bert4k.optimizers: bert4keras names on Keras built-ins ===

def test_bert4keras_weight_decay_patterns_match_variable_paths():
    from bert4k import optimizers

    model = _classifier()
    AdamW = optimizers.extend_with_weight_decay(optimizers.Adam, "AdamWTest")
    lr, wd = 0.1, 0.5
    optimizer = AdamW(learning_rate=lr, weight_decay_rate=wd, exclude_from_weight_decay=["Norm", "bias"])
    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    optimizer.apply_gradients([(np.zeros(v.shape, "float32"), v) for v in variables])
    for v, old in zip(variables, before):
        skip = "Norm" in v.path or "bias" in v.path
        np.testing.assert_allclose(v.numpy(), old if skip else old * (1 - lr * wd), rtol=1e-6, err_msg=v.path)
    assert optimizer.epsilon == 1e-6 and isinstance(optimizer, keras.optimizers.Adam)


def test_bert4keras_extensions_compose_and_round_trip():
    from bert4k import optimizers

    AdamWLR = optimizers.extend_with_piecewise_linear_lr(optimizers.AdamW, "AdamWLRTest")
    Extended = optimizers.extend_with_gradient_accumulation(AdamWLR, "AdamWLRGTest")
    optimizer = Extended(learning_rate=1.0, lr_schedule={10: 1.0, 20: 0.5}, grad_accum_steps=4,
                         weight_decay_rate=0.02, exclude_from_weight_decay=["Norm"])
    assert optimizer.gradient_accumulation_steps == 4 and optimizer.weight_decay == 0.02
    assert float(optimizer.learning_rate) == 0.0  # step 0 of the warmup
    restored = Extended.from_config(optimizer.get_config())
    assert restored.gradient_accumulation_steps == 4 and restored.weight_decay_patterns == ["Norm"]
    plain = AdamWLR(learning_rate=1.0, lr_schedule={10: 1.0, 20: 0.5})
    for step, value in {5: 0.5, 15: 0.75, 40: 0.5}.items():
        plain.iterations.assign(step)
        assert float(plain.learning_rate) == pytest.approx(value)


def test_bert4keras_ema_apply_and_reset():
    from bert4k import optimizers

    AdamEMA = optimizers.extend_with_exponential_moving_average(optimizers.Adam, "AdamEMATest")
    model = _small_model()
    optimizer = AdamEMA(learning_rate=0.1, ema_momentum=0.5)
    model.compile(optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _small_data()
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    trained = [v.numpy().copy() for v in model.trainable_variables]
    averages = [a.numpy().copy() for a in optimizer._model_variables_moving_average]
    optimizer.apply_ema_weights()
    for v, a in zip(model.trainable_variables, averages):
        np.testing.assert_array_equal(v.numpy(), a)
    optimizer.reset_old_weights()
    for v, t in zip(model.trainable_variables, trained):
        np.testing.assert_array_equal(v.numpy(), t)
    assert not np.allclose(trained[0], averages[0])


def test_bert4keras_unavailable_options_raise():
    from bert4k import optimizers

    with pytest.raises(NotImplementedError, match="beta1"):
        optimizers.AdaFactor(beta1=0.9)
    with pytest.raises(NotImplementedError, match="bias"):
        optimizers.Adam(bias_correction=False)
    with pytest.raises(NotImplementedError, match="lookahead"):
        optimizers.extend_with_lookahead(optimizers.Adam)
    assert isinstance(optimizers.extend_with_layer_adaptation(optimizers.Adam)(), keras.optimizers.Lamb)
    assert optimizers.AdaFactor(learning_rate=None).relative_step
