"""Objectives: each loss equals a direct numpy cross-entropy over the positions it should score, the label builders
select the right positions, and `model.fit` on a tiny Transformer lowers every loss."""
import keras
import numpy as np
import pytest

from bert4k import objectives
from bert4k.config import TransformerConfig
from bert4k.data import mlm_mask
from bert4k.models.transformer import Transformer
from bert4k.objectives import CausalLMLoss, MaskedAccuracy, MaskedLMLoss

V = 11


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def reference_ce(logits, pairs):
    """Mean of −log softmax(logits[b, t])[label] over the given (b, t, label) triples."""
    lp = log_softmax(logits.astype(np.float64))
    return float(np.mean([-lp[b, t, label] for b, t, label in pairs]))


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (3, 6, V)).astype("float32")
    tokens = np.array([[5, 6, 7, 8, 9, 10], [3, 4, 5, 6, 0, 0], [7, 2, 0, 0, 0, 0]], "int32")
    return logits, tokens


@pytest.mark.parametrize("from_logits", [True, False])
def test_masked_lm_loss_scores_only_labelled_positions(batch, from_logits):
    logits, _ = batch
    labels = np.zeros((3, 6), "int32")
    labels[0, 1], labels[0, 4], labels[1, 0], labels[2, 1] = 3, 7, 10, 2
    pairs = [(0, 1, 3), (0, 4, 7), (1, 0, 10), (2, 1, 2)]
    y_pred = logits if from_logits else keras.ops.softmax(logits)
    got = float(MaskedLMLoss(from_logits=from_logits)(labels, y_pred))
    assert got == pytest.approx(reference_ce(logits, pairs), rel=1e-5)


def test_lm_loss_is_shifted_and_skips_padding(batch):
    logits, tokens = batch
    pairs = [(b, t, tokens[b, t + 1]) for b in range(3) for t in range(5) if tokens[b, t + 1] != 0]
    got = float(CausalLMLoss(from_logits=True)(objectives.lm_labels(tokens), logits))
    assert got == pytest.approx(reference_ce(logits, pairs), rel=1e-5)


def test_lm_labels_with_other_pad_id():
    np.testing.assert_array_equal(objectives.lm_labels([[4, 5, 1, 1]], pad_id=1), [[4, 5, 0, 0]])


def test_unilm_loss_scores_only_next_tokens_in_the_target(batch):
    logits, tokens = batch
    segments = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0]], "int32")
    # position t predicts token t+1 when t+1 is a (non-padding) target token
    pairs = [(b, t, tokens[b, t + 1]) for b in range(3) for t in range(5)
             if segments[b, t + 1] == 1 and tokens[b, t + 1] != 0]
    assert len(pairs) == 3 + 2 + 1
    labels = objectives.unilm_labels(tokens, segments)
    got = float(CausalLMLoss(from_logits=True)(labels, logits))
    assert got == pytest.approx(reference_ce(logits, pairs), rel=1e-5)


def test_plm_labels_pick_the_last_k_of_the_order():
    tokens = np.array([[5, 6, 7, 8, 9, 0], [3, 4, 0, 0, 0, 0]], "int32")
    ranks = np.array([[3, 0, 4, 1, 2, 5], [1, 0, 2, 3, 4, 5]], "int32")
    # row 0: last 2 of the order are ranks 3, 4 → positions 0, 2; row 1 has 2 real tokens → both.
    np.testing.assert_array_equal(objectives.plm_labels(tokens, ranks, num_predict=2),
                                  [[5, 0, 7, 0, 0, 0], [3, 4, 0, 0, 0, 0]])
    np.testing.assert_array_equal(objectives.plm_labels(tokens, ranks, num_predict=1),
                                  [[0, 0, 7, 0, 0, 0], [3, 0, 0, 0, 0, 0]])


def test_plm_loss_equals_cross_entropy_on_the_predicted_positions(batch):
    logits, tokens = batch
    ranks = objectives.sample_perm_ranks(tokens, rng=3)
    labels = objectives.plm_labels(tokens, ranks, num_predict=2)
    real = tokens != 0
    pairs = [(b, t, tokens[b, t]) for b in range(3) for t in range(6) if real[b, t] and ranks[b, t] >= real[b].sum() - 2]
    assert len(pairs) == 6
    got = float(MaskedLMLoss(from_logits=True)(labels, logits))
    assert got == pytest.approx(reference_ce(logits, pairs), rel=1e-5)


