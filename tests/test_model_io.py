"""Model I/O: `.keras` round trip, export back to HF / Google formats, vocabulary trimming, errors, dtypes."""
import keras
import numpy as np
import pytest
import torch
import transformers

from bert4k import build_transformer_model
from bert4k.checkpoints import CheckpointMismatch, read_tensors
from bert4k.models.checkpoint_io import export_checkpoint
from tests.oracles.hf import max_diff, random_ids, randomize
from tests.test_bert_parity import BERT_CONFIG, google_names, hf_outputs


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(**BERT_CONFIG))
    randomize(model, seed=5)
    folder = tmp_path_factory.mktemp("bert_io")
    model.save_pretrained(folder, safe_serialization=True)
    return model, str(folder)


def inputs(seed=0):
    ids = random_ids(2, 9, BERT_CONFIG["vocab_size"], seed=seed)
    return [ids, np.zeros_like(ids)]


def test_keras_round_trip_identical(checkpoint, tmp_path):
    _, folder = checkpoint
    model = build_transformer_model(f"{folder}/config.json", folder, with_pool=True, with_mlm=True)
    path = tmp_path / "bert.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(model.predict(inputs(), verbose=0), loaded.predict(inputs(), verbose=0)):
        np.testing.assert_array_equal(a, b)
    assert loaded.get_config() == model.get_config()


def test_export_safetensors_loads_in_hf(checkpoint, tmp_path):
    hf_model, folder = checkpoint
    model = build_transformer_model(f"{folder}/config.json", folder, with_pool=True, with_mlm=True)
    out = tmp_path / "export"
    out.mkdir()
    export_checkpoint(model, out / "model.safetensors")
    hf_model.config.to_json_file(out / "config.json")
    reloaded = transformers.BertForPreTraining.from_pretrained(out).eval()
    ids, segments = inputs(1)
    for a, b in zip(hf_outputs(reloaded, ids, segments), hf_outputs(hf_model, ids, segments)):
        assert max_diff(a, b) <= 1e-6


def test_export_google_checkpoint_uses_the_published_names(checkpoint, tmp_path):
    """Names and values against the hand-written Google table of the parity test (not our own inverse map)."""
    hf_model, folder = checkpoint
    model = build_transformer_model(f"{folder}/config.json", folder, with_pool=True, with_mlm=True, logits=True)
    prefix = export_checkpoint(model, tmp_path / "bert_model.ckpt", format="tf")
    exported = read_tensors(prefix)
    expected = {k: v for k, v in google_names(hf_model.state_dict()).items()
                if not k.startswith("cls/seq_relationship/")}  # the NSP head is not part of a bert4k model
    assert sorted(exported) == sorted(expected)
    assert max(max_diff(exported[k], expected[k]) for k in expected) <= 1e-7
    again = build_transformer_model(BERT_CONFIG, prefix, with_mlm=True, logits=True)
    ids, segments = inputs(2)
    assert max_diff(again.predict([ids, segments], verbose=0), hf_outputs(hf_model, ids, segments)[2]) <= 1e-4


def test_keep_tokens_trims_embeddings_and_mlm_bias(checkpoint):
    hf_model, folder = checkpoint
    keep = [0, 5, 7, 11, 42, 99, 101]
    model = build_transformer_model(f"{folder}/config.json", folder, with_mlm=True, logits=True, keep_tokens=keep)
    ids = np.array([[1, 2, 3, 4, 6, 5, 0]], dtype="int32")  # new ids index into `keep`
    got = model.predict([ids, np.zeros_like(ids)], verbose=0)
    full_ids = np.array(keep)[ids]
    full = hf_outputs(hf_model, full_ids, np.zeros_like(full_ids))[2]
    assert got.shape == (1, 7, len(keep))
    assert max_diff(got, full[..., keep]) <= 1e-4


def test_missing_and_mismatched_tensors_are_named(checkpoint, tmp_path):
    _, folder = checkpoint
    with pytest.raises(CheckpointMismatch, match=r"shape mismatch: embeddings.word_embeddings.weight"):
        build_transformer_model(f"{folder}/config.json", folder, vocab_size=77)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(f"{folder}/model.safetensors")
    del tensors["bert.encoder.layer.1.output.dense.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointMismatch, match=r"missing: encoder.layer.1.output.dense.weight"):
        build_transformer_model(f"{folder}/config.json", tmp_path / "model.safetensors")


def test_bad_config_names_field(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text('{"vocab_size": 10, "hidden_size": 8}')
    with pytest.raises(ValueError, match=r"bert_config.json: missing required field\(s\) \['num_hidden_layers'"):
        build_transformer_model(path)
    with pytest.raises(ValueError, match="unknown application 'seq2seq'"):
        build_transformer_model(BERT_CONFIG, application="seq2seq")


def test_fresh_weights_are_distinct():
    model = build_transformer_model(BERT_CONFIG)
    attention = model.get_layer("Transformer-0").attention
    assert not np.allclose(attention.query.kernel.numpy(), attention.key.kernel.numpy())


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_bfloat16"])
def test_builds_and_runs_in_bfloat16(checkpoint, dtype):
    hf_model, folder = checkpoint
    model = build_transformer_model(f"{folder}/config.json", folder, with_mlm=True, logits=True, dtype=dtype)
    ids, segments = inputs(3)
    got = np.asarray(model.predict([ids, segments], verbose=0), dtype=np.float32)
    expected = hf_outputs(hf_model, ids, segments)[2]
    rms = float(np.sqrt(np.mean(expected ** 2)))
    # measured on these weights: max error 0.046-0.059 x RMS, RMS error 0.011-0.013 x RMS (bf16: 8 mantissa bits)
    assert max_diff(got, expected) <= 0.08 * rms
    assert float(np.sqrt(np.mean((got - expected) ** 2))) <= 0.02 * rms
