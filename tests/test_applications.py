"""Proof by perturbation that each application of the one Transformer sees exactly what DESIGN.md §1 says.

For every query position i and key position j we change token j alone and measure how much the output at i moves.
Where the definition says i must not see j, the output must not move (≤ 1e-6); where it may, it must move.
The allowed sets below are written from the definitions, independently of `bert4k.masks`.
Both a post-LN BERT and a pre-LN GPT-2-style configuration are checked, with random weights and no dropout.
"""
import numpy as np
import pytest

from bert4k.config import TransformerConfig
from bert4k.models.transformer import Transformer

VOCAB, N_REAL, N_PAD = 40, 6, 2
N = N_REAL + N_PAD
MASK_ID = 1
UNCHANGED, CHANGED = 1e-6, 1e-4

BASE = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
CONFIGS = {
    "bert": TransformerConfig(**BASE),
    "gpt2": TransformerConfig(**BASE, norm_position="pre", final_norm=True, lm_head="tied", type_vocab_size=0,
                              embedding_norm=False),
}
SOURCE = range(3)  # unilm: positions 0-2 are the source (segment 0), 3-5 the target (segment 1)


def build(style: str, application: str, seed: int = 0) -> Transformer:
    """A tiny model with every weight random (norm scales around 1), so no dependence can hide behind zeros."""
    model = Transformer(CONFIGS[style], application=application, logits=True, mask_token_id=MASK_ID)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        noise = rng.normal(0.0, 0.3, w.shape).astype("float32")
        w.assign(1.0 + noise if w.path.endswith("gamma") else noise)
    return model


def base_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((1, N), "int32")
    tokens[0, :N_REAL] = rng.integers(2, VOCAB, N_REAL)
    segments = np.zeros((1, N), "int32")
    segments[0, SOURCE.stop:N_REAL] = 1
    ranks = np.arange(N, dtype="int32")[None].copy()
    ranks[0, :N_REAL] = rng.permutation(N_REAL)
    return tokens, segments, ranks


def run(model: Transformer, tokens, segments, ranks) -> np.ndarray:
    inputs = [tokens]
    if model.use_segments:
        inputs.append(segments)
    if model.application == "plm":
        inputs.append(ranks)
    return np.asarray(model(inputs, training=False))


def dependence(model: Transformer, tokens, segments, ranks) -> np.ndarray:
    """`d[i, j]` = max |Δ output at i| when only the (real) token at j is changed."""
    batch = np.repeat(tokens, N_REAL + 1, axis=0)
    for j in range(N_REAL):
        batch[j + 1, j] = 2 + (batch[j + 1, j] - 2 + 7) % (VOCAB - 2)  # another non-special id
    rows = N_REAL + 1
    out = run(model, batch, np.repeat(segments, rows, axis=0), np.repeat(ranks, rows, axis=0))
    return np.abs(out[1:, :N_REAL] - out[:1, :N_REAL]).max(axis=-1).T


def allowed(application: str, ranks) -> np.ndarray:
    """May the output at real position i depend on real token j? (From DESIGN.md §1, by hand.)"""
    r = ranks[0]
    ok = np.zeros((N_REAL, N_REAL), bool)
    for i in range(N_REAL):
        for j in range(N_REAL):
            if application in ("encoder", "mlm"):
                ok[i, j] = True
            elif application == "lm":
                ok[i, j] = j <= i
            elif application == "unilm":
                ok[i, j] = j in SOURCE or (i not in SOURCE and j <= i)
            elif application == "plm":  # query stream: only tokens strictly earlier in the order
                ok[i, j] = r[j] < r[i]
    return ok


def check(d: np.ndarray, ok: np.ndarray) -> None:
    hidden = d[~ok]
    assert hidden.max(initial=0.0) <= UNCHANGED, f"output moved where it must not see: max {hidden.max()}\n{d}"
    seen = d[ok]
    assert seen.min(initial=np.inf) > CHANGED, f"output did not move where it may see: min {seen.min()}\n{d}"


@pytest.mark.parametrize("style", sorted(CONFIGS))
@pytest.mark.parametrize("application", ["encoder", "mlm", "lm", "unilm", "plm"])
def test_each_position_sees_exactly_what_the_application_allows(style, application):
    model = build(style, application)
    tokens, segments, ranks = base_inputs()
    check(dependence(model, tokens, segments, ranks), allowed(application, ranks))


@pytest.mark.parametrize("style", sorted(CONFIGS))
def test_plm_query_stream_with_identity_order_is_strictly_causal(style):
    model = build(style, "plm")
    tokens, segments, _ = base_inputs()
    ranks = np.arange(N, dtype="int32")[None]
    d = dependence(model, tokens, segments, ranks)
    check(d, np.tril(np.ones((N_REAL, N_REAL), bool), k=-1))  # position i sees j < i, not its own token


@pytest.mark.parametrize("seed", [1, 2])
def test_plm_other_orders(seed):
    model = build("bert", "plm", seed)
    tokens, segments, ranks = base_inputs(seed)
    check(dependence(model, tokens, segments, ranks), allowed("plm", ranks))


@pytest.mark.parametrize("style", sorted(CONFIGS))
@pytest.mark.parametrize("application", ["encoder", "mlm", "lm", "unilm", "plm"])
def test_padding_is_invisible(style, application):
    model = build(style, application)
    tokens, segments, ranks = base_inputs()
    out = run(model, tokens, segments, ranks)[0, :N_REAL]
    # What sits in the padding slots (segment ids, factorisation ranks) must not reach a real position.
    segments2, ranks2 = segments.copy(), ranks.copy()
    segments2[0, N_REAL:] = 1
    ranks2[0, N_REAL:] = ranks2[0, N_REAL:][::-1]
    moved = run(model, tokens, segments2, ranks2)[0, :N_REAL]
    assert np.abs(moved - out).max() <= UNCHANGED
    # The same real tokens without any padding give the same outputs.
    unpadded = run(model, tokens[:, :N_REAL], segments[:, :N_REAL], ranks[:, :N_REAL])[0]
    # (A different sequence length changes float summation order, hence 1e-5 here rather than exact.)
    np.testing.assert_allclose(unpadded, out, rtol=0, atol=1e-5)
