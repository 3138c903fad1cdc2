"""Export: every weight or an error, an atomic TF pair, and HF folders that `transformers.AutoModel*` loads."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers

from bert4k import build_transformer_model
from bert4k.checkpoints import read_tensors
from bert4k.models.checkpoint_io import export_checkpoint
from tests.oracles.hf import max_diff, random_ids, randomize

BERT = dict(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=40, type_vocab_size=2, hidden_act="gelu")


def test_weights_without_a_checkpoint_name_are_refused(tmp_path):
    """Before: a conditional-LayerNorm model exported 26 of 34 weights, dropping gamma_dense/beta_dense silently."""
    model = build_transformer_model(BERT, layer_norm_cond=8)
    with pytest.raises(ValueError, match=r"no name for 10 weight\(s\).*gamma_dense.*beta_dense") as info:
        export_checkpoint(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    cond_weights = [w.path for w in model.weights if "gamma_dense" in w.path or "beta_dense" in w.path]
    assert len(cond_weights) == 10 and all(path in str(info.value) for path in cond_weights)


def test_plain_model_exports_every_weight(tmp_path):
    model = build_transformer_model(BERT, with_pool=True, with_mlm=True)
    written = read_tensors(export_checkpoint(model, tmp_path))
    assert len(written) == len(model.weights)


def _versions(seed):
    model = build_transformer_model(BERT, with_mlm=True)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.standard_normal(w.shape).astype("float32"))
    return model


def _leftovers(folder):
    return [f for f in os.listdir(folder) if f.startswith(".ckpt-tmp-") or ".tmp-" in f]


def test_tf_export_never_pairs_a_new_index_with_an_old_data(tmp_path, monkeypatch):
    old, new = _versions(1), _versions(2)
    prefix = export_checkpoint(old, tmp_path / "bert_model.ckpt", format="tf")
    real_replace = os.replace

    def killed_before_the_index(src, dst):  # the process dies after the .data moved in, before the .index
        if os.fspath(dst) == f"{prefix}.index" and ".ckpt-tmp-" in os.fspath(src):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_the_index)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(new, prefix, format="tf")
    monkeypatch.setattr(os, "replace", real_replace)
    assert not os.path.exists(f"{prefix}.index")  # no loadable mix: the old index was moved away first
    assert not _leftovers(tmp_path)
    prefix = export_checkpoint(new, prefix, format="tf")
    again = build_transformer_model(BERT, prefix, with_mlm=True)
    for a, b in zip(again.weights, new.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_tf_export_failure_keeps_the_old_pair_and_removes_the_temp_folder(tmp_path, monkeypatch):
    old = _versions(3)
    prefix = export_checkpoint(old, tmp_path / "bert_model.ckpt", format="tf")

    def disk_full(**kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(tf.raw_ops, "SaveV2", disk_full)
    with pytest.raises(OSError, match="No space"):
        export_checkpoint(_versions(4), prefix, format="tf")
    assert not _leftovers(tmp_path)
    again = build_transformer_model(BERT, prefix, with_mlm=True)
    for a, b in zip(again.weights, old.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bert_export_folder_loads_in_transformers_automodel(tmp_path):
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(**BERT))
    randomize(hf, seed=1)
    hf.save_pretrained(tmp_path / "src", safe_serialization=True)
    ours = build_transformer_model(tmp_path / "src")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"t{i}\n" for i in range(BERT["vocab_size"])))
    export_checkpoint(ours, tmp_path / "out", vocab=vocab)
    assert (tmp_path / "out" / "vocab.txt").read_text() == vocab.read_text()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "bert"
    reloaded = transformers.AutoModel.from_pretrained(tmp_path / "out").eval()
    ids = random_ids(2, 9, BERT["vocab_size"], seed=2)
    with torch.no_grad():
        got = reloaded(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(ids != 0))
        ref = hf.bert(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(ids != 0))
    assert max_diff(got.last_hidden_state, ref.last_hidden_state) <= 1e-6


def test_gpt2_export_folder_loads_in_transformers_automodel(tmp_path):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=61, n_positions=32, n_embd=32, n_layer=2,
                                                              n_head=4, n_inner=48))
    randomize(hf, seed=2)
    hf.save_pretrained(tmp_path / "src", safe_serialization=True)
    export_checkpoint(build_transformer_model(tmp_path / "src"), tmp_path / "out")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = torch.tensor(np.random.default_rng(3).integers(0, 61, size=(2, 8)), dtype=torch.long)
    with torch.no_grad():
        assert max_diff(reloaded(input_ids=ids).logits, hf(input_ids=ids).logits) <= 1e-6


@pytest.mark.parametrize("proj,tied", [("relu", True), ("gated-gelu", False)])
def test_t5_export_folder_loads_in_transformers_automodel(tmp_path, proj, tied):
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=50, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_heads=4,
                                   feed_forward_proj=proj, tie_word_embeddings=tied, decoder_start_token_id=0)
    hf = transformers.T5ForConditionalGeneration(config)
    randomize(hf, seed=4)
    if not tied:
        with torch.no_grad():  # an untied head of its own
            hf.lm_head.weight.copy_(torch.randn(hf.lm_head.weight.shape, generator=torch.Generator().manual_seed(5)))
    hf.save_pretrained(tmp_path / "src", safe_serialization=True)
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "src").eval()
    export_checkpoint(build_transformer_model(tmp_path / "src"), tmp_path / "out")
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out").eval()
    rng = np.random.default_rng(6)
    enc = torch.tensor(rng.integers(2, 50, size=(2, 7)), dtype=torch.long)
    dec = torch.tensor(rng.integers(2, 50, size=(2, 5)), dtype=torch.long)
    with torch.no_grad():
        got = reloaded(input_ids=enc, decoder_input_ids=dec).logits
        ref = hf(input_ids=enc, decoder_input_ids=dec).logits
    assert max_diff(got, ref) <= 1e-5
