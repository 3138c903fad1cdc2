"""Mask perturbation checks shared by the attention-variant tests: which output rows move when one token changes."""
import keras
import numpy as np


def predict(model, ids, segments):
    return keras.ops.convert_to_numpy(model([ids, segments], training=False))


def changed_rows(model, ids, segments, position, new_token=7):
    """Rows (of row 0) whose output moves by more than 1e-6 when the token at `position` changes."""
    other = ids.copy()
    other[0, position] = new_token if ids[0, position] != new_token else new_token + 1
    diff = np.abs(predict(model, other, segments) - predict(model, ids, segments))[0]
    return [i for i in range(ids.shape[1]) if diff[i].max() > 1e-6]


def check_application_masks(build, vocab_size: int, seed: int = 0):
    """`build(application)` → model; asserts the encoder/mlm (everyone sees every real token, padding unseen),
    lm (causal) and unilm (source bidirectional, target causal) perturbation properties."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(10, vocab_size, size=(1, 8)).astype("int32")
    zeros = np.zeros_like(ids)
    for application in ("encoder", "mlm"):
        model = build(application)
        assert changed_rows(model, ids, zeros, 5) == list(range(8)), application
        padded = np.concatenate([ids, np.zeros((1, 4), "int32")], axis=1)
        np.testing.assert_allclose(predict(model, padded, np.zeros_like(padded))[:, :8], predict(model, ids, zeros),
                                   atol=1e-5, err_msg=application)
    model = build("lm")
    for position in (0, 3, 7):
        assert changed_rows(model, ids, zeros, position) == list(range(position, 8)), ("lm", position)
    model = build("unilm")
    segments = np.array([[0, 0, 0, 1, 1, 1, 1, 1]], dtype="int32")
    assert changed_rows(model, ids, segments, 1) == list(range(8))  # source: seen by everyone
    assert changed_rows(model, ids, segments, 5) == [5, 6, 7]  # target: by itself and later targets only
