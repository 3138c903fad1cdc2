"""GPT-2 and GPT2-ML built by bert4k equal their references on the same weights.

GPT-2: a tiny random HF `GPT2LMHeadModel` saved as safetensors and .bin, and the same weights under OpenAI's TF names
(table written here by hand from the public layout). GPT2-ML has no HF class: the reference is a numpy forward written
straight from imcaspar/gpt2-ml's `train/modeling.py` (embedding LayerNorm; `h = x + Attn(x)`;
`y = LN1(h + FFN(LN0(h)))`; erf GELU; eps 1e-5; tied head), on weights stored under its TF names.
"""
import json
import math

import numpy as np
import pytest
import torch
import transformers

from bert4k import build_transformer_model
from bert4k.checkpoints import read_tensors
from bert4k.checkpoints.writers import save_tf_checkpoint
from bert4k.generation import generate
from bert4k.models.checkpoint_io import export_checkpoint
from tests.oracles.hf import max_diff, randomize, save_both

TOL = 1e-4
HF_CONFIG = dict(vocab_size=61, n_positions=40, n_embd=32, n_layer=2, n_head=4, n_inner=48, pad_token_id=0,
                 bos_token_id=1, eos_token_id=2)


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_CONFIG))
    randomize(model)
    st_dir, bin_dir = save_both(model, str(tmp_path_factory.mktemp("gpt2")))
    return model, st_dir, bin_dir


def hf_logits(model, ids, attention_mask=None):
    mask = None if attention_mask is None else torch.tensor(attention_mask, dtype=torch.long)
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=mask).logits.numpy()


def right_padded(seed=0, vocab=61):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(3, 9)).astype("int32")
    ids[1, 6:] = 0
    ids[2, 3:] = 0
    return ids


def assert_close_on_tokens(ours, ref, ids, pad_id=0):
    """Compare at every non-padding position."""
    keep = ids != pad_id
    assert max_diff(ours[keep], ref[keep]) <= TOL


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_hf_gpt2_logits_match(hf_gpt2, fmt):
    model, st_dir, bin_dir = hf_gpt2
    folder = st_dir if fmt == "safetensors" else bin_dir
    ours = build_transformer_model(f"{folder}/config.json", folder, model="gpt2", logits=True)
    ids = right_padded()
    assert_close_on_tokens(ours.predict(ids, verbose=0), hf_logits(model, ids, ids != 0), ids)
    left = np.zeros_like(ids)  # left padding: HF forward (no position_ids) also numbers positions 0..n-1
    for row, r in enumerate(ids):
        real = r[r != 0]
        left[row, len(r) - len(real):] = real
    assert_close_on_tokens(ours.predict(left, verbose=0), hf_logits(model, left, left != 0), left)


def test_hf_gpt2_probabilities_by_default(hf_gpt2):
    model, st_dir, _ = hf_gpt2
    probs = build_transformer_model(st_dir, st_dir, model="gpt2").predict(right_padded()[:1], verbose=0)
    expected = torch.softmax(torch.tensor(hf_logits(model, right_padded()[:1])), -1).numpy()
    assert probs.shape == (1, 9, HF_CONFIG["vocab_size"])
    assert max_diff(probs, expected) <= 1e-5


def openai_names(state: dict) -> dict:
    """HF GPT2LMHeadModel tensors under OpenAI's TF names, conv weights `[1, in, out]` (hand-written table)."""
    out = {}
    for key, value in state.items():
        value = value.numpy()
        if not key.startswith("transformer.") or key.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        name = key[len("transformer."):]
        if name in ("wte.weight", "wpe.weight"):
            out["model/" + name.split(".")[0]] = value
            continue
        parts = name.split(".")
        if parts[0] == "h":
            parts = [f"h{parts[1]}"] + parts[2:]
        *path, leaf = parts
        if path[-1].startswith("ln_"):
            leaf = {"weight": "g", "bias": "b"}[leaf]
        elif leaf == "weight":
            leaf, value = "w", value[None]
        else:
            leaf = "b"
        out["/".join(["model", *path, leaf])] = np.ascontiguousarray(value)
    return out


