"""Family detection from the files a checkpoint ships, `model=` overriding it, and the `Family` registry."""
import json
import logging

import numpy as np
import pytest
import torch
import transformers

from bert4k import build_transformer_model
from bert4k.checkpoints.writers import save_tf_checkpoint
from bert4k.models.families import FAMILIES, Family, detect_family, get_family, register_family
from tests.oracles.hf import max_diff, randomize

# Config files as the public checkpoints ship them (field names and values copied from their published configs,
# sizes shrunk).
HF_BERT = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": 99, "hidden_size": 32,
           "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37, "type_vocab_size": 2}
# hfl/chinese-roberta-wwm-ext: named RoBERTa, but a BERT (BertForMaskedLM, model_type bert, BERT tensor names).
ROBERTA_WWM = {**HF_BERT, "directionality": "bidi", "pooler_type": "first_token_transform"}
HF_ROBERTA = {"architectures": ["RobertaForMaskedLM"], "model_type": "roberta", "vocab_size": 99, "hidden_size": 32,
              "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37, "pad_token_id": 1,
              "type_vocab_size": 1, "max_position_embeddings": 40}
GOOGLE_BERT = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
               "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 37, "max_position_embeddings": 64,
               "num_attention_heads": 4, "num_hidden_layers": 2, "type_vocab_size": 2, "vocab_size": 99}
GOOGLE_ALBERT = {"attention_probs_dropout_prob": 0, "hidden_act": "gelu", "hidden_dropout_prob": 0,
                 "embedding_size": 16, "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 37,
                 "max_position_embeddings": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
                 "num_hidden_groups": 1, "net_structure_type": 0, "gap_size": 0, "num_memory_blocks": 0,
                 "inner_group_num": 1, "down_scale_factor": 1, "type_vocab_size": 2, "vocab_size": 99}
OPENAI_HPARAMS = {"n_vocab": 99, "n_ctx": 40, "n_embd": 32, "n_head": 4, "n_layer": 2}
HF_GPT2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 99, "n_positions": 40,
           "n_embd": 32, "n_layer": 2, "n_head": 4}
GPT2_ML = {"vocab_size": 99, "hidden_size": 32, "attention_probs_dropout_prob": 0.1, "hidden_dropout_prob": 0.1,
           "hidden_act": "gelu", "initializer_range": 0.014142135623731, "intermediate_size": 37,
           "max_position_embeddings": 40, "num_attention_heads": 4, "num_hidden_layers": 2}
BERT4KERAS_MT5 = {"hidden_act": ["gelu", "linear"], "hidden_size": 32, "intermediate_size": 37,
                  "num_attention_heads": 4, "attention_head_size": 8, "num_hidden_layers": 2, "vocab_size": 99,
                  "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-6,
                  "relative_attention_num_buckets": 32}
HF_T5 = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": 99, "d_model": 32,
         "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 4, "feed_forward_proj": "relu"}
HF_T5_V11 = {**HF_T5, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
HF_MT5 = {**HF_T5_V11, "architectures": ["MT5ForConditionalGeneration"], "model_type": "mt5"}


@pytest.mark.parametrize("file_name,raw,expected", [
    ("config.json", HF_BERT, "bert"),
    ("config.json", ROBERTA_WWM, "bert"),
    ("config.json", HF_ROBERTA, "roberta"),
    ("bert_config.json", GOOGLE_BERT, "bert"),
    ("albert_config.json", GOOGLE_ALBERT, "albert"),
    ("hparams.json", OPENAI_HPARAMS, "gpt2"),
    ("config.json", HF_GPT2, "gpt2"),
    ("mega.json", GPT2_ML, "gpt2_ml"),
    ("config.json", BERT4KERAS_MT5, "t5.1.1"),
    ("config.json", HF_T5, "t5"),
    ("config.json", HF_T5_V11, "t5.1.1"),
    ("config.json", HF_MT5, "mt5"),
])
def test_family_detected_from_config_file(tmp_path, file_name, raw, expected):
    folder = tmp_path / "chinese-roberta-wwm-ext"  # a misleading folder name must not matter
    folder.mkdir()
    (folder / file_name).write_text(json.dumps(raw))
    model = build_transformer_model(folder / file_name)
    assert model.family == expected
    family, reason = detect_family({**raw, "__path__": str(folder / file_name)})
    assert family.name == expected and reason


def test_family_detected_from_tensor_names(tmp_path):
    """A GPT2-ML config looks like BERT's without token types; its `newslm/` tensors settle it."""
    rng = np.random.default_rng(0)
    tensors = {"newslm/embeddings/word_embed": rng.standard_normal((99, 32)).astype("float32")}
    prefix = save_tf_checkpoint(tensors, tmp_path / "model.ckpt-100000")
    from bert4k.checkpoints.readers import tensor_names

    family, reason = detect_family({**GPT2_ML, "type_vocab_size": 2}, lambda: tensor_names(prefix))
    assert family.name == "gpt2_ml" and "newslm" in reason


@pytest.fixture(scope="module")
def hf_gpt2_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{k: v for k, v in HF_GPT2.items()
                                                                    if k not in ("architectures", "model_type")}))
    randomize(model, seed=2)
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder, safe_serialization=True)
    return model, folder


