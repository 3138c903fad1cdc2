"""T5 (1.0), T5.1.1 and mT5 built by bert4k equal Hugging Face's `T5ForConditionalGeneration` on the same weights:
HF safetensors / .bin, mesh-TensorFlow checkpoints (T5 and mT5 names), keep_tokens, cached greedy decoding."""
import json
import os

import keras
import numpy as np
import pytest
import safetensors.torch
import torch
import transformers

from bert4k import build_transformer_model
from bert4k.checkpoints.readers import read_tensors
from bert4k.checkpoints.writers import save_tf_checkpoint
from bert4k.generation import generate
from bert4k.models.checkpoint_io import export_checkpoint
from tests.oracles.hf import max_diff, random_ids, randomize, save_both, to_numpy

TOL = 1e-4
VOCAB = 96
# T5 1.0: relu, tied head (d_model**-0.5 rescale), default buckets (32 / 128).
V10 = dict(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=4, feed_forward_proj="relu",
           decoder_start_token_id=0)
# T5.1.1: gated-gelu, untied head, d_kv != d_model / heads, deeper decoder, few buckets so long distances clamp.
V11 = dict(vocab_size=VOCAB, d_model=16, d_kv=6, d_ff=20, num_layers=2, num_decoder_layers=3, num_heads=3,
           feed_forward_proj="gated-gelu", tie_word_embeddings=False, relative_attention_num_buckets=8,
           relative_attention_max_distance=20, decoder_start_token_id=0)


def hf_t5(config: dict, seed: int, untie: bool) -> transformers.T5ForConditionalGeneration:
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**config))
    if untie:  # transformers 5 always ties lm_head to shared; give it its own weights as in real T5.1.1 files
        model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    randomize(model, seed=seed)
    if untie:
        assert not torch.equal(model.lm_head.weight, model.shared.weight)
    return model


def save_untied(model, folder: str) -> tuple[str, str]:
    """Save like a real T5.1.1 / mT5 checkpoint: `tie_word_embeddings: false` and a separate `lm_head.weight`."""
    config = model.config.to_dict()
    config["tie_word_embeddings"] = False
    config.pop("scale_decoder_outputs", None)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if "embed_tokens" not in k}
    dirs = (os.path.join(folder, "st"), os.path.join(folder, "bin"))
    for d in dirs:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f)
    safetensors.torch.save_file(state, os.path.join(dirs[0], "model.safetensors"), metadata={"format": "pt"})
    torch.save(model.state_dict(), os.path.join(dirs[1], "pytorch_model.bin"))
    return dirs


def mesh_tf_names(state: dict, norm: str = "layer_norm", tied: bool = False) -> dict:
    """HF T5 tensors under mesh-TensorFlow names, written by hand from the public layout (CHECKPOINTS.md).

    `norm`: "layer_norm" (T5 1.0 / 1.1: `layer_norm/scale`, `final_layer_norm/scale`) or "rms_norm" (mT5:
    `rms_norm/scale` for both). Mesh-TF stores kernels `[in, out]` and `relative_attention_bias` `[heads, buckets]`.
    """
    out = {"global_step": np.array(1000, dtype=np.int64)}
    for key, tensor in state.items():
        value = tensor.detach().numpy()
        parts = key.split(".")
        if "embed_tokens" in key or (tied and key == "lm_head.weight"):
            continue
        if key == "shared.weight":
            out["shared/embedding"] = value
        elif key == "lm_head.weight":
            out["decoder/logits/kernel"] = value.T
        elif parts[1] == "final_layer_norm":
            out[f"{parts[0]}/{'final_layer_norm' if norm == 'layer_norm' else 'rms_norm'}/scale"] = value
        else:  # {stack}.block.{i}.layer.{j}.{module}[.{name}].weight
            scope = f"{parts[0]}/block_{int(parts[2]):03d}/layer_{int(parts[4]):03d}"
            if parts[5] == "layer_norm":
                out[f"{scope}/{norm}/scale"] = value
            elif parts[5] == "DenseReluDense":
                out[f"{scope}/DenseReluDense/{parts[6]}/kernel"] = value.T
            else:  # SelfAttention / EncDecAttention: q, k, v, o, relative_attention_bias
                out[f"{scope}/{parts[5]}/{parts[6]}"] = value.T
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def batch(seed: int, enc_len: int = 24, dec_len: int = 9):
    """Padded encoder rows (long enough for log-spaced buckets), decoder rows starting with 0 (start token)."""
    enc = random_ids(3, enc_len, VOCAB, seed=seed)
    dec = np.random.default_rng(seed + 1).integers(2, VOCAB, size=(3, dec_len)).astype("int32")
    dec[:, 0] = 0
    return enc, dec