def test_openai_tf_checkpoint_matches(hf_gpt2, tmp_path):
    model, _, _ = hf_gpt2
    tensors = openai_names(model.state_dict())
    assert tensors["model/h0/attn/c_attn/w"].shape == (1, 32, 96)
    prefix = save_tf_checkpoint(tensors, tmp_path / "model.ckpt")
    hparams = {"n_vocab": HF_CONFIG["vocab_size"], "n_ctx": 40, "n_embd": 32, "n_head": 4, "n_layer": 2}
    (tmp_path / "hparams.json").write_text(json.dumps(hparams))
    ours = build_transformer_model(tmp_path / "hparams.json", prefix, model="gpt2", logits=True,
                                   intermediate_size=48)
    assert ours.config.pad_token_id == -1  # OpenAI's vocabulary has no padding id
    ids = np.random.default_rng(4).integers(0, HF_CONFIG["vocab_size"], size=(2, 8)).astype("int32")
    assert max_diff(ours.predict(ids, verbose=0), hf_logits(model, ids)) <= TOL


def test_export_round_trips_through_hf_and_tf(hf_gpt2, tmp_path):
    model, st_dir, _ = hf_gpt2
    ours = build_transformer_model(st_dir, st_dir, model="gpt2", logits=True)
    export_checkpoint(ours, tmp_path / "hf" / "model.safetensors")
    model.config.to_json_file(str(tmp_path / "hf" / "config.json"))
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf")).eval()
    ids = right_padded(seed=5)[:1]
    assert max_diff(hf_logits(reloaded, ids), hf_logits(model, ids)) <= 1e-6
    prefix = export_checkpoint(ours, tmp_path / "tf" / "model.ckpt", format="tf")
    exported, expected = read_tensors(prefix), openai_names(model.state_dict())  # the hand-written OpenAI table
    assert sorted(exported) == sorted(expected)
    assert max(max_diff(exported[k], expected[k]) for k in expected) <= 1e-7
    again = build_transformer_model(st_dir, prefix, model="gpt2", logits=True)
    assert max_diff(again.predict(ids, verbose=0), hf_logits(model, ids)) <= TOL