def test_sample_perm_ranks_permutes_real_tokens_and_puts_padding_last():
    tokens = np.array([[5, 6, 7, 8, 9, 10, 11, 12], [3, 4, 5, 0, 0, 0, 0, 0]], "int32")
    ranks = objectives.sample_perm_ranks(tokens, rng=0)
    assert sorted(ranks[0]) == list(range(8))
    assert sorted(ranks[1, :3]) == [0, 1, 2]
    np.testing.assert_array_equal(ranks[1, 3:], [3, 4, 5, 6, 7])
    np.testing.assert_array_equal(objectives.sample_perm_ranks(tokens, rng=0), ranks)
    orders = {tuple(objectives.sample_perm_ranks(tokens, rng=s)[0]) for s in range(5)}
    assert len(orders) > 1


def test_masked_accuracy_counts_labelled_tokens_over_batches(batch):
    logits, tokens = batch
    metric = MaskedAccuracy()
    labels = np.zeros_like(tokens)
    labels[0, :3] = logits[0, :3].argmax(-1)  # 3 right
    labels[1, 0] = (logits[1, 0].argmax() + 1) % V or 1  # 1 wrong
    metric.update_state(labels, logits)
    assert float(metric.result()) == pytest.approx(3 / 4)
    metric.update_state(np.where(np.arange(6) == 0, logits.argmax(-1), 0), logits)  # 3 more right
    assert float(metric.result()) == pytest.approx(6 / 7)
    shifted = MaskedAccuracy(shift=1)  # the prediction at t is scored against the label at t + 1
    labels = np.zeros_like(tokens)
    labels[:, 1:] = logits.argmax(-1)[:, :-1]
    labels[0, 1] = logits[0, 0].argsort()[-2]  # the second-best id: wrong
    valid = np.count_nonzero(labels)
    shifted.update_state(labels, logits)
    assert float(shifted.result()) == pytest.approx((valid - 1) / valid)


def test_all_ignored_batch_gives_zero_loss_not_nan(batch):
    logits, _ = batch
    assert float(MaskedLMLoss(from_logits=True)(np.zeros((3, 6), "int32"), logits)) == 0.0


def test_compile_kwargs_rejects_unknown_objective():
    with pytest.raises(ValueError, match="unknown objective"):
        objectives.compile_kwargs("mass")


# --- model.fit lowers each loss ---

CONFIG = TransformerConfig(vocab_size=30, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)


def fit_data(objective: str, rng: np.random.Generator):
    tokens = rng.integers(5, 30, (8, 12)).astype("int32")
    tokens[::2, 9:] = 0  # some padding
    segments = np.zeros_like(tokens)
    if objective == "mlm":
        masked = [mlm_mask(row, 30, mask_id=4, special_ids=[1, 2, 3], rate=0.3, rng=rng) for row in tokens]
        inputs, labels = map(np.stack, zip(*masked))
        return [inputs, segments], labels
    if objective == "lm":
        return [tokens, segments], objectives.lm_labels(tokens)
    if objective == "unilm":
        segments[:, 5:] = tokens[:, 5:] != 0
        return [tokens, segments], objectives.unilm_labels(tokens, segments)
    ranks = objectives.sample_perm_ranks(tokens, rng)
    return [tokens, segments, ranks], objectives.plm_labels(tokens, ranks, num_predict=4)


@pytest.mark.parametrize("objective", objectives.OBJECTIVES)
def test_fit_lowers_the_loss(objective):
    keras.utils.set_random_seed(0)
    model = Transformer(CONFIG, application=objective, logits=True, mask_token_id=4)
    # Tracing costs more than these steps: run eagerly, except one objective that checks the compiled train step.
    model.compile(keras.optimizers.AdamW(1e-2), run_eagerly=objective != "unilm",
                  **objectives.compile_kwargs(objective, from_logits=True))
    x, y = fit_data(objective, np.random.default_rng(0))
    history = model.fit(x, y, batch_size=8, epochs=6, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]
    assert 0.0 <= history["accuracy"][-1] <= 1.0
