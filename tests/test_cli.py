"""The `bert4k` command: `bert4k masks --plot out.png` writes a picture; without --plot the masks are printed."""
import json
import subprocess
import sys

import numpy as np
import pytest

from bert4k import cli
from bert4k.plotting import example_tokens, plot_application_masks
from tests.conftest import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return imread(path)


def test_masks_plot_writes_a_png(tmp_path, capsys):
    out = tmp_path / "masks.png"
    assert cli.main(["masks", "--plot", str(out)]) == 0
    image = read_png(out)
    assert image.shape[0] > 500 and image.shape[1] > 800
    assert image[..., :3].std() > 0.1  # not a blank canvas
    assert str(out) in capsys.readouterr().out


def test_masks_plot_with_text_target_and_token_count(tmp_path):
    assert cli.main(["masks", "--plot", str(tmp_path / "a.png"), "--text", "床前明月光", "--target", "疑是地上霜"]) == 0
    read_png(tmp_path / "a.png")
    path = plot_application_masks(5, tmp_path / "b.png", num_pad=0)
    assert path == str(tmp_path / "b.png")
    read_png(tmp_path / "b.png")


def test_masks_printed_as_text(capsys):
    assert cli.main(["masks", "--tokens", "3", "--pad", "1"]) == 0
    out = capsys.readouterr().out
    # tokens 0 1 2 + [PAD]; lm: j ≤ i and never the padding key.
    lm = out.split("\nlm ")[1].split("\n\n")[0].splitlines()[1:]
    assert lm == ["# . . .", "# # . .", "# # # .", "# # # ."]
    encoder = out.split("\nencoder ")[1].split("\n\n")[0].splitlines()[1:]
    assert encoder == ["# # # ."] * 4
    assert "\nplm " in out and "\nunilm " in out


def test_example_tokens():
    tokens, segments = example_tokens("北京 欢迎", num_pad=1)
    assert tokens == ["[CLS]", "北", "京", "欢", "迎", "[SEP]", "[PAD]"]
    np.testing.assert_array_equal(segments, [0, 0, 0, 1, 1, 1, 0])
    tokens, segments = example_tokens("问", target="答", num_pad=0)
    assert tokens == ["[CLS]", "问", "[SEP]", "答", "[SEP]"]
    np.testing.assert_array_equal(segments, [0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="token count"):
        example_tokens(0)


def test_no_subcommand_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "masks" in capsys.readouterr().out


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "bert4k.cli", "masks", "--help"], cwd=REPO, check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--plot" in result.stdout


# === help, errors ===

COMMANDS = ["info", "convert", "fill-mask", "encode", "generate", "masks"]