def hf_outputs(model, enc, dec):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(enc, dtype=torch.long), attention_mask=torch.tensor(enc != 0).long(),
                    decoder_input_ids=torch.tensor(dec, dtype=torch.long))
    return out.encoder_last_hidden_state.numpy(), out.logits.numpy()


@pytest.fixture(scope="module")
def v10(tmp_path_factory):
    model = hf_t5(V10, seed=0, untie=False)
    st_dir, bin_dir = save_both(model, str(tmp_path_factory.mktemp("t5_v10")))
    return model, st_dir, bin_dir


@pytest.fixture(scope="module")
def v11(tmp_path_factory):
    model = hf_t5(V11, seed=1, untie=True)
    st_dir, bin_dir = save_untied(model, str(tmp_path_factory.mktemp("t5_v11")))
    return model, st_dir, bin_dir


@pytest.fixture(scope="module")
def v11_model(v11):
    _, st_dir, _ = v11
    return build_transformer_model(f"{st_dir}/config.json", st_dir, model="t5.1.1", logits=True)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_t5_v10_tied_relu_matches_reference(v10, fmt):
    model, st_dir, bin_dir = v10
    folder = st_dir if fmt == "safetensors" else bin_dir
    enc, dec = batch(seed=2)
    encoded_ref, logits_ref = hf_outputs(model, enc, dec)
    t5 = build_transformer_model(f"{folder}/config.json", folder, model="t5", logits=True)
    assert t5.lm_head is None
    assert max_diff(t5.predict([enc, dec], verbose=0), logits_ref) <= TOL
    encoded = to_numpy(t5.encoder_model(enc, training=False))
    assert max_diff(encoded, encoded_ref) <= TOL
    assert max_diff(t5.decoder_model([encoded, enc, dec], training=False), logits_ref) <= TOL


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_t5_v11_untied_gated_matches_reference(v11, v11_model, fmt):
    model, _, bin_dir = v11
    enc, dec = batch(seed=3, enc_len=30)
    _, logits_ref = hf_outputs(model, enc, dec)
    t5 = v11_model if fmt == "safetensors" else build_transformer_model(
        f"{bin_dir}/config.json", bin_dir, model="t5.1.1", logits=True)
    assert t5.lm_head is not None and len(t5.decoder_blocks) == 3
    assert max_diff(t5([enc, dec], training=False), logits_ref) <= TOL


def test_probabilities_by_default(v10):
    model, st_dir, _ = v10
    enc, dec = batch(seed=4)
    _, logits_ref = hf_outputs(model, enc, dec)
    probs = build_transformer_model(st_dir, st_dir, model="t5")([enc, dec], training=False)
    assert max_diff(probs, torch.softmax(torch.tensor(logits_ref), -1).numpy()) <= 1e-5


def test_transformers5_save_ties_head_without_rescale(tmp_path):
    """transformers ≥ 5 writes `tie_word_embeddings: true, scale_decoder_outputs: false` and no lm_head.weight."""
    model = hf_t5(V11, seed=5, untie=False)
    model.save_pretrained(tmp_path, safe_serialization=True)
    enc, dec = batch(seed=6)
    _, logits_ref = hf_outputs(model, enc, dec)
    t5 = build_transformer_model(tmp_path, tmp_path, model="t5.1.1", logits=True)
    assert max_diff(t5([enc, dec], training=False), logits_ref) <= TOL


