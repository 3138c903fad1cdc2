"""Task heads: span decoding against brute force on hand-made logits, head shapes, masking and pooling."""
import itertools

import keras
import numpy as np
import pytest

from bert4k import build_transformer_model
from bert4k.heads import (
    Span,
    best_span,
    best_span_in_windows,
    build_sequence_classifier,
    build_span_extractor,
    build_token_classifier,
)

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def brute_force(start, end, max_len, allowed):
    best = None
    for i, j in itertools.product(range(len(start)), repeat=2):
        if i <= j < i + max_len and allowed[i] and allowed[j]:
            score = start[i] + end[j]
            if best is None or score > best[2]:
                best = (i, j, score)
    return best


def test_best_span_hand_made():
    start = [0.0, 5.0, 1.0, 0.0, 9.0, 0.0]
    end = [0.0, 0.0, 4.0, 0.0, 0.0, 0.0]
    # The best start (4) has no end after it worth much; the best pair is (1, 2): 5 + 4 = 9, beating (4, 4): 9 + 0.
    # Tie broken by the first maximum in row-major order: (1, 2) before (4, 4).
    assert best_span(start, end, max_answer_length=5) == Span(0, 1, 2, 9.0)
    # An end before its start is never chosen, even with the larger sum.
    assert best_span([0, 0, 9.0], [8.0, 0, 0], 3) == Span(0, 2, 2, 9.0)


def test_best_span_respects_max_length_and_allowed():
    start = [9.0, 0.0, 0.0, 0.0, 0.0]
    end = [0.0, 0.0, 0.0, 0.0, 9.0]
    assert best_span(start, end, 5) == Span(0, 0, 4, 18.0)
    span = best_span(start, end, 4)  # (0, 4) is 5 tokens long: too long
    assert (span.start, span.end) != (0, 4) and span.end - span.start < 4
    allowed = np.array([False, True, True, True, True])  # position 0 ([CLS]/question) is not context
    span = best_span(start, end, 5, allowed)
    assert span.start >= 1 and span.end == 4
    assert best_span(start, end, 5, np.zeros(5, bool)) is None


def test_best_span_matches_brute_force_on_random_logits():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        start, end = rng.normal(size=n), rng.normal(size=n)
        allowed = rng.random(n) < 0.7
        max_len = int(rng.integers(1, 6))
        expected = brute_force(start, end, max_len, allowed)
        got = best_span(start, end, max_len, allowed)
        if expected is None:
            assert got is None
        else:
            assert (got.start, got.end) == expected[:2] and got.score == pytest.approx(expected[2])


def test_best_span_across_windows_picks_highest_valid_window():
    w0 = ([1.0, 2.0, 0.0], [0.0, 3.0, 0.0], None)  # best (1, 1) = 5
    # The largest raw sum (start 2 + end 3 = 21) starts at a position that is not allowed: its best is 1.
    w1 = ([0.0, 0.0, 20.0, 0.0], [0.0, 0.0, 0.0, 1.0], np.array([1, 1, 0, 1], bool))
    w2 = ([0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0], None)  # (1, 3) = 7 needs length 3; else (1, 1) = 4
    assert best_span_in_windows([w0, w1, w2], max_answer_length=3) == Span(2, 1, 3, 7.0)
    assert best_span_in_windows([w0, w1, w2], max_answer_length=2) == Span(0, 1, 1, 5.0)
    assert best_span_in_windows([([0.0], [0.0], np.array([False]))], 3) is None


def test_best_span_errors():
    with pytest.raises(ValueError, match="max_answer_length"):
        best_span([0.0], [0.0], 0)
    with pytest.raises(ValueError, match="1-D"):
        best_span([0.0, 1.0], [0.0], 2)


def _inputs(batch=3, seq=7):
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 50, (batch, seq)).astype("int32")
    ids[0, 5:] = 0  # padding
    segments = np.zeros_like(ids)
    segments[:, 3:] = 1
    return ids, segments


@pytest.mark.parametrize("pooling", ["cls", "pooled", "mean"])
def test_sequence_classifier_shapes(pooling):
    encoder = build_transformer_model(TINY, with_pool=pooling == "pooled")
    model = build_sequence_classifier(encoder, 5, pooling=pooling)
    logits = model.predict(list(_inputs()), verbose=0)
    assert logits.shape == (3, 5) and logits.dtype == np.float32


