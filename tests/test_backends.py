"""One model code on TensorFlow, JAX and PyTorch: every family builds, predicts, fits and round-trips `.keras` on
the backend the suite runs on; the core HF parity tests and these run again in subprocesses on the other backends."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from bert4k import build_transformer_model
from tests.oracles.hf import max_diff

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 50
FAMILIES = {
    "bert": dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                 max_position_embeddings=32, type_vocab_size=2),
    "roberta": dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                    max_position_embeddings=32, type_vocab_size=1),
    "albert": dict(vocab_size=VOCAB, embedding_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=24, max_position_embeddings=32, type_vocab_size=2),
    "gpt2": dict(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=2, n_head=2),
    "gpt2_ml": dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                    max_position_embeddings=32),
    "t5": dict(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=2, feed_forward_proj="relu"),
    "mt5": dict(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=2,
                feed_forward_proj="gated-gelu"),
}
# The HF parity tests (and greedy generation vs HF `generate`, mixed precision vs float32) rerun on JAX and PyTorch.
# JAX compiles every new shape (slow on 2 shared cores): its default run is the core subset, the rest is `slow`.
PARITY_FILES = ["tests/test_bert_parity.py", "tests/test_gpt2_parity.py", "tests/test_t5_parity.py",
                "tests/test_mixed_precision.py"]
CORE_SELECTION = ("(hf_checkpoints_match and safetensors) or (hf_gpt2_logits_match and safetensors) or "
                  "(t5_v11_untied and safetensors) or greedy_matches_hf_generate_with_mixed_prompt_lengths")
FULL_SELECTION = (f"{CORE_SELECTION} or roberta_masked_lm or (t5_v10_tied and safetensors) or cached_decode_step "
                  "or keras_round_trip or greedy_generation_matches_hf_generate or "
                  "test_family_predicts_fits_and_round_trips or close_to_float32_and_finite")

def _inputs(family: str, ids: np.ndarray):
    if family in ("t5", "mt5"):
        return [ids, ids]
    if family in ("bert", "roberta", "albert"):
        return [ids, np.zeros_like(ids)]
    return ids


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_predicts_fits_and_round_trips(family, tmp_path):
    kwargs = {"with_mlm": True} if family in ("bert", "roberta", "albert") else {}
    model = build_transformer_model(dict(FAMILIES[family]), model=family, **kwargs)
    ids = np.random.default_rng(0).integers(1, VOCAB, (4, 6)).astype("int32")
    x = _inputs(family, ids)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (4, 6, VOCAB)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    history = model.fit(x, ids, epochs=4, batch_size=4, verbose=0).history["loss"]
    assert history[-1] < history[0] - 0.05, history
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert max_diff(restored.predict(x, verbose=0), model.predict(x, verbose=0)) == 0


def _run(backend: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, *args], check=False, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_import_build_predict_fit_without_tensorflow(backend):
    code = ("import sys, numpy as np, keras\n"
            "import bert4k\n"
            "m = bert4k.build_transformer_model(dict(vocab_size=20, n_positions=16, n_embd=8, n_layer=1, n_head=2),"
            " model='gpt2')\n"
            "ids = np.ones((2, 5), 'int32')\n"
            "m.predict(ids, verbose=0)\n"
            "m.compile('adam', 'sparse_categorical_crossentropy')\n"
            "m.fit(ids, ids, verbose=0)\n"
            "print(keras.backend.backend(), 'tensorflow' in sys.modules)\n")
    result = _run(backend, "-c", code, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == [backend, "False"], result.stdout


def _run_suite(backend: str, selection: str) -> None:
    if keras.backend.backend() == backend:
        pytest.skip(f"the suite itself runs on {backend}")
    result = _run(backend, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *PARITY_FILES,
                  "tests/test_backends.py", "-k", selection, timeout=1800)
    assert result.returncode == 0, result.stdout[-6000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


@pytest.mark.parametrize(("backend", "selection"), [("torch", FULL_SELECTION), ("jax", CORE_SELECTION)])
def test_parity_generation_and_families_on_other_backend(backend, selection):
    _run_suite(backend, selection)


@pytest.mark.slow
def test_parity_generation_and_families_on_jax_in_full():
    _run_suite("jax", FULL_SELECTION)
