"""ELECTRA built by bert4k (`model="electra"`) equals Hugging Face's ElectraModel / ElectraForPreTraining /
ElectraForMaskedLM on the same weights (embedding size ≠ hidden size, as in the HFL Chinese ELECTRA checkpoints),
read from safetensors and from a Google ELECTRA TF checkpoint; exports load back into transformers."""
import keras
import numpy as np
import pytest
import torch
import transformers

from bert4k import build_transformer_model
from bert4k.checkpoints.writers import save_tf_checkpoint
from bert4k.models.checkpoint_io import export_checkpoint
from bert4k.models.electra import build_electra_discriminator, export_electra_discriminator
from tests.oracles.hf import max_diff, random_ids, randomize

TOL = 1e-4
CONFIG = dict(vocab_size=80, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=37, max_position_embeddings=40, type_vocab_size=2, hidden_act="gelu",
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def google_name(hf: str) -> tuple[str, bool]:
    """HF ElectraForPreTraining name → (google-research/electra TF name, transpose), written from that code's
    scopes (`electra/embeddings`, `electra/embeddings_project`, `electra/encoder/layer_i`,
    `discriminator_predictions/dense`, `.../dense_1`)."""
    name = hf.removeprefix("electra.")
    if name.startswith("discriminator_predictions."):
        scope = "discriminator_predictions/" + ("dense_1" if ".dense_prediction." in name else "dense")
    else:
        scope = "electra/" + name.rsplit(".", 1)[0].replace("encoder.layer.", "encoder/layer_").replace(".", "/")
    leaf = name.rsplit(".", 1)[1]
    if "embeddings/" in scope and not scope.endswith("LayerNorm"):
        return scope, False
    if scope.endswith("LayerNorm"):
        return scope + ("/gamma" if leaf == "weight" else "/beta"), False
    return scope + ("/kernel" if leaf == "weight" else "/bias"), leaf == "weight"


@pytest.fixture(scope="module")
def hf_electra(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.ElectraConfig(**CONFIG)
    discriminator = transformers.ElectraForPreTraining(config)
    randomize(discriminator, seed=5)
    generator = transformers.ElectraForMaskedLM(config)
    randomize(generator, seed=6)
    folder = tmp_path_factory.mktemp("electra")
    discriminator.save_pretrained(folder / "disc", safe_serialization=True)
    generator.save_pretrained(folder / "gen", safe_serialization=True)
    google = {}
    for name, value in discriminator.state_dict().items():
        if name.endswith("position_ids"):
            continue
        tf_name, flip = google_name(name)
        google[tf_name] = np.ascontiguousarray(value.numpy().T if flip else value.numpy())
    prefix = save_tf_checkpoint(google, folder / "google" / "electra_model.ckpt")
    return discriminator, generator, folder, prefix


def batch(seed=0):
    ids = random_ids(3, 12, CONFIG["vocab_size"], seed=seed)
    segments = np.zeros_like(ids)
    segments[:, 6:] = 1
    segments[ids == 0] = 0
    return ids, segments


def torch_run(model, ids, segments):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long), token_type_ids=torch.tensor(segments, dtype=torch.long),
                     attention_mask=torch.tensor(ids != 0, dtype=torch.long), output_hidden_states=True)


def run(model, ids, segments):
    return keras.ops.convert_to_numpy(model([ids, segments], training=False))


@pytest.mark.parametrize("fmt", ["safetensors", "google"])
def test_discriminator_matches_reference(hf_electra, fmt):
    reference, _, folder, prefix = hf_electra
    checkpoint = folder / "disc" if fmt == "safetensors" else prefix
    ids, segments = batch()
    out = torch_run(reference, ids, segments)
    real = ids != 0
    encoder = build_transformer_model(folder / "disc" / "config.json", checkpoint, model="electra")
    assert encoder.embedding_mapping is not None  # E=16 → H=32
    assert max_diff(run(encoder, ids, segments)[real], out.hidden_states[-1].numpy()[real]) <= TOL
    discriminator = build_electra_discriminator(folder / "disc" / "config.json", checkpoint)
    assert max_diff(run(discriminator, ids, segments)[real], out.logits.numpy()[real]) <= TOL


def test_generator_matches_reference(hf_electra):
    _, reference, folder, _ = hf_electra
    ids, segments = batch(1)
    out = torch_run(reference, ids, segments)
    generator = build_transformer_model(folder / "gen", folder / "gen", model="electra", application="mlm",
                                        logits=True)
    real = ids != 0
    assert max_diff(run(generator, ids, segments)[real], out.logits.numpy()[real]) <= TOL


def test_export_loads_in_transformers(hf_electra, tmp_path):
    reference, generator_ref, folder, _ = hf_electra
    discriminator = build_electra_discriminator(folder / "disc" / "config.json", folder / "disc")
    (tmp_path / "disc").mkdir()
    export_electra_discriminator(discriminator, tmp_path / "disc" / "model.safetensors")
    reference.config.to_json_file(tmp_path / "disc" / "config.json")
    reloaded = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "disc")
    ids, segments = batch(2)
    real = ids != 0
    assert max_diff(torch_run(reloaded, ids, segments).logits.numpy()[real],
                    torch_run(reference, ids, segments).logits.numpy()[real]) <= TOL

    generator = build_transformer_model(folder / "gen", folder / "gen", model="electra", application="mlm")
    (tmp_path / "gen").mkdir()
    export_checkpoint(generator, tmp_path / "gen" / "model.safetensors")
    generator_ref.config.to_json_file(tmp_path / "gen" / "config.json")
    reloaded = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "gen")
    assert max_diff(torch_run(reloaded, ids, segments).logits.numpy()[real],
                    torch_run(generator_ref, ids, segments).logits.numpy()[real]) <= TOL


def test_google_export_round_trip(hf_electra, tmp_path):
    _, _, folder, _ = hf_electra
    discriminator = build_electra_discriminator(folder / "disc" / "config.json", folder / "disc")
    prefix = export_electra_discriminator(discriminator, tmp_path / "electra.ckpt", format="tf")
    again = build_electra_discriminator(folder / "disc" / "config.json", prefix)
    ids, segments = batch(3)
    assert max_diff(run(again, ids, segments), run(discriminator, ids, segments)) == 0.0