def test_mean_pooling_ignores_padding():
    encoder = build_transformer_model(TINY)
    model = build_sequence_classifier(encoder, 2, pooling="mean", dropout=0.0)
    ids, segments = _inputs()
    base = model.predict([ids, segments], verbose=0)
    # Changing what sits in padded positions of row 0 (still padding) changes nothing; extending it does.
    longer = ids.copy()
    longer[0, 5] = 7
    assert np.allclose(model.predict([ids, segments], verbose=0), base, atol=1e-6)
    assert not np.allclose(model.predict([longer, segments], verbose=0)[0], base[0], atol=1e-6)


def test_classifier_errors():
    with pytest.raises(ValueError, match="pooling"):
        build_sequence_classifier(build_transformer_model(TINY), 2, pooling="max")
    with pytest.raises(ValueError, match="with_pool"):
        build_sequence_classifier(build_transformer_model(TINY), 2, pooling="pooled")


def test_span_extractor_masks_non_context_positions():
    model = build_span_extractor(build_transformer_model(TINY))
    ids, segments = _inputs()
    start, end = model.predict([ids, segments], verbose=0)
    assert start.shape == end.shape == (3, 7)
    allowed = (segments == 1) & (ids != 0)
    allowed[:, 0] = True  # [CLS]: the "not in this window" target
    for logits in (start, end):
        assert np.all(logits[~allowed] <= -1e8)
        assert np.all(np.abs(logits[allowed]) < 1e3)


def test_span_extractor_trains_start_and_end_separately():
    keras.utils.set_random_seed(0)
    model = build_span_extractor(build_transformer_model(TINY))
    ids, segments = _inputs(8, 7)
    ids[ids == 0] = 3
    targets = (np.full(8, 4), np.full(8, 5))
    model.compile(keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit([ids, segments], targets, epochs=15, verbose=0)
    start, end = model.predict([ids, segments], verbose=0)
    # Start and end are two outputs, not one tensor seen twice: each learns its own position.
    assert np.all(start.argmax(-1) == 4) and np.all(end.argmax(-1) == 5)


def _feature_rows(rng, rows: int):
    """Rows whose answer position (a random context position) only feature 0 marks; features 1-2 are noise."""
    ids = rng.integers(3, 50, size=(rows, 7)).astype("int32")
    segments = np.zeros_like(ids)
    segments[:, 2:] = 1
    answer = rng.integers(2, 7, size=rows)
    features = rng.normal(size=(rows, 7, 3)).astype("float32")
    features[..., 0] = np.arange(7)[None, :] == answer[:, None]
    return [ids, segments, features], answer


def test_span_extractor_features_start_neutral_then_point_at_the_answer(tmp_path):
    """Zero-initialised: with any features the logits equal the plain head's on the same encoder; trained on answers
    that only a feature marks, the head finds them in new rows (token ids alone cannot: the plain head's accuracy on
    new rows is chance); `.keras` round trip."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    encoder = build_transformer_model(TINY)
    plain, featured = build_span_extractor(encoder), build_span_extractor(encoder, num_features=3)
    featured.get_layer("Span-Logits").set_weights(plain.get_layer("Span-Logits").get_weights())
    (x, answer), (x_new, answer_new) = _feature_rows(rng, 64), _feature_rows(rng, 32)
    for a, b in zip(plain.predict(x[:2], verbose=0), featured.predict(x, verbose=0)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    featured.compile(keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    featured.fit(x, (answer, answer), epochs=30, batch_size=16, verbose=0)
    start, end = featured.predict(x_new, verbose=0)
    assert np.mean(start.argmax(-1) == answer_new) > 0.9 and np.mean(end.argmax(-1) == answer_new) > 0.9
    featured.save(tmp_path / "qa.keras")
    again = keras.models.load_model(tmp_path / "qa.keras", compile=False)
    np.testing.assert_allclose(again.predict(x_new, verbose=0)[0], start, atol=1e-5)
    with pytest.raises(ValueError, match="num_features must be ≥ 0"):
        build_span_extractor(encoder, num_features=-1)


def test_token_classifier_shapes():
    model = build_token_classifier(build_transformer_model(TINY), 4)
    logits = model.predict(list(_inputs()), verbose=0)
    assert logits.shape == (3, 7, 4)
