"""Loading: a folder alone loads its weights, the load report, exact ignore lists, untied LM heads."""
import logging

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from bert4k import build_transformer_model
from bert4k.checkpoints import CheckpointMismatch
from tests.oracles.hf import max_diff, random_ids, randomize

BERT = dict(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=40, type_vocab_size=2, hidden_act="gelu")
GPT2 = dict(vocab_size=61, n_positions=32, n_embd=32, n_layer=3, n_head=4)


def hf_bert(tmp_path, seed=0, **changes):
    torch.manual_seed(seed)
    model = transformers.BertForMaskedLM(transformers.BertConfig(**BERT, **changes))
    randomize(model, seed=seed)
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model


def bert_outputs(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(ids != 0),
                    output_hidden_states=True)
    return out.hidden_states[-1].numpy(), out.logits.numpy()


def test_folder_alone_loads_its_checkpoint(tmp_path):
    """Before: `build_transformer_model(folder)` returned randomly initialised weights without a word."""
    model = hf_bert(tmp_path)
    ids = random_ids(2, 9, BERT["vocab_size"], seed=1)
    ours = build_transformer_model(tmp_path, with_mlm=True, logits=True)
    assert max_diff(ours.predict([ids, np.zeros_like(ids)], verbose=0), bert_outputs(model, ids)[1]) <= 1e-4
    assert ours.load_report.loaded and not ours.load_report.unexpected


def test_unused_tensors_warn_and_are_in_the_report(tmp_path, caplog):
    hf_bert(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["bert.encoder.layer.0.attention.self.extra"] = np.ones(3, "float32")
    save_file(tensors, tmp_path / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="bert4k.checkpoints"):
        ours = build_transformer_model(tmp_path, with_pool=True)
    assert ours.load_report.unexpected == ["encoder.layer.0.attention.self.extra"]
    assert ours.load_report.optional_missing == ["pooler.dense.weight", "pooler.dense.bias"]
    assert "cls.predictions.transform.dense.weight" in ours.load_report.unused_heads  # built without the MLM head
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and "encoder.layer.0.attention.self.extra" in warning[0].getMessage()
    assert "pooler.dense.weight" in warning[0].getMessage()


def test_ignore_list_matches_whole_names(tmp_path):
    """Before: the ignore entry "attn.bias" also hid "h.2.attn.c_attn.bias" of a layer the model does not have."""
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2))
    randomize(model)
    model.save_pretrained(tmp_path, safe_serialization=True)
    ours = build_transformer_model(tmp_path, num_hidden_layers=2)
    unused = set(ours.load_report.unexpected)
    assert {"h.2.attn.c_attn.bias", "h.2.attn.c_attn.weight", "h.2.attn.c_proj.bias", "h.2.ln_1.weight"} <= unused
    assert all(name.startswith("h.2.") for name in unused)


def test_untied_gpt2_head_is_refused(tmp_path):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2, tie_word_embeddings=False))
    randomize(model, seed=3)
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert "lm_head.weight" in load_file(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointMismatch, match=r"LM head \(lm_head.weight\) differs .*untied"):
        build_transformer_model(tmp_path)


def test_untied_bert_head_is_refused_and_the_body_still_loads(tmp_path):
    model = hf_bert(tmp_path, seed=4, tie_word_embeddings=False)
    with pytest.raises(CheckpointMismatch, match=r"cls.predictions.decoder.weight\) differs .*untied"):
        build_transformer_model(tmp_path, with_mlm=True)
    encoder = build_transformer_model(tmp_path)
    ids = random_ids(2, 9, BERT["vocab_size"], seed=5)
    assert max_diff(encoder.predict([ids, np.zeros_like(ids)], verbose=0), bert_outputs(model, ids)[0]) <= 1e-4
    assert "cls.predictions.decoder.weight" in encoder.load_report.unused_heads


def test_tied_copy_in_a_bin_is_neither_refused_nor_reported(tmp_path):
    model = hf_bert(tmp_path, seed=6)
    (tmp_path / "model.safetensors").unlink()
    state = model.state_dict()
    assert torch.equal(state["cls.predictions.decoder.weight"], state["bert.embeddings.word_embeddings.weight"])
    torch.save(state, tmp_path / "pytorch_model.bin")
    ours = build_transformer_model(tmp_path, with_mlm=True, logits=True)
    assert not ours.load_report.unexpected
    ids = random_ids(1, 7, BERT["vocab_size"], seed=7)
    assert max_diff(ours.predict([ids, np.zeros_like(ids)], verbose=0), bert_outputs(model, ids)[1]) <= 1e-4
