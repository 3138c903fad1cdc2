"""Bad files: config fields of the wrong type or range, and empty / truncated / corrupt checkpoint files."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from bert4k import build_transformer_model
from bert4k.checkpoints import CorruptCheckpoint, read_tensors
from bert4k.checkpoints.writers import save_tf_checkpoint

BERT = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
            max_position_embeddings=16, type_vocab_size=2)
GPT2 = dict(model_type="gpt2", vocab_size=30, n_positions=16, n_embd=16, n_layer=1, n_head=2)


@pytest.mark.parametrize("base,field,value,expected", [
    (BERT, "type_vocab_size", -1, r"expected int >= 0, got -1 \(int\)"),
    (BERT, "hidden_size", "64", r"expected int >= 1, got '64' \(str\)"),
    (BERT, "hidden_dropout_prob", "0.1", r"expected number >= 0 and < 1, got '0.1' \(str\)"),
    (BERT, "layer_norm_eps", "1e-12", r"expected number >= 1e-30, got '1e-12' \(str\)"),
    (BERT, "num_hidden_layers", True, r"expected int >= 1, got True \(bool\)"),
    (BERT, "attention_probs_dropout_prob", 1.5, r"expected number >= 0 and < 1, got 1.5"),
    (BERT, "hidden_act", 3, r"expected str, got 3"),
    (GPT2, "n_embd", "64", r"expected int >= 1, got '64' \(str\)"),
    (GPT2, "n_layer", 2.0, r"expected int >= 1, got 2.0 \(float\)"),
    (GPT2, "pad_token_id", -5, r"expected int >= -1 \(or null\), got -5"),
])
def test_config_field_type_and_range_checked_when_read(tmp_path, base, field, value, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**base, field: value}))
    with pytest.raises(ValueError, match=rf"^{path}: config field '{field}': {expected}"):
        build_transformer_model(path)


def test_override_checked_too():
    with pytest.raises(ValueError, match=r"config field 'type_vocab_size': expected int >= 0, got -1"):
        build_transformer_model(BERT, type_vocab_size=-1)
    with pytest.raises(ValueError, match=r"config field 'key_size': expected int >= 1 \(or null\), got '8'"):
        build_transformer_model(BERT, key_size="8")


def _tensors():
    rng = np.random.default_rng(0)
    return {f"bert/encoder/layer_0/w{i}": rng.standard_normal((64, 64)).astype("float32") for i in range(3)}


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def _expect_corrupt(path, names_file, chained=True):
    with pytest.raises(CorruptCheckpoint, match="truncated or corrupt") as info:
        read_tensors(path)
    assert os.fspath(names_file) in str(info.value)
    assert (info.value.__cause__ is not None) == chained


@pytest.mark.parametrize("cut", ["header", "data", "empty"])
def test_truncated_safetensors(tmp_path, cut):
    path = tmp_path / "model.safetensors"
    save_file(_tensors(), path)
    _truncate(path, {"header": 20, "data": os.path.getsize(path) - 100, "empty": 0}[cut])
    _expect_corrupt(path, path, chained=cut != "empty")
    with pytest.raises(CorruptCheckpoint, match=str(path)):
        build_transformer_model(BERT, path)


@pytest.mark.parametrize("cut", ["half", "empty"])
def test_truncated_torch_bin(tmp_path, cut):
    path = tmp_path / "pytorch_model.bin"
    torch.save({k: torch.tensor(v) for k, v in _tensors().items()}, path)
    _truncate(path, 0 if cut == "empty" else os.path.getsize(path) // 2)
    _expect_corrupt(path, path, chained=cut != "empty")


@pytest.mark.parametrize("which", ["data", "index"])
def test_truncated_tf_checkpoint(tmp_path, which):
    prefix = save_tf_checkpoint(_tensors(), tmp_path / "bert_model.ckpt")
    target = f"{prefix}.data-00000-of-00001" if which == "data" else f"{prefix}.index"
    _truncate(target, os.path.getsize(target) // 2 if which == "data" else 0)
    _expect_corrupt(prefix, target, chained=which == "data")
