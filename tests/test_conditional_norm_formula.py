"""The conditional norms compute their formulas with non-zero condition weights (numpy oracle):
LayerNorm `(x − μ)/σ · (γ + c·W_γ) + (β + c·W_β)`, RMSNorm `x / rms(x) · (γ + c·W_γ)`."""
import numpy as np

from bert4k.layers.norms import LayerNorm, RMSNorm

RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 5, 8)).astype("float32")
COND = RNG.standard_normal((2, 3)).astype("float32")


def _randomise(layer) -> dict:
    values = {w.name: RNG.standard_normal(tuple(w.shape)).astype("float32") for w in layer.weights}
    for w in layer.weights:
        w.assign(values[w.name])
    return values


def test_conditional_layer_norm_formula():
    layer = LayerNorm(1e-12, cond_size=3)
    layer(X, cond=COND)
    w = _randomise(layer)
    gamma = w["gamma"] + COND @ w["gamma_dense"]  # [batch, dim]
    beta = w["beta"] + COND @ w["beta_dense"]
    normed = (X - X.mean(-1, keepdims=True)) / np.sqrt(X.var(-1, keepdims=True) + 1e-12)
    expected = normed * gamma[:, None, :] + beta[:, None, :]
    np.testing.assert_allclose(np.asarray(layer(X, cond=COND)), expected, atol=1e-5)
    # γ and β are not interchangeable: the swapped formula is far from the output
    swapped = normed * beta[:, None, :] + gamma[:, None, :]
    assert np.abs(np.asarray(layer(X, cond=COND)) - swapped).max() > 0.5


def test_conditional_rms_norm_formula():
    epsilon = 1e-6
    layer = RMSNorm(epsilon, cond_size=3)
    layer(X, cond=COND)
    w = _randomise(layer)
    assert set(w) == {"gamma", "gamma_dense"}  # no bias in T5's norm, conditional or not
    gamma = w["gamma"] + COND @ w["gamma_dense"]
    expected = X / np.sqrt((X**2).mean(-1, keepdims=True) + epsilon) * gamma[:, None, :]
    np.testing.assert_allclose(np.asarray(layer(X, cond=COND)), expected, atol=1e-5)