def test_help_is_fast_quiet_and_imports_no_keras():
    code = ("import sys, time; t = time.time(); from bert4k import cli\n"
            f"for c in [[]] + [[c] for c in {COMMANDS!r}]:\n"
            "    try: cli.main(c + ['--help'])\n"
            "    except SystemExit: pass\n"
            "print('seconds', time.time() - t, 'heavy', [m for m in ('keras', 'tensorflow', 'torch') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0 and result.stderr == ""
    seconds, heavy = result.stdout.rsplit("seconds", 1)[1].split("heavy")
    assert heavy.strip() == "[]" and float(seconds) < 2.0
    for command in COMMANDS:
        assert f"\n    {command}" in result.stdout or f"{{{','.join(COMMANDS)}}}" in result.stdout


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bert4k.cli", "info", str(tmp_path / "absent")], cwd=REPO, check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    # only the error: TensorFlow's native start-up banners are filtered (its log level does not reach them)
    assert result.stderr.strip() == f"bert4k info: error: {tmp_path / 'absent'}: no such file or folder"
    assert "Traceback" not in result.stderr
    with pytest.raises(cli.CommandError, match="no such file"):
        cli.main(["info", str(tmp_path / "absent"), "--debug"])
    (tmp_path / "empty").mkdir()
    assert cli.main(["convert", str(tmp_path / "empty"), str(tmp_path / "out"), "--to", "hf"]) == 1
    assert not (tmp_path / "out").exists()


# === info, convert ===

SMALL = REPO / "pretrained" / "bert4k-small-zh"


def test_info_reports_family_config_and_parameters(capsys):
    from safetensors.torch import load_file

    assert cli.main(["info", str(SMALL), "--tensors"]) == 0
    out = capsys.readouterr().out
    tensors = load_file(str(SMALL / "model.safetensors"))
    assert "family: bert" in out and "registry: bert4k-small-zh" in out and "HF safetensors" in out
    assert "num_hidden_layers=4, hidden_size=256" in out
    assert f"tensors: {len(tensors)}, parameters: {sum(t.numel() for t in tensors.values()):,}" in out
    name = next(n for n in tensors if n.endswith("layer.0.attention.self.query.weight"))
    assert f"  {name}  {tuple(tensors[name].shape)}  float32" in out


@pytest.fixture(scope="module")
def google_bert(tmp_path_factory):
    """A random HF BERT and the same weights as a Google TF checkpoint folder (bert_config.json, vocab.txt)."""
    import torch
    import transformers

    from bert4k import build_transformer_model
    from bert4k.models.checkpoint_io import export_checkpoint
    from tests.oracles.hf import randomize
    from tests.test_bert_parity import BERT_CONFIG

    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(transformers.BertConfig(**BERT_CONFIG))
    randomize(hf, seed=3)
    root = tmp_path_factory.mktemp("cli_bert")
    hf.save_pretrained(root / "hf", safe_serialization=True)
    model = build_transformer_model(root / "hf" / "config.json", root / "hf", with_pool=True, with_mlm=True)
    export_checkpoint(model, root / "google" / "bert_model.ckpt", format="tf")
    (root / "google" / "bert_config.json").write_text(json.dumps(BERT_CONFIG))
    (root / "google" / "vocab.txt").write_text("".join(f"t{i}\n" for i in range(BERT_CONFIG["vocab_size"])))
    return hf, root / "google"


def test_convert_google_tf_to_hf_loads_in_transformers(google_bert, tmp_path, capsys):
    import transformers

    from tests.oracles.hf import max_diff, random_ids
    from tests.test_bert_parity import hf_outputs

    hf, google = google_bert
    assert cli.main(["info", str(google)]) == 0
    assert "TensorFlow checkpoint" in capsys.readouterr().out
    out = tmp_path / "as_hf"
    assert cli.main(["convert", str(google), str(out), "--to", "hf"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    reloaded = transformers.BertForPreTraining.from_pretrained(out).eval()
    ids = random_ids(2, 9, 120, seed=4)
    for a, b in zip(hf_outputs(reloaded, ids, np.zeros_like(ids)), hf_outputs(hf, ids, np.zeros_like(ids))):
        assert max_diff(a, b) <= 1e-5
    assert cli.main(["convert", str(google), str(out), "--to", "hf"]) == 1  # exists: refused without --force
    assert "already exists" in capsys.readouterr().err


def test_convert_hf_to_tf_and_keras(google_bert, tmp_path):
    import keras

    from bert4k.checkpoints import read_tensors
    from tests.oracles.hf import max_diff, random_ids
    from tests.test_bert_parity import hf_outputs

    hf, google = google_bert
    assert cli.main(["convert", str(google), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert cli.main(["convert", str(tmp_path / "hf"), str(tmp_path / "tf"), "--to", "tf"]) == 0
    original, again = read_tensors(str(google / "bert_model.ckpt")), read_tensors(str(tmp_path / "tf" / "bert_model.ckpt"))
    assert sorted(original) == sorted(again)
    assert max(max_diff(original[k], again[k]) for k in original) == 0.0
    assert cli.main(["convert", str(tmp_path / "hf"), str(tmp_path / "m.keras"), "--to", "keras"]) == 0
    model = keras.saving.load_model(tmp_path / "m.keras")
    ids = random_ids(2, 9, 120, seed=5)
    pooled, logits = model.predict([ids, np.zeros_like(ids)], verbose=0)
    _, ref_pooled, ref_logits = hf_outputs(hf, ids, np.zeros_like(ids))
    assert max_diff(pooled, ref_pooled) <= 1e-4 and max_diff(logits, ref_logits) <= 1e-4


TINY_BERT = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                 max_position_embeddings=32, type_vocab_size=2)


def test_convert_refuses_a_conditional_layernorm_model_listing_its_unnamed_weights(tmp_path, capsys):
    """convert goes through export_checkpoint: a model with weights the format has no name for (conditional
    LayerNorm's gamma_dense / beta_dense) fails naming each of them, and writes nothing."""
    from bert4k import build_transformer_model

    model = build_transformer_model(TINY_BERT, layer_norm_cond=8)
    model.save(tmp_path / "cond.keras")
    unnamed = [w.path for w in model.weights if "gamma_dense" in w.path or "beta_dense" in w.path]
    assert len(unnamed) == 10
    for to in ("hf", "tf"):
        assert cli.main(["convert", str(tmp_path / "cond.keras"), str(tmp_path / to), "--to", to]) == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "has no name for 10 weight(s)" in err and all(path in err for path in unnamed), err
        assert not (tmp_path / to).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cond.keras"]  # no temporary left behind


def test_convert_keras_model_to_hf_loads_in_transformers_with_a_progress_bar(tmp_path, capsys):
    import torch
    import transformers

    from bert4k import build_transformer_model
    from tests.oracles.hf import random_ids

    model = build_transformer_model(TINY_BERT, with_mlm=True, logits=True)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.2, w.shape).astype("float32") for w in model.weights])
    model.save(tmp_path / "model.keras")
    (tmp_path / "vocab.txt").write_text("".join(f"t{i}\n" for i in range(60)))
    assert cli.main(["convert", str(tmp_path / "model.keras"), str(tmp_path / "hf"), "--to", "hf",
                     "--progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    bars = capsys.readouterr().err.split("\r")
    data_bytes = sum(w.numpy().nbytes for w in model.weights)
    assert bars[-1].strip().endswith(f"{data_bytes / 2 ** 20:,.1f}/{data_bytes / 2 ** 20:,.1f} MB 100%")
    assert len(bars) > 3  # redrawn as the tensors are written
    reference = transformers.BertForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    ids = random_ids(2, 9, 60, seed=1)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids), token_type_ids=torch.zeros(ids.shape, dtype=torch.long),
                             attention_mask=torch.tensor(ids != 0, dtype=torch.long)).logits.numpy()
    got = np.asarray(model.predict([ids, np.zeros_like(ids)], verbose=0))
    real = ids != 0
    assert np.abs(got[real] - expected[real]).max() < 1e-4
    capsys.readouterr()
    assert cli.main(["convert", str(tmp_path / "model.keras"), str(tmp_path / "tf"), "--to", "tf"]) == 0
    assert "\r" not in capsys.readouterr().err  # no bar: stderr is not a terminal and no --progress
    assert cli.main(["convert", str(tmp_path / "model.keras"), str(tmp_path / "tf2"), "--to", "tf", "--progress"]) == 0
    assert capsys.readouterr().err.split("\r")[-1].strip().endswith(" MB 100%")
    from bert4k.checkpoints import read_tensors

    assert len(read_tensors(str(tmp_path / "tf" / "bert_model.ckpt"))) == len(model.weights)


def test_streaming_safetensors_writer_is_read_back_by_the_reference_reader(tmp_path):
    """convert's progress comes from bert4k's own per-tensor safetensors writer: the reference reader (safetensors
    for torch) gets every dtype, shape and value back, and progress counts the data bytes up to the total."""
    import ml_dtypes
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from bert4k.checkpoints.writers import save_safetensors

    rng = np.random.default_rng(0)
    tensors = {"b.w": rng.normal(size=(3, 5)).astype("float32"), "a": np.arange(7, dtype=">i8"),
               "mask": np.array([True, False, True]), "half": rng.normal(size=(2, 2)).astype("float16"),
               "bf16": rng.normal(size=(4,)).astype(ml_dtypes.bfloat16), "scalar": np.float32(3.5),
               "empty": np.zeros((0, 3), "float32"), "i8": np.array([-1, 2], "int8")}
    calls = []
    save_safetensors(tensors, tmp_path / "x.safetensors", metadata={"format": "pt", "k": "v"},
                     progress=lambda done, total: calls.append((done, total)))
    got = load_file(tmp_path / "x.safetensors")
    assert sorted(got) == sorted(tensors)
    for name, value in tensors.items():
        back = got[name].float().numpy() if got[name].dtype == torch.bfloat16 else got[name].numpy()
        assert back.shape == np.shape(value) and np.array_equal(back, np.asarray(value).astype(back.dtype)), name
    with safe_open(tmp_path / "x.safetensors", "np") as f:
        assert f.metadata() == {"format": "pt", "k": "v"}
    header = json.loads((tmp_path / "x.safetensors").read_bytes()[8:8 + int.from_bytes(
        (tmp_path / "x.safetensors").read_bytes()[:8], "little")])
    assert all(v["data_offsets"][0] % np.dtype(np.asarray(tensors[k]).dtype).itemsize == 0
               for k, v in header.items() if k != "__metadata__")  # every tensor aligned to its item size
    total = sum(np.asarray(v).nbytes for v in tensors.values())
    assert len(calls) == len(tensors) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    with pytest.raises(TypeError, match=r"tensor 'c' has dtype complex64"):
        save_safetensors({"c": np.zeros(2, "complex64")}, tmp_path / "c.safetensors")
    assert not list(tmp_path.glob("c.safetensors*"))


# === fill-mask, encode, generate ===

@pytest.mark.slow
def test_fill_mask_encode_generate_commands(tmp_path, capsys):
    import torch
    import transformers

    from bert4k import encode, from_pretrained, generate_text

    assert cli.main(["fill-mask", str(SMALL), "北京是中国的首[MASK]。", "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    hf = transformers.BertForMaskedLM.from_pretrained(str(SMALL)).eval()
    tok = transformers.BertTokenizerFast.from_pretrained(str(SMALL))
    batch = tok("北京是中国的首[MASK]。", return_tensors="pt")
    with torch.no_grad():
        probs = hf(**batch).logits[0, batch["input_ids"][0].tolist().index(tok.mask_token_id)].softmax(-1)
    top = probs.topk(3)
    assert [line.split("\t")[1] for line in lines] == tok.convert_ids_to_tokens(top.indices.tolist())
    assert abs(float(lines[0].split("\t")[0]) - float(top.values[0])) < 1e-4

    assert cli.main(["encode", str(SMALL), "今天天气很好", "北京", "--pooling", "mean", "--out",
                     str(tmp_path / "v.npy")]) == 0
    model, tokenizer = from_pretrained(SMALL)
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), encode(model, tokenizer, ["今天天气很好", "北京"],
                                                                   pooling="mean"), atol=1e-5)

    capsys.readouterr()
    assert cli.main(["generate", str(SMALL), "今天", "--max-new-tokens", "3"]) == 0  # bert → unilm
    unilm, tokenizer = from_pretrained(SMALL, application="unilm")
    assert capsys.readouterr().out == generate_text(unilm, tokenizer, "今天", max_new_tokens=3) + "\n"
