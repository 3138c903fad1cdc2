"""Set ranking: NDCG/MRR against hand computations and scikit-learn, listwise losses against numpy definitions,
permutation equivariance and padding of the set Transformer, the LIBSVM reader, and tasks/rank.py end to end."""
import importlib
import json
import math
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from sklearn.metrics import ndcg_score
from sklearn.preprocessing import QuantileTransformer

from bert4k.ranking import (
    RankingList,
    approx_ndcg_loss,
    build_set_ranker,
    lambda_loss,
    mean_reciprocal_rank,
    ndcg_at_k,
    pad_lists,
    read_libsvm_ranking,
    reciprocal_rank,
    softmax_loss,
)
from tests.conftest import DATA

# === metrics ===

def test_ndcg_hand_computation():
    # scores order the documents as labels [0, 3, 1, 2]; gains 2^y − 1 = [0, 7, 1, 3].
    # DCG@3 = 0/log2(2) + 7/log2(3) + 1/log2(4) = 7/1.58496 + 0.5 = 4.91650
    # ideal order [3, 2, 1]: IDCG@3 = 7/1 + 3/log2(3) + 1/2 = 7 + 1.89279 + 0.5 = 9.39279
    labels, scores = [3, 0, 2, 1], [0.8, 0.9, 0.1, 0.5]
    assert ndcg_at_k(labels, scores, 3) == pytest.approx((7 / math.log2(3) + 0.5) / (7 + 3 / math.log2(3) + 0.5))
    assert ndcg_at_k(labels, scores, 1) == 0.0  # the top document has gain 0
    assert ndcg_at_k([0, 0, 0], [1, 2, 3], 3) == 1.0  # no relevant document: every order is ideal (LightGBM)
    assert ndcg_at_k([0, 0], [1, 2], 2, empty=0.0) == 0.0


def test_ndcg_equals_sklearn_with_exponential_gains():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 30))
        labels = rng.integers(0, 5, size=n)
        labels[0] = max(labels[0], 1)
        scores = rng.permutation(n) + rng.random(n) * 0.1  # distinct scores (sklearn averages ties)
        for k in (1, 3, 5, 10):
            expected = ndcg_score([2.0 ** labels - 1], [scores], k=k)
            assert ndcg_at_k(labels, scores, k) == pytest.approx(expected, abs=1e-12)


def test_reciprocal_rank_hand_computation():
    assert reciprocal_rank([0, 2, 1], [0.9, 0.1, 0.5]) == 0.5  # order: 0 (label 0), 2 (label 1) → rank 2
    assert reciprocal_rank([0, 2, 1], [0.9, 0.1, 0.5], relevant=2) == 1 / 3
    assert reciprocal_rank([0, 0], [1.0, 2.0]) == 0.0
    assert mean_reciprocal_rank([[1, 0], [0, 1]], [[2.0, 1.0], [2.0, 1.0]]) == 0.75


def test_ndcg_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"labels \(3,\) and scores \(2,\)"):
        ndcg_at_k([1, 0, 2], [0.1, 0.2], 3)


# === losses ===

def padded_batch(seed=0):
    """Two lists (5 and 3 documents) padded to 6; labels −1 on padding."""
    rng = np.random.default_rng(seed)
    labels = np.array([[2, 0, 1, 3, 0, -1], [0, 1, 0, -1, -1, -1]], np.int32)
    scores = rng.normal(size=labels.shape).astype("float32")
    return labels, scores


def np_ideal(gains):
    g = np.sort(gains)[::-1]
    return np.sum(g / np.log2(np.arange(2, len(g) + 2)))


def test_softmax_loss_equals_numpy():
    labels, scores = padded_batch()
    got = keras.ops.convert_to_numpy(softmax_loss(labels, scores))
    for row in range(2):
        real = labels[row] >= 0
        gains, s = 2.0 ** labels[row][real] - 1, scores[row][real].astype(np.float64)
        log_softmax = s - np.log(np.exp(s).sum())
        assert got[row] == pytest.approx(-np.sum(gains / gains.sum() * log_softmax), abs=1e-5)


def test_approx_ndcg_equals_numpy_and_tends_to_ndcg():
    labels, scores = padded_batch(1)
    for temperature in (1.0, 0.1):
        got = keras.ops.convert_to_numpy(approx_ndcg_loss(labels, scores, temperature=temperature))
        for row in range(2):
            real = labels[row] >= 0
            y, s = labels[row][real], scores[row][real].astype(np.float64)
            beats = 1 / (1 + np.exp(-(s[None, :] - s[:, None]) / temperature))
            ranks = 1 + beats.sum(1) - 0.5  # minus the j = i term, sigmoid(0) = 0.5
            gains = 2.0 ** y - 1
            assert got[row] == pytest.approx(-np.sum(gains / np.log2(1 + ranks)) / np_ideal(gains), abs=1e-5)
    sharp = keras.ops.convert_to_numpy(approx_ndcg_loss(labels, scores, temperature=1e-4))
    for row in range(2):
        real = labels[row] >= 0
        assert sharp[row] == pytest.approx(-ndcg_at_k(labels[row][real], scores[row][real], int(real.sum())),
                                           abs=1e-4)


