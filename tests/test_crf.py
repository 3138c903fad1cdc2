"""ConditionalRandomField against brute-force enumeration of every label path (log Z, path scores, best path,
gradients = marginals − one-hot), against pytorch-crf (an independent implementation), on all three backends;
and the numpy ViterbiDecoder against brute force."""
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from bert4k.layers.crf import ConditionalRandomField
from bert4k.viterbi import ViterbiDecoder, best_path

REPO = Path(__file__).resolve().parents[1]


def brute_force(nodes, trans):
    """`(log Z, best path, best score, marginals [steps, labels])` by enumerating every path (float64)."""
    steps, n = nodes.shape
    paths = np.array(list(itertools.product(range(n), repeat=steps)))
    scores = nodes[np.arange(steps), paths].sum(1) + sum(trans[paths[:, t - 1], paths[:, t]] for t in range(1, steps))
    log_z = np.logaddexp.reduce(scores)
    probs = np.exp(scores - log_z)
    marginals = np.zeros((steps, n))
    for t in range(steps):
        np.add.at(marginals[t], paths[:, t], probs)
    best = int(np.argmax(scores))
    return log_z, paths[best], scores[best], marginals


def crf_with(trans, lr_multiplier=1.0):
    crf = ConditionalRandomField(lr_multiplier=lr_multiplier)
    crf.build((None, None, trans.shape[0]))
    crf._trans.assign((trans / lr_multiplier).astype("float32"))
    return crf


def random_batch(rng, batch=4, steps=4, labels=3, lengths=(4, 3, 1, 2)):
    nodes = rng.normal(size=(batch, steps, labels)).astype("float32")
    trans = rng.normal(size=(labels, labels)).astype("float32")
    mask = (np.arange(steps)[None, :] < np.array(lengths)[:, None])
    tags = rng.integers(0, labels, size=(batch, steps))
    return nodes, trans, mask, tags


def check_against_brute_force(seed: int = 0) -> None:
    """The checks every backend must pass (run in-process here, and in subprocesses for jax and torch)."""
    rng = np.random.default_rng(seed)
    nodes, trans, mask, tags = random_batch(rng)
    crf = crf_with(trans, lr_multiplier=3.0)
    out = keras.ops.convert_to_numpy(crf(nodes, mask=mask))
    assert np.all(np.isneginf(out[~mask])) and np.allclose(out[mask], nodes[mask])
    loss = keras.ops.convert_to_numpy(crf.sparse_loss(tags, out))
    paths = keras.ops.convert_to_numpy(crf.decode(out))
    for b in range(len(nodes)):
        n = int(mask[b].sum())
        x = nodes[b, :n].astype(np.float64)
        log_z, path, _, _ = brute_force(x, trans.astype(np.float64))
        y = tags[b, :n]
        gold = x[np.arange(n), y].sum() + sum(trans[y[t - 1], y[t]] for t in range(1, n))
        np.testing.assert_allclose(loss[b], log_z - gold, rtol=1e-5, atol=1e-4)
        assert paths[b, :n].tolist() == path.tolist()
        assert paths[b, n:].tolist() == [0] * (len(nodes[b]) - n)