def test_gpt2_folder_builds_without_model_argument(hf_gpt2_folder):
    """Before: the default model="bert" read the GPT-2 config and said "missing required field(s)"."""
    model, folder = hf_gpt2_folder
    ours = build_transformer_model(folder / "config.json", folder, logits=True)
    assert ours.family == "gpt2"
    ids = np.random.default_rng(1).integers(0, 99, size=(2, 7)).astype("int32")
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids, dtype=torch.long)).logits.numpy()
    assert max_diff(ours.predict(ids, verbose=0), ref) <= 1e-4


def test_wrong_model_names_the_family_the_files_look_like(hf_gpt2_folder, caplog):
    _, folder = hf_gpt2_folder
    with pytest.raises(ValueError, match=r"missing required field.*look like family 'gpt2' \(config.json says "
                                         r"model_type 'gpt2'\).*model='gpt2'"):
        build_transformer_model(folder / "config.json", folder, model="bert")


def test_explicit_model_overrides_detection(tmp_path, caplog):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(GOOGLE_BERT))
    with caplog.at_level(logging.WARNING, logger="bert4k.models"):
        roberta = build_transformer_model(path, model="roberta")  # bert4keras' "roberta" = BERT-shaped: no warning
    assert roberta.family == "roberta" and not caplog.records
    with caplog.at_level(logging.WARNING, logger="bert4k.models"):
        forced = build_transformer_model(path, model="gpt2_ml")
    assert forced.family == "gpt2_ml" and forced.config.norm_position == "gpt2_ml"
    assert "look like 'bert'" in caplog.text


def test_unknown_model_type_is_refused_unless_model_is_given():
    with pytest.raises(ValueError, match=r"model_type 'xlnet' is not one bert4k knows .*pass model="):
        build_transformer_model({**HF_BERT, "model_type": "xlnet"})
    assert build_transformer_model({**HF_BERT, "model_type": "xlnet"}, model="bert").family == "bert"


def test_new_family_registers_by_keyword_and_is_detected():
    bert = get_family("bert")
    family = Family(name="toy", read_config=bert.read_config, model_class=bert.model_class, specs=bert.specs,
                    from_hf=bert.from_hf, from_tf=bert.from_tf, kind="toy",
                    detect=lambda evidence: "model_type toy" if evidence.model_type == "toy" else None)
    register_family(family)
    try:
        assert detect_family({**HF_BERT, "model_type": "toy"})[0] is family
        assert build_transformer_model({**HF_BERT, "model_type": "toy"}).family == "toy"
    finally:
        del FAMILIES["toy"]
    with pytest.raises(TypeError):
        Family("toy", bert.read_config, bert.model_class, bert.specs, bert.from_hf, bert.from_tf)  # keyword only


def test_generate_finds_the_adapter_through_the_family_record():
    from bert4k.generation import adapters
    from bert4k.generation.t5_adapter import T5Adapter

    gpt2 = build_transformer_model({k: v for k, v in HF_GPT2.items() if k != "architectures"})
    assert isinstance(adapters.adapter_for(gpt2), adapters.TransformerAdapter)
    assert isinstance(adapters.adapter_for(build_transformer_model(HF_T5)), T5Adapter)
    sentinel = adapters.DecodingAdapter()
    adapters.register_adapter("bert4k.models.transformer.Transformer", lambda model: sentinel)
    try:  # a registration for the class (or a base class) wins over the family's adapter
        assert adapters.adapter_for(build_transformer_model(HF_GPT2)) is sentinel
    finally:
        del adapters._REGISTRY["bert4k.models.transformer.Transformer"]


def test_every_family_reads_its_config_with_a_reader_from_the_one_package():
    """Config parsing lives in bert4k.models.config_readers (one module per family), reached through the records."""
    for name, family in FAMILIES.items():
        reader = family.reference("read_config")
        assert reader.__module__.startswith("bert4k.models.config_readers."), (name, reader.__module__)
