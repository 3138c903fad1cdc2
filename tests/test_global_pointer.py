"""GlobalPointer / EfficientGlobalPointer against a numpy reference of their formulas (explicit 2×2 rotations for
RoPE), the multilabel categorical cross-entropy against its closed form, span decoding, and a model that learns
spans. The jax and torch backends run `check_against_reference` from tests/test_crf.py::test_other_backends."""
import keras
import numpy as np
import pytest

from bert4k.layers.global_pointer import (
    EfficientGlobalPointer,
    GlobalPointer,
    apply_rotary,
    decode_spans,
    global_pointer_crossentropy,
    multilabel_categorical_crossentropy,
)


def rope_reference(x):
    """x [seq, ..., d]: rotate each pair (x[2i], x[2i+1]) at position p by angle p / 10000^(2i/d)."""
    out = np.array(x, dtype=np.float64)
    d = x.shape[-1]
    for p in range(x.shape[0]):
        for i in range(d // 2):
            a = p / 10000 ** (2 * i / d)
            c, s = np.cos(a), np.sin(a)
            x0, x1 = x[p, ..., 2 * i], x[p, ..., 2 * i + 1]
            out[p, ..., 2 * i] = x0 * c - x1 * s
            out[p, ..., 2 * i + 1] = x0 * s + x1 * c
    return out


def masked_reference(logits, length):
    n = logits.shape[-1]
    i, j = np.indices((n, n))
    keep = (j >= i) & (i < length) & (j < length)
    return np.where(keep, logits, -np.inf)


def gp_reference(x, kernel, bias, heads, size, length):
    h = (x @ kernel + bias).reshape(x.shape[0], heads, 2 * size)
    q, k = rope_reference(h[..., :size]), rope_reference(h[..., size:])
    return masked_reference(np.einsum("mhd,nhd->hmn", q, k) / np.sqrt(size), length)


def egp_reference(x, p_kernel, p_bias, q_kernel, q_bias, heads, size, length):
    h = x @ p_kernel + p_bias
    q, k = rope_reference(h[:, ::2]), rope_reference(h[:, 1::2])
    b = (h @ q_kernel + q_bias) / 2  # [n, 2·heads]
    logits = np.einsum("md,nd->mn", q, k)[None] / np.sqrt(size)
    logits = logits + b[:, 0::2].T[:, None, :] + b[:, 1::2].T[:, :, None]  # end bias over j, start bias over i
    return masked_reference(logits, length)


def check_against_reference(seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    heads, size, n, hidden = 3, 8, 6, 10
    x = rng.normal(size=(2, n, hidden)).astype("float32")
    lengths = [6, 4]
    mask = np.arange(n)[None] < np.array(lengths)[:, None]
    gp = GlobalPointer(heads, size)
    out = keras.ops.convert_to_numpy(gp(x, mask=mask))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in gp.dense.weights)
    egp = EfficientGlobalPointer(heads, size)
    eout = keras.ops.convert_to_numpy(egp(x, mask=mask))
    pk, pb = (keras.ops.convert_to_numpy(w) for w in egp.p_dense.weights)
    qk, qb = (keras.ops.convert_to_numpy(w) for w in egp.q_dense.weights)
    for b, length in enumerate(lengths):
        ref = gp_reference(x[b].astype(np.float64), kernel, bias, heads, size, length)
        np.testing.assert_array_equal(np.isneginf(out[b]), np.isneginf(ref))
        np.testing.assert_allclose(out[b][np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-4, atol=1e-4)
        ref = egp_reference(x[b].astype(np.float64), pk, pb, qk, qb, heads, size, length)
        np.testing.assert_array_equal(np.isneginf(eout[b]), np.isneginf(ref))
        np.testing.assert_allclose(eout[b][np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-4, atol=1e-4)
    y_true = (rng.random(out.shape) < 0.2).astype("float32")
    loss = keras.ops.convert_to_numpy(global_pointer_crossentropy(y_true, out))
    ref = [[mce_reference(y_true[b, h].ravel(), out[b, h].ravel()) for h in range(heads)] for b in range(2)]
    np.testing.assert_allclose(loss, np.mean(ref, axis=1), rtol=1e-5)


def mce_reference(y, s):
    """log(1 + Σ_{neg} e^s) + log(1 + Σ_{pos} e^{-s}) over finite scores."""
    finite = np.isfinite(s)
    pos, neg = finite & (y > 0.5), finite & (y <= 0.5)
    return np.log1p(np.exp(s[neg].astype(np.float64)).sum()) + np.log1p(np.exp(-s[pos].astype(np.float64)).sum())


def test_layers_match_numpy_reference():
    for seed in range(3):
        check_against_reference(seed)


def test_lr_multiplier_scales_the_stored_weights_and_trains_faster():
    """Weights stored ÷ m and used × m: the outputs are the reference formula with the effective weights, the
    initial outputs match the plain layer's, and one Adam step moves the effective weights m times as far."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 5, 6)).astype("float32")
    keras.utils.set_random_seed(7)
    plain = GlobalPointer(2, 4)
    plain_out = keras.ops.convert_to_numpy(plain(x))
    keras.utils.set_random_seed(7)
    fast = GlobalPointer(2, 4, lr_multiplier=10.0)
    out = keras.ops.convert_to_numpy(fast(x))
    kernel, bias = (keras.ops.convert_to_numpy(w) * 10.0 for w in fast.dense.weights)
    ref = gp_reference(x[0].astype(np.float64), kernel, bias, 2, 4, 5)
    np.testing.assert_allclose(out[0][np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out, plain_out, rtol=1e-4, atol=1e-5)
    assert GlobalPointer.from_config(fast.get_config()).lr_multiplier == 10.0
    moved = []
    for layer in (plain, fast):
        before = keras.ops.convert_to_numpy(layer.dense.kernel) * layer.lr_multiplier
        keras.optimizers.Adam(1e-3).apply([keras.ops.ones_like(layer.dense.kernel)], [layer.dense.kernel])
        moved.append(np.abs(keras.ops.convert_to_numpy(layer.dense.kernel) * layer.lr_multiplier - before).mean())
    np.testing.assert_allclose(moved[1], 10 * moved[0], rtol=1e-3)
    with pytest.raises(ValueError, match="lr_multiplier must be > 0"):
        GlobalPointer(2, 4, lr_multiplier=0)


def test_rope_matches_rotations_and_is_relative():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 7, 2, 6)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(apply_rotary(x))[0], rope_reference(x[0]), atol=1e-5)
    q, k = rng.normal(size=(2, 6)).astype("float32")
    seq = np.stack([np.tile(q, (9, 1)), np.tile(k, (9, 1))], axis=1)[None]  # [1, 9, 2, 6]
    rq, rk = np.moveaxis(keras.ops.convert_to_numpy(apply_rotary(seq))[0], 1, 0)
    scores = rq @ rk.T  # depends on j - i only
    for shift in range(-3, 4):
        diag = np.diagonal(scores, offset=shift)
        np.testing.assert_allclose(diag, diag[0], atol=1e-4)


def test_multilabel_crossentropy_closed_form():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(5, 11)).astype("float32") * 3
    s[0, :4] = -np.inf
    y = (rng.random((5, 11)) < 0.3).astype("float32")
    y[1] = 0  # no positive at all
    got = keras.ops.convert_to_numpy(multilabel_categorical_crossentropy(y, s))
    np.testing.assert_allclose(got, [mce_reference(y[i], s[i]) for i in range(5)], rtol=1e-5)


def test_no_tril_mask_and_no_rope():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 5, 4)).astype("float32")
    gp = GlobalPointer(2, 4, rope=False, tril_mask=False)
    out = keras.ops.convert_to_numpy(gp(x))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in gp.dense.weights)
    h = (x[0] @ kernel + bias).reshape(5, 2, 8)
    np.testing.assert_allclose(out[0], np.einsum("mhd,nhd->hmn", h[..., :4], h[..., 4:]) / 2, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="even head_size"):
        GlobalPointer(2, 3)


def test_decode_spans_nested_and_flat():
    logits = np.full((2, 5, 5), -1.0)
    logits[0, 0, 3] = 2.0  # outer span, type 0
    logits[1, 1, 2] = 3.0  # nested inside it, type 1
    logits[0, 4, 4] = 0.5
    logits[0, 3, 1] = 9.0  # end < start: never a span
    assert decode_spans(logits) == [(1, 1, 2, 3.0), (0, 0, 3, 2.0), (0, 4, 4, 0.5)]
    assert decode_spans(logits, nested=False) == [(1, 1, 2, 3.0), (0, 4, 4, 0.5)]
    assert decode_spans(logits, threshold=1.0) == [(1, 1, 2, 3.0), (0, 0, 3, 2.0)]
    with pytest.raises(ValueError, match=r"\[heads, n, n\]"):
        decode_spans(np.zeros((5, 5)))


def test_learns_spans_and_round_trips(tmp_path):
    """Embedding → BiGRU → GlobalPointer learns: spans open at token 1 and close at the next token 2 (type 0), or
    cover each run of token 3 (type 1)."""
    rng = np.random.default_rng(4)
    ids = rng.integers(1, 6, size=(160, 12))
    ids[80:, 9:] = 0
    targets = np.zeros((160, 2, 12, 12), dtype="float32")
    for b, row in enumerate(ids):
        for i, t in enumerate(row):
            if t == 1:
                ends = [j for j in range(i + 1, 12) if row[j] == 2]
                if ends:
                    targets[b, 0, i, ends[0]] = 1
            if t == 3 and (i == 0 or row[i - 1] != 3):
                j = i
                while j + 1 < 12 and row[j + 1] == 3:
                    j += 1
                targets[b, 1, i, j] = 1
    token_ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(6, 16)(token_ids)
    x = keras.layers.Bidirectional(keras.layers.GRU(16, return_sequences=True))(x)
    out = GlobalPointer(2, 16)(x, mask=keras.ops.not_equal(token_ids, 0))
    model = keras.Model(token_ids, out)
    model.compile(keras.optimizers.Adam(0.01), loss=global_pointer_crossentropy)
    model.fit(ids, targets, epochs=20, batch_size=16, verbose=0)
    logits = model.predict(ids, verbose=0)
    gold = {(b, h, s, e) for b, h, s, e in zip(*np.nonzero(targets))}
    found = {(b, h, s, e) for b in range(160) for h, s, e, _ in decode_spans(logits[b])}
    tp = len(gold & found)
    f1 = 2 * tp / (len(gold) + len(found))
    assert f1 > 0.95
    path = tmp_path / "gp.keras"
    model.save(path)
    again = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(again.predict(ids[:4], verbose=0), logits[:4], rtol=1e-5)