def test_lambda_loss_equals_numpy():
    labels, scores = padded_batch(2)
    got = keras.ops.convert_to_numpy(lambda_loss(labels, scores))
    for row in range(2):
        real = labels[row] >= 0
        y, s = labels[row][real], scores[row][real].astype(np.float64)
        gains, n = 2.0 ** y - 1, int(real.sum())
        rank = np.empty(n)
        rank[np.argsort(-s)] = np.arange(1, n + 1)
        total = 0.0
        for i in range(n):
            for j in range(n):
                if y[i] > y[j]:
                    delta = abs(gains[i] - gains[j]) * abs(1 / np.log2(1 + rank[i]) - 1 / np.log2(1 + rank[j]))
                    total += delta / np_ideal(gains) * np.log1p(np.exp(-(s[i] - s[j])))
        assert got[row] == pytest.approx(total, abs=1e-5)


@pytest.mark.parametrize("loss", [softmax_loss, approx_ndcg_loss, lambda_loss])
def test_losses_ignore_padding_and_irrelevant_lists(loss):
    labels, scores = padded_batch(3)
    moved = scores.copy()
    moved[labels < 0] = 50.0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss(labels, moved)),
                               keras.ops.convert_to_numpy(loss(labels, scores)), atol=1e-6)
    zero = np.where(labels > 0, 0, labels)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loss(zero, scores)), [0.0, 0.0])


# === model ===

def lists(sizes, num_features=5, seed=0):
    rng = np.random.default_rng(seed)
    return [RankingList(rng.normal(size=(n, num_features)).astype("float32"), rng.integers(0, 3, n)) for n in sizes]


def scores(model, features, mask, *extra):
    return keras.ops.convert_to_numpy(model([features, mask, *extra], training=False))


