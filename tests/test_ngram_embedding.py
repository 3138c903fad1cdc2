"""bert4k.layers.NgramEmbedding against a numpy lookup (shifts, padding, lr multiplier, save/load), and
bert4k.tagging.BigramVocab (bigram ids aligned with a window's tokens, [UNK] for unseen bigrams)."""
import keras
import numpy as np
import pytest

from bert4k import tagging
from bert4k.layers import NgramEmbedding


def numpy_lookup(table: np.ndarray, ids: np.ndarray, offsets) -> np.ndarray:
    """At `[b, p]`, `table[ids[b, p + k]]` for each offset `k`, concatenated; zeros for id 0 or outside."""
    batch, steps = ids.shape
    out = np.zeros((batch, steps, len(offsets) * table.shape[1]))
    for b in range(batch):
        for p in range(steps):
            for j, k in enumerate(offsets):
                if 0 <= p + k < steps and ids[b, p + k] != 0:
                    out[b, p, j * table.shape[1]:(j + 1) * table.shape[1]] = table[ids[b, p + k]]
    return out


def check_against_numpy(seed: int = 0) -> None:
    """The checks every backend must pass (run here, and in the jax / torch subprocesses of test_crf.py)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 7, size=(3, 6)).astype("int32")
    ids[1, 4:] = 0  # padding
    for offsets, multiplier in (((-1, 0), 1.0), ((-2, -1, 0, 1), 10.0), ((2,), 3.0)):
        layer = NgramEmbedding(7, 4, offsets, lr_multiplier=multiplier)
        out = keras.ops.convert_to_numpy(layer(ids))
        table = keras.ops.convert_to_numpy(layer.embeddings) * multiplier
        assert out.shape == (3, 6, 4 * len(offsets))
        np.testing.assert_allclose(out, numpy_lookup(table, ids, offsets), rtol=1e-6, atol=1e-7)


def test_lookup_matches_numpy():
    for seed in range(3):
        check_against_numpy(seed)


def test_padding_and_edges_are_zero_and_the_multiplier_keeps_the_initial_values():
    layer = NgramEmbedding(5, 3, (-1, 0), lr_multiplier=10.0, embeddings_initializer="ones")
    out = keras.ops.convert_to_numpy(layer(np.array([[2, 0, 3]], "int32")))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.embeddings), 0.1)  # stored ÷ 10
    np.testing.assert_allclose(out[0, :, :3], [[0] * 3, [1] * 3, [0] * 3])  # left: outside, id 2, id 0
    np.testing.assert_allclose(out[0, :, 3:], [[1] * 3, [0] * 3, [1] * 3])  # right: id 2, id 0, id 3


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="input_dim ≥ 2"):
        NgramEmbedding(1, 4)
    with pytest.raises(ValueError, match="distinct and non-empty"):
        NgramEmbedding(5, 4, (0, 0))


def test_saved_model_round_trip(tmp_path):
    ids = keras.Input(shape=(None,), dtype="int32")
    model = keras.Model(ids, NgramEmbedding(6, 2, (-2, 1), lr_multiplier=4.0)(ids))
    x = np.array([[1, 2, 3, 4, 5, 0]], "int32")
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), rtol=1e-6)


def test_bigram_vocab_ids_follow_the_window_tokens():
    vocab = tagging.BigramVocab.from_texts([list("北京大学"), list("北京"), list("大学")], min_count=2)
    bos, eos = vocab.BOS, vocab.EOS
    assert set(vocab.bigrams) == {"北京", "大学", bos + "北", "学" + eos}  # 京大, 京EOS, BOS大: seen once
    assert len(vocab) == len(vocab.bigrams) + 2
    text = list("去北京大学")
    # tokens [CLS] 去 北 京 大 学 [SEP]: token p holds the bigram of its character and the next one
    want = [vocab.UNK, vocab.UNK, vocab.index["北京"], vocab.UNK, vocab.index["大学"], vocab.index["学" + eos], 0]
    assert vocab.window_ids(text, 0, 5) == want
    # the window 北京 of that text: [CLS] holds 去北 (crossing the start), 京 holds 京大 (crossing the end)
    assert vocab.window_ids(text, 1, 3) == [vocab.UNK, vocab.index["北京"], vocab.UNK, 0]
    with pytest.raises(ValueError, match=r"length \(2,\)"):
        tagging.BigramVocab(["北京", "北"])


def test_an_unseen_bigram_gets_the_unk_row_and_a_character_its_left_and_right_bigram():
    vocab = tagging.BigramVocab(["北京", "京大"])
    ids = np.array([vocab.window_ids(list("北京大"), 0, 3)], "int32")  # [CLS] 北 京 大 [SEP]
    layer = NgramEmbedding(len(vocab), 2, (-1, 0))
    out = keras.ops.convert_to_numpy(layer(ids))[0]
    table = keras.ops.convert_to_numpy(layer.embeddings)
    np.testing.assert_allclose(out[2], np.concatenate([table[vocab.index["北京"]], table[vocab.index["京大"]]]))
    np.testing.assert_allclose(out[3, 2:], table[vocab.UNK])  # 大EOS was never seen
    np.testing.assert_allclose(out[4], np.concatenate([table[vocab.UNK], np.zeros(2)]))  # [SEP]: its left only


def test_a_linear_tagger_needs_bigram_ids_for_pair_evidence():
    """Tag character i by whether it equals character i + 1: no linear function of the two characters' own
    embeddings (offsets 0 and 1 of character ids) separates that, one of their bigram's embedding does. The
    crfsuite baseline's bigram features give it this; the bigram input gives it to a tagger's linear head."""
    rng = np.random.default_rng(0)
    chars = rng.integers(1, 5, size=(256, 12))  # 4 characters, ids 1..4
    labels = np.pad(chars[:, :-1] == chars[:, 1:], ((0, 0), (0, 1))).astype("int32")  # the last one: no next
    bigrams = np.pad((chars[:, :-1] - 1) * 4 + chars[:, 1:], ((0, 0), (0, 1)))  # ids 1..16, 0 after the last
    keras.utils.set_random_seed(0)

    def accuracy(ids, vocab, offsets):
        x = keras.Input(shape=(None,), dtype="int32")
        model = keras.Model(x, keras.layers.Dense(2)(NgramEmbedding(vocab, 8, offsets)(x)))
        model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(np.tile(ids, (60, 1)), np.tile(labels, (60, 1)), batch_size=256, verbose=0)  # 60 steps
        return float((np.asarray(model.predict_on_batch(ids)).argmax(-1) == labels).mean())

    assert accuracy(chars, 5, (0, 1)) < 0.9  # the two characters' vectors (0.78 here; 0.77 by always "no")
    assert accuracy(bigrams, 17, (0,)) == 1.0


def test_a_saved_bigram_vocab_loads_as_one(tmp_path):
    vocab = tagging.BigramVocab(["北京", "大学"])
    vocab.save(tmp_path / "bigrams.json")
    again = tagging.BigramVocab.load(tmp_path / "bigrams.json")
    assert isinstance(again, tagging.BigramVocab) and again.window_ids(list("北京"), 0, 2) == vocab.window_ids(
        list("北京"), 0, 2) == [1, 2, 1, 0]
    with pytest.raises(ValueError, match=r"bigrams only \(orders \(2,\)\), got orders \(1, 2\)"):
        tagging.BigramVocab(["北京"], orders=(1, 2))
