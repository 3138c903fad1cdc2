"""`hierarchical_position=True`: positions past the table by bert4keras' decomposition, checked against numpy;
positions inside the table unchanged; the clear error kept when the option is off."""
import keras
import numpy as np
import pytest

from bert4k import build_transformer_model
from bert4k.layers.embeddings import HierarchicalPositionEmbedding

CONFIG = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
              max_position_embeddings=8, type_vocab_size=2, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)


def numpy_hierarchical(table: np.ndarray, positions: np.ndarray, alpha: float) -> np.ndarray:
    n = table.shape[0]
    u = (table - alpha * table[0]) / (1 - alpha)
    return np.stack([table[p] if p < n else alpha * u[p // n] + (1 - alpha) * u[p % n] for p in positions])


@pytest.mark.parametrize("alpha", [0.4, 0.25])
def test_layer_matches_numpy_and_keeps_table_rows(alpha):
    layer = HierarchicalPositionEmbedding(8, 16, alpha=alpha)
    positions = np.arange(64)
    out = keras.ops.convert_to_numpy(layer(positions[None]))[0]
    table = keras.ops.convert_to_numpy(layer.embeddings)
    np.testing.assert_array_equal(out[:8], table)  # inside the table: its rows, bit for bit
    np.testing.assert_allclose(out, numpy_hierarchical(table, positions, alpha), rtol=0, atol=1e-6)
    assert not np.allclose(out[8:16], out[:8])  # past the table: new embeddings, not a wrap-around


def test_model_accepts_long_inputs_and_is_unchanged_on_short_ones():
    ids = np.random.default_rng(0).integers(1, 50, (2, 20)).astype("int32")
    keras.utils.set_random_seed(0)
    plain = build_transformer_model(CONFIG)
    keras.utils.set_random_seed(0)
    model = build_transformer_model(CONFIG, hierarchical_position=True)
    short = [ids[:, :8], np.zeros_like(ids[:, :8])]
    np.testing.assert_array_equal(model.predict(short, verbose=0), plain.predict(short, verbose=0))
    with pytest.raises(ValueError, match="20 positions, more than max_position_embeddings = 8"):
        plain.predict([ids, np.zeros_like(ids)], verbose=0)
    out = model.predict([ids, np.zeros_like(ids)], verbose=0)
    assert out.shape == (2, 20, 16) and np.isfinite(out).all()
    # the embedding of the long input is the numpy decomposition of the table (the rest of the model is unchanged)
    table = model.position_embedding.embeddings.numpy()
    positions = keras.ops.convert_to_numpy(model.position_embedding(np.arange(20)[None]))[0]
    np.testing.assert_allclose(positions, numpy_hierarchical(table, np.arange(20), 0.4), atol=1e-6)
    with pytest.raises(ValueError, match=r"max_position_embeddings² \(hierarchical_position\) = 64"):
        model.predict(np.ones((1, 65), "int32"), verbose=0)


def test_option_in_config_and_keras_file(tmp_path):
    model = build_transformer_model(CONFIG, hierarchical_position=0.3)
    assert model.get_config()["hierarchical_position"] == 0.3
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert restored.position_embedding.alpha == 0.3
    x = [np.ones((1, 30), "int32"), np.zeros((1, 30), "int32")]
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