def test_loss_and_decode_match_brute_force():
    for seed in range(5):
        check_against_brute_force(seed)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends(backend):
    """The CRF, GlobalPointer and NgramEmbedding checks (one subprocess per backend, to pay the start-up once)."""
    code = (f"import tests.test_crf as t, tests.test_global_pointer as g, tests.test_ngram_embedding as n, keras; "
            f"assert keras.backend.backend() == {backend!r}; "
            "[(t.check_against_brute_force(s), g.check_against_reference(s), n.check_against_numpy(s)) "
            "for s in range(3)]; print('ok')")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_gradient_is_marginals_minus_one_hot():
    """d(-log p)/d emissions = P(y_t = k) − [y_t = k]; d/d trans = expected − observed transition counts."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    nodes, trans, mask, tags = random_batch(rng, batch=1, steps=4, lengths=(4,))
    crf = crf_with(trans)
    x = tf.constant(nodes)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(crf.sparse_loss(tags, crf(x, mask=mask)))
    grad_x, grad_t = tape.gradient(loss, [x, crf._trans])
    _, _, _, marginals = brute_force(nodes[0].astype(np.float64), trans.astype(np.float64))
    np.testing.assert_allclose(grad_x.numpy()[0], marginals - np.eye(3)[tags[0]], atol=1e-5)
    # transition gradient: expected pair counts by enumeration minus the gold pair counts
    steps, n = 4, 3
    paths = np.array(list(itertools.product(range(n), repeat=steps)))
    x64, t64 = nodes[0].astype(np.float64), trans.astype(np.float64)
    scores = x64[np.arange(steps), paths].sum(1) + sum(t64[paths[:, t - 1], paths[:, t]] for t in range(1, steps))
    probs = np.exp(scores - np.logaddexp.reduce(scores))
    expected, observed = np.zeros((n, n)), np.zeros((n, n))
    for t in range(1, steps):
        np.add.at(expected, (paths[:, t - 1], paths[:, t]), probs)
        observed[tags[0, t - 1], tags[0, t]] += 1
    np.testing.assert_allclose(grad_t.numpy(), expected - observed, atol=1e-5)


def test_matches_pytorch_crf():
    """pytorch-crf (no start/end scores) gives the same log-likelihood and Viterbi paths on a larger batch."""
    torch = pytest.importorskip("torch")
    torchcrf = pytest.importorskip("torchcrf")
    rng = np.random.default_rng(2)
    labels, steps = 7, 30
    lengths = [30, 17, 1, 2, 29, 8]
    nodes, trans, mask, tags = random_batch(rng, batch=len(lengths), steps=steps, labels=labels, lengths=lengths)
    nodes *= 3.0
    reference = torchcrf.CRF(labels, batch_first=True)
    with torch.no_grad():
        reference.transitions.copy_(torch.tensor(trans))
        reference.start_transitions.zero_()
        reference.end_transitions.zero_()
    t_nodes, t_tags, t_mask = torch.tensor(nodes), torch.tensor(tags), torch.tensor(mask)
    ref_llh = reference(t_nodes, t_tags, t_mask, reduction="none").detach().numpy()
    ref_paths = reference.decode(t_nodes, t_mask)
    crf = crf_with(trans)
    out = crf(nodes, mask=mask)
    np.testing.assert_allclose(-keras.ops.convert_to_numpy(crf.sparse_loss(tags, out)), ref_llh, rtol=1e-5, atol=1e-3)
    paths = keras.ops.convert_to_numpy(crf.decode(out))
    for b, n in enumerate(lengths):
        assert paths[b, :n].tolist() == ref_paths[b]
        assert best_path(nodes[b, :n], trans)[0].tolist() == ref_paths[b]


def test_no_mask_means_every_position_is_real():
    rng = np.random.default_rng(3)
    nodes, trans, _, tags = random_batch(rng, batch=2, steps=3, lengths=(3, 3))
    crf = crf_with(trans)
    loss = keras.ops.convert_to_numpy(crf.sparse_loss(tags, crf(nodes)))
    for b in range(2):
        log_z, _, _, _ = brute_force(nodes[b].astype(np.float64), trans.astype(np.float64))
        y = tags[b]
        gold = nodes[b, np.arange(3), y].sum() + trans[y[0], y[1]] + trans[y[1], y[2]]
        np.testing.assert_allclose(loss[b], log_z - gold, rtol=1e-5)


def test_lr_multiplier_scales_variable_and_gradient():
    import tensorflow as tf

    crf = ConditionalRandomField(lr_multiplier=100.0)
    crf.build((None, None, 5))
    effective = keras.ops.convert_to_numpy(crf.trans)
    np.testing.assert_allclose(crf._trans.numpy() * 100.0, effective, rtol=1e-6)
    assert np.abs(effective).max() <= np.sqrt(6 / 10) + 1e-6 and np.abs(effective).max() > 0.05  # glorot range
    nodes = np.random.default_rng(4).normal(size=(2, 4, 5)).astype("float32")
    tags = np.zeros((2, 4), dtype="int32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(crf.sparse_loss(tags, crf(nodes)))
    grad_var = tape.gradient(loss, crf._trans).numpy()
    plain = crf_with(effective)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(plain.sparse_loss(tags, plain(nodes)))
    np.testing.assert_allclose(grad_var, 100.0 * tape.gradient(loss, plain._trans).numpy(), rtol=1e-4)


def test_trains_in_a_model_and_round_trips(tmp_path):
    """Dense → CRF learns a labelling whose rule is a transition (label = previous token's parity), and the saved
    model reloads with the same outputs."""
    rng = np.random.default_rng(5)
    ids = rng.integers(1, 9, size=(256, 10))
    ids[128:, 7:] = 0  # right padding
    tags = np.zeros_like(ids)
    tags[:, 1:] = (ids[:, :-1] % 2) + 1  # depends on the previous token only
    token_ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10, 16)(token_ids)
    x = keras.layers.Conv1D(16, 3, padding="causal", activation="relu")(x)
    x = keras.layers.Dense(3)(x)
    crf = ConditionalRandomField(lr_multiplier=10.0)
    out = crf(x, mask=keras.ops.not_equal(token_ids, 0))
    model = keras.Model(token_ids, out)
    model.compile(keras.optimizers.Adam(0.02), loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])
    history = model.fit(ids, tags, epochs=15, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]
    paths = keras.ops.convert_to_numpy(crf.decode(model.predict(ids, verbose=0)))
    real = ids != 0
    assert (paths[real] == tags[real]).mean() > 0.99
    path = tmp_path / "crf.keras"
    model.save(path)
    again = keras.saving.load_model(path, custom_objects={"sparse_loss": crf.sparse_loss,
                                                          "sparse_accuracy": crf.sparse_accuracy}, compile=False)
    np.testing.assert_array_equal(again.predict(ids[:8], verbose=0), model.predict(ids[:8], verbose=0))
    assert json.loads(json.dumps(crf.get_config()))["lr_multiplier"] == 10.0


def test_labels_outside_the_tag_set_give_nan_not_a_number():
    rng = np.random.default_rng(9)
    nodes, trans, mask, tags = random_batch(rng, batch=3, steps=4, lengths=(4, 2, 4))
    tags[0, 1] = 3  # outside 0..2 at a real position
    tags[1, 3] = 7  # at padding: ignored
    tags[2, 0] = -1
    crf = crf_with(trans)
    loss = keras.ops.convert_to_numpy(crf.sparse_loss(tags, crf(nodes, mask=mask)))
    assert np.isnan(loss[0]) and np.isfinite(loss[1]) and np.isnan(loss[2])


def test_wrong_label_count_is_rejected():
    crf = crf_with(np.zeros((3, 3), dtype="float32"))
    with pytest.raises(ValueError, match="4 labels.*has 3"):
        crf(np.zeros((1, 2, 4), dtype="float32"))


def test_viterbi_decoder_matches_brute_force():
    rng = np.random.default_rng(6)
    for steps in (1, 2, 5):
        for _ in range(10):
            nodes, trans = rng.normal(size=(steps, 4)), rng.normal(size=(4, 4))
            _, path, score, _ = brute_force(nodes, trans)
            got, got_score = best_path(nodes, trans)
            assert got.tolist() == path.tolist() and np.isclose(got_score, score)
            assert ViterbiDecoder(trans).decode(nodes).tolist() == path.tolist()


def test_viterbi_decoder_starts_ends_and_errors():
    rng = np.random.default_rng(7)
    nodes, trans = rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    decoded = ViterbiDecoder(trans, starts=[1], ends=[2]).decode(nodes)
    restricted = [p for p in itertools.product(range(3), repeat=4) if p[0] == 1 and p[-1] == 2]
    scores = [nodes[np.arange(4), p].sum() + sum(trans[a, b] for a, b in itertools.pairwise(p)) for p in restricted]
    assert tuple(decoded) == restricted[int(np.argmax(scores))]
    assert best_path(np.zeros((0, 3)), trans)[0].tolist() == []
    with pytest.raises(ValueError, match="outside 0..2"):
        ViterbiDecoder(trans, starts=[3])
    with pytest.raises(ValueError, match=r"\[steps, labels\]"):
        best_path(np.zeros((2, 4)), trans)
    with pytest.raises(ValueError, match="every path is forbidden"):
        best_path(np.full((2, 3), -np.inf), trans)


@pytest.mark.parametrize("steps", [1, 3])
def test_graph_mode_with_unknown_length(steps):
    """Inside a traced function with an unknown sequence length (as under model.fit), including one step."""
    import tensorflow as tf

    rng = np.random.default_rng(8)
    nodes, trans, _, tags = random_batch(rng, batch=2, steps=steps, lengths=(steps, steps))
    crf = crf_with(trans)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3]), tf.TensorSpec([None, None], tf.int32)])
    def loss_and_paths(x, y):
        out = crf(x)
        return crf.sparse_loss(y, out), crf.decode(out)

    loss, paths = loss_and_paths(nodes, tags)
    for b in range(2):
        log_z, path, _, _ = brute_force(nodes[b].astype(np.float64), trans.astype(np.float64))
        y = tags[b]
        gold = nodes[b, np.arange(steps), y].sum() + sum(trans[y[t - 1], y[t]] for t in range(1, steps))
        np.testing.assert_allclose(loss.numpy()[b], log_z - gold, rtol=1e-5)
        assert paths.numpy()[b].tolist() == path.tolist()
