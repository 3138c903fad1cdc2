"""BERT / RoBERTa built by bert4k equal Hugging Face's on the same weights (safetensors, .bin, Google TF ckpt)."""
import numpy as np
import pytest
import torch
import transformers

from bert4k import build_transformer_model
from bert4k.checkpoints.writers import save_tf_checkpoint
from tests.oracles.hf import max_diff, random_ids, randomize, save_both

TOL = 1e-4
BERT_CONFIG = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                   max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu")


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(**BERT_CONFIG))
    randomize(model)
    folder = tmp_path_factory.mktemp("bert")
    st_dir, bin_dir = save_both(model, str(folder))
    return model, st_dir, bin_dir


def hf_outputs(model, ids, segments):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), token_type_ids=torch.tensor(segments, dtype=torch.long),
                    attention_mask=torch.tensor(ids != 0, dtype=torch.long), output_hidden_states=True)
        pooled = model.bert.pooler(out.hidden_states[-1])
    return out.hidden_states[-1].numpy(), pooled.numpy(), out.prediction_logits.numpy()


def google_names(state: dict) -> dict:
    """HF BertForPreTraining tensors under Google's TF names (written out by hand from the public layout)."""
    out = {}
    for key, value in state.items():
        value = value.numpy()
        if key.endswith(("position_ids", "decoder.bias")) or key == "cls.predictions.decoder.weight":
            continue
        name = key.replace("bert.", "bert/", 1).replace("encoder.layer.", "encoder/layer_")
        name = name.replace(".", "/")
        if name.endswith("LayerNorm/weight"):
            name = name[: -len("weight")] + "gamma"
        elif name.endswith("LayerNorm/bias"):
            name = name[: -len("bias")] + "beta"
        elif "embeddings/" in name and name.endswith("/weight"):
            name = name[: -len("/weight")]
        elif name == "cls/predictions/bias":
            name = "cls/predictions/output_bias"
        elif name == "cls/seq_relationship/weight":
            name = "cls/seq_relationship/output_weights"
        elif name == "cls/seq_relationship/bias":
            name = "cls/seq_relationship/output_bias"
        elif name.endswith("/weight"):
            name, value = name[: -len("weight")] + "kernel", value.T
        out[name] = np.ascontiguousarray(value)
    return out


def build_and_compare(config, checkpoint, ids, segments, expected):
    seq_ref, pooled_ref, mlm_ref = expected
    encoder = build_transformer_model(config, checkpoint)
    heads = build_transformer_model(config, checkpoint, with_pool=True, with_mlm=True, logits=True)
    seq = encoder.predict([ids, segments], verbose=0)
    pooled, mlm = heads.predict([ids, segments], verbose=0)
    assert max_diff(seq, seq_ref) <= TOL
    assert max_diff(pooled, pooled_ref) <= TOL
    assert max_diff(mlm, mlm_ref) <= TOL


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_bert_hf_checkpoints_match_reference(hf_bert, fmt):
    model, st_dir, bin_dir = hf_bert
    folder = st_dir if fmt == "safetensors" else bin_dir
    ids = random_ids(3, 12, BERT_CONFIG["vocab_size"])
    segments = np.zeros_like(ids)
    segments[:, 6:] = 1
    build_and_compare(f"{folder}/config.json", folder, ids, segments, hf_outputs(model, ids, segments))


def test_bert_google_tf_checkpoint_matches_reference(hf_bert, tmp_path):
    model, _, _ = hf_bert
    prefix = save_tf_checkpoint(google_names(model.state_dict()), tmp_path / "bert_model.ckpt")
    google_config = {k: v for k, v in BERT_CONFIG.items()}
    ids = random_ids(2, 10, BERT_CONFIG["vocab_size"], seed=3)
    segments = np.zeros_like(ids)
    build_and_compare(google_config, prefix, ids, segments, hf_outputs(model, ids, segments))


def test_roberta_masked_lm_matches_reference(tmp_path):
    torch.manual_seed(1)
    config = transformers.RobertaConfig(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=40, max_position_embeddings=40, type_vocab_size=1,
                                        pad_token_id=1, hidden_act="gelu")
    model = transformers.RobertaForMaskedLM(config)
    randomize(model, seed=1)
    st_dir, bin_dir = save_both(model, str(tmp_path))
    ids = random_ids(3, 11, 90, seed=2, pad_id=1, low=3)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(ids != 1, dtype=torch.long),
                    output_hidden_states=True)
    for folder in (st_dir, bin_dir):
        encoder = build_transformer_model(f"{folder}/config.json", folder, model="roberta")
        mlm = build_transformer_model(f"{folder}/config.json", folder, model="roberta", application="mlm", logits=True)
        segments = np.zeros_like(ids)
        assert max_diff(encoder.predict([ids, segments], verbose=0), out.hidden_states[-1].numpy()) <= TOL
        assert max_diff(mlm.predict([ids, segments], verbose=0), out.logits.numpy()) <= TOL


def test_mlm_probabilities_by_default(hf_bert):
    model, st_dir, _ = hf_bert
    ids = random_ids(1, 8, BERT_CONFIG["vocab_size"])
    segments = np.zeros_like(ids)
    probs = build_transformer_model(f"{st_dir}/config.json", st_dir, with_mlm=True).predict([ids, segments], verbose=0)
    _, _, logits = hf_outputs(model, ids, segments)
    expected = torch.softmax(torch.tensor(logits), -1).numpy()
    assert max_diff(probs, expected) <= 1e-5