MODELS = {"self": dict(block="self"), "induced": dict(block="induced", inducing_points=3),
          "rank": dict(block="self", max_initial_rank=8)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def ranker(request):
    keras.utils.set_random_seed(0)
    return request.param, build_set_ranker(5, hidden_size=16, num_layers=2, heads=2, dropout=0.0, initializer_range=0.3,
                                           **MODELS[request.param])


def test_permuting_documents_permutes_scores(ranker):
    name, model = ranker
    features, _, mask = pad_lists(lists([7]))
    ranks = [np.arange(7, dtype="int32")[None]] if name == "rank" else []
    base = scores(model, features, mask, *ranks)
    assert np.ptp(base) > 1e-3
    perm = np.random.default_rng(1).permutation(7)
    permuted = scores(model, features[:, perm], mask[:, perm], *(r[:, perm] for r in ranks))
    np.testing.assert_allclose(permuted, base[:, perm], atol=1e-5)
    if name != "rank":  # without rank embedding, the scores depend on the other documents only as a set
        other = features.copy()
        other[0, 3] += 1.0
        assert np.abs(scores(model, other, mask) - base)[0, np.arange(7) != 3].max() > 1e-4


def test_padding_never_changes_real_scores(ranker):
    name, model = ranker
    batch = lists([4, 7, 2], seed=3)
    features, _, mask = pad_lists(batch, 9)
    ranks = [np.tile(np.arange(9, dtype="int32"), (3, 1))] if name == "rank" else []
    together = scores(model, features, mask, *ranks)
    noisy = features.copy()
    noisy[mask == 0] = 100.0  # whatever the padded slots hold
    np.testing.assert_allclose(scores(model, noisy, mask, *ranks), together, atol=1e-5)
    for i, r in enumerate(batch):
        alone_f, _, alone_m = pad_lists([r])
        alone = scores(model, alone_f, alone_m, *(x[i:i + 1, :len(r.labels)] for x in ranks))
        np.testing.assert_allclose(together[i, :len(r.labels)], alone[0], atol=1e-5)
        assert (together[i, len(r.labels):] == -1e4).all()


def test_ranker_keras_round_trip(ranker, tmp_path):
    name, model = ranker
    features, _, mask = pad_lists(lists([4, 6]))
    extra = [np.tile(np.arange(6, dtype="int32"), (2, 1))] if name == "rank" else []
    model.save(tmp_path / "ranker.keras")
    loaded = keras.saving.load_model(tmp_path / "ranker.keras", custom_objects={"softmax_loss": softmax_loss})
    np.testing.assert_array_equal(scores(loaded, features, mask, *extra), scores(model, features, mask, *extra))


def test_input_noise_only_in_training():
    keras.utils.set_random_seed(0)
    model = build_set_ranker(5, hidden_size=16, num_layers=1, heads=2, dropout=0.0, input_noise=0.5)
    features, _, mask = pad_lists(lists([6]))
    np.testing.assert_array_equal(scores(model, features, mask), scores(model, features, mask))
    noisy = [keras.ops.convert_to_numpy(model([features, mask], training=True)) for _ in range(2)]
    assert np.abs(noisy[0] - noisy[1]).max() > 1e-4


def test_ranker_errors():
    with pytest.raises(ValueError, match="block must be one of"):
        build_set_ranker(5, block="sparse")
    with pytest.raises(ValueError, match="more than length=2"):
        pad_lists(lists([3]), 2)


# === data and task ===

def test_libsvm_reader(tmp_path):
    (tmp_path / "r.txt").write_text("2 0:0.5 3:1.5\n0 1:2\n1\n", encoding="utf-8")
    (tmp_path / "r.txt.query").write_text("2\n1\n", encoding="utf-8")
    first, second = read_libsvm_ranking(tmp_path / "r.txt", num_features=5)
    np.testing.assert_array_equal(first.features, [[0.5, 0, 0, 1.5, 0], [0, 2, 0, 0, 0]])
    np.testing.assert_array_equal(first.labels, [2, 0])
    np.testing.assert_array_equal(second.features, np.zeros((1, 5)))
    (tmp_path / "r.txt.query").write_text("2\n2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="sum to 4 but .* has 3 rows"):
        read_libsvm_ranking(tmp_path / "r.txt")
    (tmp_path / "r.txt.query").write_text("2\n1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"r.txt:1: feature index out of range \[0, 3\)"):
        read_libsvm_ranking(tmp_path / "r.txt", num_features=3)


def rank_task():
    tasks = str(Path(__file__).resolve().parents[1] / "tasks")
    if tasks not in sys.path:
        sys.path.insert(0, tasks)
    return importlib.import_module("rank")


def test_feature_transform_against_sklearn_and_numpy():
    train = lists([5, 8], num_features=4, seed=4)
    for r in train:
        r.features[:, 2] = 1.0  # a constant column is dropped
    transform = rank_task().FeatureTransform(train, "quantile", list_norm=True)
    x = np.concatenate([r.features for r in train])[:, [0, 1, 3]]
    quantiles = QuantileTransformer(n_quantiles=13, output_distribution="normal", random_state=0).fit(x)
    new = lists([6], num_features=4, seed=5)[0]
    got = transform([new])[0].features
    expected = quantiles.transform(new.features[:, [0, 1, 3]])
    np.testing.assert_allclose(got[:, :3], expected, atol=1e-5)
    np.testing.assert_allclose(got[:, 3:], (expected - expected.mean(0)) / (expected.std(0) + 1e-3), atol=1e-4)
    plain = rank_task().FeatureTransform(train, "standard", list_norm=False)([new])[0].features
    np.testing.assert_allclose(plain, (new.features[:, [0, 1, 3]] - x.mean(0)) / x.std(0), atol=1e-5)


NO_DATA = pytest.mark.skipif(not (DATA / "lambdarank").is_dir(), reason=f"{DATA}/lambdarank is absent")


@NO_DATA
def test_real_lambdarank_files():
    train = read_libsvm_ranking(DATA / "lambdarank" / "rank.train")
    test = read_libsvm_ranking(DATA / "lambdarank" / "rank.test", num_features=train[0].features.shape[1])
    assert (len(train), sum(len(r.labels) for r in train)) == (201, 3005)  # data README
    assert (len(test), sum(len(r.labels) for r in test)) == (50, 768)


@NO_DATA
@pytest.mark.slow
def test_rank_task_end_to_end(tmp_path):
    rank_task().main(["--tiny", "--epochs", "1", "--out", str(tmp_path), "--data-dir",
                                          str(DATA), "--variants", "set_transformer_isab",
                                          "set_transformer_lightgbm"])
    m = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert m["train_queries"] + m["dev_queries"] > 0 and m["test_queries"] == 8
    for name in ("lightgbm_lambdarank", "set_transformer_isab", "set_transformer_lightgbm"):
        assert set(m[name]["test"]) == {"ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "mrr"}
        assert all(0.0 <= v <= 1.0 for v in m[name]["test"].values())
    assert set(m["synthetic"]) >= {"set_transformer", "per_document_mlp", "random"}