@pytest.mark.parametrize("family,norm", [("t5.1.1", "layer_norm"), ("mt5", "rms_norm")])
def test_mesh_tf_checkpoint_matches_reference(v11, tmp_path, family, norm):
    model, st_dir, _ = v11
    prefix = save_tf_checkpoint(mesh_tf_names(model.state_dict(), norm), tmp_path / "model.ckpt-1000")
    enc, dec = batch(seed=7)
    _, logits_ref = hf_outputs(model, enc, dec)
    t5 = build_transformer_model(f"{st_dir}/config.json", prefix, model=family, logits=True)
    assert max_diff(t5([enc, dec], training=False), logits_ref) <= TOL


def test_bert4keras_style_json_with_mt5_mesh_tf_checkpoint(v11, tmp_path):
    """The config bert4keras users pass for mT5 (`hidden_act: ["gelu", "linear"]`, `attention_head_size`)."""
    model, _, _ = v11
    save_tf_checkpoint(mesh_tf_names(model.state_dict(), "rms_norm"), tmp_path / "model.ckpt-1000")
    config = {"vocab_size": VOCAB, "hidden_size": 16, "num_hidden_layers": 2, "num_decoder_layers": 3,
              "num_attention_heads": 3, "attention_head_size": 6, "intermediate_size": 20,
              "hidden_act": ["gelu", "linear"], "hidden_dropout_prob": 0.1, "relative_attention_num_buckets": 8,
              "relative_attention_max_distance": 20, "attention_scale": False}
    with open(tmp_path / "mt5_config.json", "w") as f:
        json.dump(config, f)
    enc, dec = batch(seed=15)
    _, logits_ref = hf_outputs(model, enc, dec)
    t5 = build_transformer_model(tmp_path / "mt5_config.json", tmp_path / "model.ckpt-1000", model="mt5.1.1",
                                 logits=True)
    assert max_diff(t5([enc, dec], training=False), logits_ref) <= TOL


def test_mesh_tf_t5_v10_tied_checkpoint_matches_reference(v10, tmp_path):
    model, st_dir, _ = v10
    save_tf_checkpoint(mesh_tf_names(model.state_dict(), tied=True), tmp_path / "model.ckpt-1")
    enc, dec = batch(seed=8)
    _, logits_ref = hf_outputs(model, enc, dec)
    t5 = build_transformer_model(f"{st_dir}/config.json", tmp_path, model="t5", logits=True)
    assert max_diff(t5([enc, dec], training=False), logits_ref) <= TOL


def test_mesh_tf_export_uses_the_published_names(v11, v11_model, tmp_path):
    model, _, _ = v11
    export_checkpoint(v11_model, tmp_path / "export.ckpt", format="tf")
    exported = read_tensors(tmp_path / "export.ckpt")
    expected = mesh_tf_names(model.state_dict())
    expected.pop("global_step")
    assert sorted(exported) == sorted(expected)
    assert max(max_diff(exported[k], expected[k]) for k in expected) <= 1e-7