def test_greedy_matches_hf_generate_with_mixed_prompt_lengths(hf_gpt2):
    model, st_dir, _ = hf_gpt2
    ours = build_transformer_model(st_dir, st_dir, model="gpt2")
    rng = np.random.default_rng(7)
    prompts = [list(rng.integers(3, 61, n)) for n in (5, 2, 8)]
    width = max(map(len, prompts))
    left = np.array([[0] * (width - len(p)) + p for p in prompts])
    with torch.no_grad():
        ref = model.generate(torch.tensor(left), attention_mask=torch.tensor(left != 0, dtype=torch.long),
                             max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    np.testing.assert_array_equal(generate(ours, prompts, 12), ref[:, width:].numpy())
    with torch.no_grad():
        ref = model.generate(torch.tensor(left), attention_mask=torch.tensor(left != 0, dtype=torch.long),
                             max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0,
                             repetition_penalty=1.8)
    np.testing.assert_array_equal(generate(ours, prompts, 12, repetition_penalty=1.8), ref[:, width:].numpy())


def test_config_padding_rules(tmp_path):
    from bert4k.models.config_readers.gpt2 import gpt2_config

    base = {"vocab_size": 30, "n_embd": 8, "n_head": 2, "n_layer": 1}
    assert gpt2_config(dict(base)).pad_token_id == -1
    assert gpt2_config({**base, "pad_token_id": 7}).pad_token_id == 7
    assert gpt2_config({**base, "tokenizer_class": "BertTokenizer"}).pad_token_id == 0  # UER gpt2-chinese-*
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    assert gpt2_config({**base, "__path__": str(tmp_path / "config.json")}).pad_token_id == 0
    cfg = gpt2_config({**base, "n_inner": None, "activation_function": "gelu_new"})
    assert (cfg.intermediate_size, cfg.hidden_act, cfg.layer_norm_eps, cfg.norm_position) == (32, "gelu_tanh", 1e-5,
                                                                                             "pre")


# === GPT2-ML ===
ML = dict(vocab_size=57, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
          max_position_embeddings=24, hidden_act="gelu", initializer_range=0.02)


def gpt2_ml_weights(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    h, f, v, p = ML["hidden_size"], ML["intermediate_size"], ML["vocab_size"], ML["max_position_embeddings"]

    def rand(*shape, center=0.0):
        return (center + 0.2 * rng.standard_normal(shape)).astype("float32")

    w = {"newslm/embeddings/word_embed": rand(v, h), "newslm/embeddings/pos_embed": rand(p, h),
         "newslm/embeddings/LayerNorm_embed_norm/gamma": rand(h, center=1.0),
         "newslm/embeddings/LayerNorm_embed_norm/beta": rand(h)}
    for i in range(ML["num_hidden_layers"]):
        s = f"newslm/layer{i:02d}"
        for name, (n_in, n_out) in {"query_layer": (h, h), "key_layer": (h, h), "value_layer": (h, h),
                                    "context_projection_layer": (h, h), "intermediate": (h, f),
                                    "output": (f, h)}.items():
            w[f"{s}/{name}/kernel"], w[f"{s}/{name}/bias"] = rand(n_in, n_out), rand(n_out)
        for name in ("LayerNorm_mlp_ln0", "LayerNorm_mlp_ln1"):
            w[f"{s}/{name}/gamma"], w[f"{s}/{name}/beta"] = rand(h, center=1.0), rand(h)
    return w


def gpt2_ml_reference(w: dict, ids: np.ndarray) -> np.ndarray:
    """Logits of GPT2-ML's forward (`GroverModel`), float64 numpy, causal mask only (as in the original)."""
    def layer_norm(x, name):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * w[f"{name}/gamma"] + w[f"{name}/beta"]

    def dense(x, name):
        return x @ w[f"{name}/kernel"].astype("float64") + w[f"{name}/bias"]

    gelu = np.vectorize(lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))))
    n, heads = ids.shape[1], ML["num_attention_heads"]
    size = ML["hidden_size"] // heads
    table = w["newslm/embeddings/word_embed"].astype("float64")
    x = layer_norm(table[ids] + w["newslm/embeddings/pos_embed"][:n], "newslm/embeddings/LayerNorm_embed_norm")
    causal = np.tril(np.ones((n, n), bool))
    for i in range(ML["num_hidden_layers"]):
        s = f"newslm/layer{i:02d}"
        q, k, v = (dense(x, f"{s}/{name}").reshape(len(ids), n, heads, size).transpose(0, 2, 1, 3)
                   for name in ("query_layer", "key_layer", "value_layer"))
        scores = np.where(causal, q @ k.transpose(0, 1, 3, 2) / math.sqrt(size), -1e10)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(len(ids), n, heads * size)
        h = x + dense(context, f"{s}/context_projection_layer")
        ffn = dense(gelu(dense(layer_norm(h, f"{s}/LayerNorm_mlp_ln0"), f"{s}/intermediate")), f"{s}/output")
        x = layer_norm(h + ffn, f"{s}/LayerNorm_mlp_ln1")
    return x @ table.T


def test_gpt2_ml_tf_checkpoint_matches_reference(tmp_path):
    weights = gpt2_ml_weights()
    prefix = save_tf_checkpoint(weights, tmp_path / "model.ckpt-100000")
    ours = build_transformer_model(dict(ML), prefix, model="gpt2_ml", logits=True)
    ids = right_padded(seed=2, vocab=ML["vocab_size"])
    ref = gpt2_ml_reference(weights, ids)
    assert_close_on_tokens(ours.predict(ids, verbose=0), ref, ids)
    # cached greedy decoding follows the reference's argmax
    prompt = [int(t) for t in ids[0, :4]]
    new = generate(ours, [prompt], 6)[0]
    sequence = prompt + [int(t) for t in new]
    logits = gpt2_ml_reference(weights, np.array([sequence]))[0]
    np.testing.assert_array_equal(new, logits[3:-1].argmax(-1))
    exported = export_checkpoint(ours, tmp_path / "again" / "model.ckpt", format="tf")
    again = build_transformer_model(dict(ML), exported, model="gpt2_ml", logits=True)
    assert_close_on_tokens(again.predict(ids, verbose=0), ref, ids)
