"""ALBERT (shared and unshared) built by bert4k equals Hugging Face's `AlbertForMaskedLM` on the same weights, read
from safetensors, .bin, and a Google TF checkpoint written under the original names."""
import keras
import numpy as np
import pytest
import torch
import transformers

from bert4k import build_transformer_model
from bert4k.checkpoints import read_tensors
from bert4k.checkpoints.writers import save_tf_checkpoint
from bert4k.config import load_config
from bert4k.models.checkpoint_io import export_checkpoint
from tests.oracles.hf import max_diff, random_ids, randomize, save_both

TOL = 1e-4
LAYERS = 3
HF_CONFIG = dict(vocab_size=90, embedding_size=12, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=40, type_vocab_size=2, hidden_act="gelu_new",
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0)
# albert_config.json as google-research/albert writes it: "gelu" there is the tanh approximation (= HF gelu_new).
GOOGLE_CONFIG = {**{k: v for k, v in HF_CONFIG.items() if k != "classifier_dropout_prob"}, "hidden_act": "gelu",
                 "num_hidden_groups": 1, "inner_group_num": 1, "initializer_range": 0.02}

L0 = "albert.encoder.albert_layer_groups.0.albert_layers.0."
G0 = "bert/encoder/transformer/group_0/inner_group_0/"
# HF name → (Google TF name, transpose), from google-research/albert modeling.py / run_pretraining.py scopes.
GOOGLE_NAMES = {
    "albert.embeddings.word_embeddings.weight": ("bert/embeddings/word_embeddings", False),
    "albert.embeddings.position_embeddings.weight": ("bert/embeddings/position_embeddings", False),
    "albert.embeddings.token_type_embeddings.weight": ("bert/embeddings/token_type_embeddings", False),
    "albert.embeddings.LayerNorm.weight": ("bert/embeddings/LayerNorm/gamma", False),
    "albert.embeddings.LayerNorm.bias": ("bert/embeddings/LayerNorm/beta", False),
    "albert.encoder.embedding_hidden_mapping_in.weight": ("bert/encoder/embedding_hidden_mapping_in/kernel", True),
    "albert.encoder.embedding_hidden_mapping_in.bias": ("bert/encoder/embedding_hidden_mapping_in/bias", False),
    L0 + "attention.query.weight": (G0 + "attention_1/self/query/kernel", True),
    L0 + "attention.query.bias": (G0 + "attention_1/self/query/bias", False),
    L0 + "attention.key.weight": (G0 + "attention_1/self/key/kernel", True),
    L0 + "attention.key.bias": (G0 + "attention_1/self/key/bias", False),
    L0 + "attention.value.weight": (G0 + "attention_1/self/value/kernel", True),
    L0 + "attention.value.bias": (G0 + "attention_1/self/value/bias", False),
    L0 + "attention.dense.weight": (G0 + "attention_1/output/dense/kernel", True),
    L0 + "attention.dense.bias": (G0 + "attention_1/output/dense/bias", False),
    L0 + "attention.LayerNorm.weight": (G0 + "LayerNorm/gamma", False),
    L0 + "attention.LayerNorm.bias": (G0 + "LayerNorm/beta", False),
    L0 + "ffn.weight": (G0 + "ffn_1/intermediate/dense/kernel", True),
    L0 + "ffn.bias": (G0 + "ffn_1/intermediate/dense/bias", False),
    L0 + "ffn_output.weight": (G0 + "ffn_1/intermediate/output/dense/kernel", True),
    L0 + "ffn_output.bias": (G0 + "ffn_1/intermediate/output/dense/bias", False),
    L0 + "full_layer_layer_norm.weight": (G0 + "LayerNorm_1/gamma", False),
    L0 + "full_layer_layer_norm.bias": (G0 + "LayerNorm_1/beta", False),
    "predictions.dense.weight": ("cls/predictions/transform/dense/kernel", True),
    "predictions.dense.bias": ("cls/predictions/transform/dense/bias", False),
    "predictions.LayerNorm.weight": ("cls/predictions/transform/LayerNorm/gamma", False),
    "predictions.LayerNorm.bias": ("cls/predictions/transform/LayerNorm/beta", False),
    "predictions.bias": ("cls/predictions/output_bias", False),
}
TIED = ("predictions.decoder.weight", "predictions.decoder.bias")


@pytest.fixture(scope="module")
def hf_albert(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.AlbertForMaskedLM(transformers.AlbertConfig(**HF_CONFIG))
    randomize(model, seed=3)  # LayerNorm / full_layer_layer_norm weights end in "LayerNorm.weight" / "layer_norm.weight"
    folder = tmp_path_factory.mktemp("albert")
    st_dir, bin_dir = save_both(model, str(folder))
    state = model.state_dict()
    assert set(state) == set(GOOGLE_NAMES) | set(TIED)
    google = {GOOGLE_NAMES[k][0]: np.ascontiguousarray(v.numpy().T if GOOGLE_NAMES[k][1] else v.numpy())
              for k, v in state.items() if k in GOOGLE_NAMES}
    prefix = save_tf_checkpoint(google, folder / "google" / "albert_model.ckpt")
    return model, {"safetensors": (f"{st_dir}/config.json", st_dir), "bin": (f"{bin_dir}/config.json", bin_dir),
                   "google": (GOOGLE_CONFIG, prefix)}


def batch(seed=0):
    ids = random_ids(3, 12, HF_CONFIG["vocab_size"], seed=seed)
    segments = np.zeros_like(ids)
    segments[:, 5:] = 1
    segments[ids == 0] = 0
    return ids, segments


def hf_outputs(model, ids, segments):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), token_type_ids=torch.tensor(segments, dtype=torch.long),
                    attention_mask=torch.tensor(ids != 0, dtype=torch.long), output_hidden_states=True)
    return out.hidden_states[-1].numpy(), out.logits.numpy()