def test_keep_tokens_slices_shared_and_lm_head(tmp_path, data_dir):
    """The real cut-down mT5 vocabulary list applied to a tiny mT5 with the full 250112-row vocabulary."""
    with open(data_dir / "spm-mt5-chinese" / "sentencepiece_cn_keep_tokens.json") as f:
        keep = np.asarray(json.load(f))
    config = dict(vocab_size=250112, d_model=8, d_kv=4, d_ff=12, num_layers=1, num_heads=2,
                  feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    model = hf_t5(config, seed=9, untie=True)
    st_dir, _ = save_untied(model, str(tmp_path))
    rng = np.random.default_rng(10)
    enc = rng.integers(3, len(keep), size=(2, 7)).astype("int32")
    enc[1, 5:] = 0
    dec = rng.integers(3, len(keep), size=(2, 5)).astype("int32")
    dec[:, 0] = 0
    _, logits_ref = hf_outputs(model, keep[enc], keep[dec])
    t5 = build_transformer_model(f"{st_dir}/config.json", st_dir, model="mt5", keep_tokens=keep.tolist(), logits=True)
    assert t5.config.vocab_size == len(keep)
    assert max_diff(t5([enc, dec], training=False), logits_ref[..., keep]) <= TOL


def test_cached_decode_step_equals_full_decoder(v11_model):
    enc, dec = batch(seed=11, dec_len=7)
    full = v11_model([enc, dec], training=False)
    context = v11_model.encode(enc)
    context_cache, context_mask = v11_model.context_cache(context), v11_model.encoder_mask(enc)
    cache = v11_model.init_cache(3, 8)
    steps = []
    for i in range(dec.shape[1]):
        logits, cache = v11_model.decode_step(dec[:, i:i + 1], cache, i, context_cache, context_mask)
        steps.append(to_numpy(logits))
    assert max_diff(np.concatenate(steps, axis=1), full) <= 1e-5


def uncached_greedy(t5, enc, steps: int, stop: int) -> np.ndarray:
    """Greedy decoding by re-running the whole model on the growing decoder prefix (no cache)."""
    dec = np.zeros((len(enc), 1), "int32")
    done = np.zeros(len(enc), bool)
    out = []
    for _ in range(steps):
        token = np.argmax(to_numpy(t5([enc, dec], training=False))[:, -1], axis=-1)
        token = np.where(done, 0, token)
        out.append(token)
        done |= token == stop
        dec = np.concatenate([dec, token[:, None].astype("int32")], axis=1)
    return np.stack(out, axis=1)


def hf_greedy(model, enc, steps: int, eos: int) -> np.ndarray:
    with torch.no_grad():  # use_cache=False: HF sizes its cache by num_layers, not num_decoder_layers (v11: 2 vs 3)
        out = model.generate(input_ids=torch.tensor(enc, dtype=torch.long), attention_mask=torch.tensor(enc != 0).long(),
                             do_sample=False, num_beams=1, max_new_tokens=steps, eos_token_id=eos, use_cache=False)
    return out.numpy()[:, 1:]


@pytest.mark.parametrize("which", ["v10", "v11"])
def test_greedy_generation_matches_hf_generate(request, which):
    model, st_dir, _ = request.getfixturevalue(which)
    t5 = build_transformer_model(st_dir, st_dir, model="t5") if which == "v10" else request.getfixturevalue("v11_model")
    enc, _ = batch(seed=12, enc_len=10)
    steps = 12
    ref = hf_greedy(model, enc, steps, eos=1)
    ours = generate(t5, enc, steps, stop_ids=1)
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(ours, uncached_greedy(t5, enc, ours.shape[1], stop=1))
    # A stop id that one row reaches early: that row is padded with 0 afterwards, as in HF.
    stop = int(ref[0, 2])
    ref = hf_greedy(model, enc, steps, eos=stop)
    assert (ref[0, 3:] == 0).all()
    np.testing.assert_array_equal(generate(t5, enc, steps, stop_ids=stop), ref)


def test_keras_round_trip(v11_model, tmp_path):
    enc, dec = batch(seed=13)
    expected = v11_model([enc, dec], training=False)
    v11_model.save(tmp_path / "t5.keras")
    restored = keras.models.load_model(tmp_path / "t5.keras")
    assert max_diff(restored([enc, dec], training=False), expected) <= 1e-6
    assert max_diff(restored.encoder_model(enc, training=False), v11_model.encoder_model(enc, training=False)) == 0


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_bfloat16"])
def test_bf16_runs_close_to_float32(v11, v11_model, dtype):
    _, st_dir, _ = v11
    enc, dec = batch(seed=14)
    expected = to_numpy(v11_model([enc, dec], training=False))
    t5 = build_transformer_model(st_dir, st_dir, model="t5.1.1", logits=True, dtype=dtype)
    out = to_numpy(t5([enc, dec], training=False))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    rms = float(np.sqrt(np.mean(np.square(expected))))
    # measured on these weights (seeds 14-16): max error 0.08-0.11 x RMS, RMS error 0.018-0.022 x RMS
    assert max_diff(out, expected) <= 0.15 * rms
    assert float(np.sqrt(np.mean(np.square(out - expected)))) <= 0.03 * rms
    assert generate(t5, enc, 3).shape == (3, 3)