def run(model, ids, segments):
    return keras.ops.convert_to_numpy(model([ids, segments], training=False))


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "google"])
@pytest.mark.parametrize("family", ["albert", "albert_unshared"])
def test_albert_matches_reference(hf_albert, family, fmt):
    reference, sources = hf_albert
    config, checkpoint = sources[fmt]
    ids, segments = batch()
    sequence_ref, logits_ref = hf_outputs(reference, ids, segments)
    encoder = build_transformer_model(config, checkpoint, model=family)
    mlm = build_transformer_model(config, checkpoint, model=family, application="mlm", logits=True)
    assert max_diff(run(encoder, ids, segments), sequence_ref) <= TOL
    assert max_diff(run(mlm, ids, segments), logits_ref) <= TOL
    assert tuple(mlm.mlm_dense.kernel.shape) == (32, 12)  # MLM transform is H → E, then tied to the E-wide table


def test_gelu_follows_each_config_format():
    hf = {**HF_CONFIG, "model_type": "albert"}
    assert load_config(GOOGLE_CONFIG, "albert").hidden_act == "gelu_tanh"  # google-research/albert gelu()
    assert load_config(hf, "albert").hidden_act == "gelu_tanh"  # HF gelu_new
    assert load_config({**hf, "hidden_act": "gelu"}, "albert").hidden_act == "gelu_erf"  # HF gelu = erf


def test_unsupported_layer_groups_are_refused():
    with pytest.raises(ValueError, match="num_hidden_groups=3 is not supported by model='albert'"):
        load_config({**GOOGLE_CONFIG, "num_hidden_groups": 3}, "albert")
    with pytest.raises(ValueError, match="num_hidden_groups=2"):
        load_config({**GOOGLE_CONFIG, "num_hidden_groups": 2}, "albert_unshared")
    with pytest.raises(ValueError, match="inner_group_num=2"):
        load_config({**GOOGLE_CONFIG, "inner_group_num": 2}, "albert")


def test_unshared_has_independent_blocks_that_fit_apart_and_export(hf_albert, tmp_path):
    _, sources = hf_albert
    config, checkpoint = sources["safetensors"]
    shared = build_transformer_model(config, checkpoint, model="albert", application="mlm", logits=True)
    unshared = build_transformer_model(config, checkpoint, model="albert_unshared", application="mlm", logits=True)
    block_size = shared.blocks[0].count_params()
    assert len({id(b) for b in shared.blocks}) == 1 and len({id(b) for b in unshared.blocks}) == LAYERS
    assert unshared.count_params() - shared.count_params() == (LAYERS - 1) * block_size
    assert len(unshared.weights) - len(shared.weights) == (LAYERS - 1) * len(shared.blocks[0].weights)

    ids, segments = batch(1)
    labels = np.where(ids > 0, (ids * 7) % HF_CONFIG["vocab_size"], 0)
    unshared.compile(optimizer=keras.optimizers.SGD(0.5),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    unshared.fit([ids, segments], labels, epochs=1, batch_size=3, verbose=0)
    kernels = [b.attention.query.kernel.numpy() for b in unshared.blocks]
    assert all(not np.allclose(kernels[i], kernels[j]) for i in range(LAYERS) for j in range(i + 1, LAYERS))

    # The fine-tuned unshared model exports one layer group per block: HF loads it with num_hidden_groups = L.
    out = tmp_path / "unshared"
    out.mkdir()
    export_checkpoint(unshared, out / "model.safetensors")
    transformers.AlbertConfig(**HF_CONFIG, num_hidden_groups=LAYERS).to_json_file(out / "config.json")
    again = transformers.AlbertForMaskedLM.from_pretrained(out).eval()
    assert max_diff(run(unshared, ids, segments), hf_outputs(again, ids, segments)[1]) <= TOL
    reloaded = build_transformer_model(str(out / "config.json"), out, model="albert_unshared", application="mlm",
                                       logits=True)
    for a, b in zip(reloaded.weights, unshared.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_shared_export_uses_google_names(hf_albert, tmp_path):
    reference, sources = hf_albert
    config, checkpoint = sources["bin"]
    model = build_transformer_model(config, checkpoint, model="albert", application="mlm", logits=True)
    prefix = export_checkpoint(model, tmp_path / "albert_model.ckpt", format="tf")
    assert set(read_tensors(prefix)) == {google for google, _ in GOOGLE_NAMES.values()}
    again = build_transformer_model(GOOGLE_CONFIG, prefix, model="albert", application="mlm", logits=True)
    ids, segments = batch(2)
    assert max_diff(run(again, ids, segments), hf_outputs(reference, ids, segments)[1]) <= TOL
