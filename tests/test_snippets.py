"""bert4keras-compatible snippets: hand-derived cases, Keras' pad_sequences as a reference for
padding, brute force for Viterbi."""

import itertools
import random

import keras
import numpy as np
import pytest

from bert4k.snippets import (
    DataGenerator,
    ViterbiDecoder,
    open,
    sequence_padding,
    text_segmentate,
    to_array,
    truncate_sequences,
)

# ---------------------------------------------------------------------------- to_array


def test_to_array():
    one = to_array([1, 2])
    assert isinstance(one, np.ndarray)
    assert one.tolist() == [1, 2]
    a, b = to_array([1], [[2, 3]])
    assert a.shape == (1,)
    assert b.shape == (1, 2)


# ---------------------------------------------------------------------------- sequence_padding


def test_sequence_padding_hand_cases():
    batch = [[1, 2, 3], [4, 5]]
    assert sequence_padding(batch).tolist() == [[1, 2, 3], [4, 5, 0]]
    assert sequence_padding(batch, mode="pre").tolist() == [[1, 2, 3], [0, 4, 5]]
    assert sequence_padding(batch, value=-1).tolist() == [[1, 2, 3], [4, 5, -1]]
    # Cutting keeps the first items in both modes (bert4keras behaviour).
    assert sequence_padding(batch, length=2).tolist() == [[1, 2], [4, 5]]
    assert sequence_padding(batch, length=2, mode="pre").tolist() == [[1, 2], [4, 5]]
    assert sequence_padding(batch, length=4, mode="pre").tolist() == [[0, 1, 2, 3], [0, 0, 4, 5]]


def test_sequence_padding_keeps_integer_dtype_with_empty_sequences():
    out = sequence_padding([[], [7, 8]])
    assert out.tolist() == [[0, 0], [7, 8]]
    assert np.issubdtype(out.dtype, np.integer)


def test_sequence_padding_multi_dim():
    # Two sequence axes: [[1, 2], [3, 4]] and [[5]] padded to 2 x 2.
    out = sequence_padding([np.array([[1, 2], [3, 4]]), np.array([[5]])], seq_dims=2)
    assert out.tolist() == [[[1, 2], [3, 4]], [[5, 0], [0, 0]]]
    out = sequence_padding([np.array([[1, 2], [3, 4]]), np.array([[5]])], length=[1, 3], seq_dims=2)
    assert out.tolist() == [[[1, 2, 0]], [[5, 0, 0]]]
    # One sequence axis, a trailing feature axis of size 2 left alone.
    out = sequence_padding([np.ones((3, 2)), np.ones((1, 2))])
    assert out.shape == (2, 3, 2)
    assert out[1].tolist() == [[1, 1], [0, 0], [0, 0]]


def test_sequence_padding_matches_keras_pad_sequences():
    rng = random.Random(0)
    batch = [[rng.randint(1, 99) for _ in range(rng.randint(0, 12))] for _ in range(50)]
    for mode in ("post", "pre"):
        for length in (None, 5):
            expected = keras.utils.pad_sequences(
                batch, maxlen=length, padding=mode, truncating="post", value=-3, dtype="int64"
            )
            np.testing.assert_array_equal(sequence_padding(batch, length, -3, mode=mode), expected)


def test_sequence_padding_errors():
    with pytest.raises(ValueError, match="mode"):
        sequence_padding([[1]], mode="middle")
    with pytest.raises(ValueError, match="at least one"):
        sequence_padding([])
    with pytest.raises(ValueError, match="seq_dims"):
        sequence_padding([[1, 2]], seq_dims=2)


# ---------------------------------------------------------------------------- truncate_sequences


def test_truncate_sequences_pops_from_the_longest_in_place():
    a, b = [1, 2, 3, 4], [5, 6, 7]
    # total 7 > 5: a (4) is longest -> [1, 2, 3]; total 6: tie 3/3, the first wins -> [1, 2].
    result = truncate_sequences(5, -1, a, b)
    assert a == [1, 2]
    assert b == [5, 6, 7]
    assert result == [[1, 2], [5, 6, 7]]
    # Index 0 drops from the front; per-sequence indices; None is skipped.
    a, b = [1, 2, 3, 4], [5, 6]
    assert truncate_sequences(4, [0, -1], a, None, b) == [[3, 4], [5, 6]]
    assert truncate_sequences(10, -1, [1], [2]) == [[1], [2]]
    with pytest.raises(ValueError, match="indices"):
        truncate_sequences(1, [0], [1], [2])
    with pytest.raises(ValueError, match="maxlen"):
        truncate_sequences(-1, 0, [1])


# ---------------------------------------------------------------------------- text_segmentate


def test_text_segmentate_hand_cases():
    # 7 + 7 + 5 characters with maxlen 8: no two sentences fit together.
    text = "今天天气很好。我们去公园吧。然后回家。"
    assert text_segmentate(text, 8, "。") == ["今天天气很好。", "我们去公园吧。", "然后回家。"]
    # "天晴。" + "风大。" = 6 <= 6 are merged, "雨停了。" no longer fits.
    assert text_segmentate("天晴。风大。雨停了。", 6, "。") == ["天晴。风大。", "雨停了。"]
    # ... but with maxlen 5 the merged "天晴。风大。" (6) would be too long.
    assert text_segmentate("天晴。风大。", 5, "。") == ["天晴。", "风大。"]
    # A sentence still too long is cut at the next separator; strips removes ending marks.
    assert text_segmentate("春眠不觉晓，处处闻啼鸟。夜来风雨声。", 6, "。，", "。，") == [
        "春眠不觉晓", "处处闻啼鸟", "夜来风雨声",
    ]
    # Short text is returned whole (stripped); without separators long text stays whole.
    assert text_segmentate("  短句。 ", 10, "。") == ["短句。"]
    assert text_segmentate("一二三四五", 2, "。") == ["一二三四五"]
    assert text_segmentate("", 5) == []


# ---------------------------------------------------------------------------- open


def test_open_reads_lines_and_indexes_them(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("第一行\nsecond\n第三行\n", encoding="utf-8")
    with open(path) as f:
        assert list(f) == ["第一行\n", "second\n", "第三行\n"]
    with open(path, encoding="utf-8") as f:
        assert f.read() == "第一行\nsecond\n第三行\n"

    f = open(path, indexable=True)
    assert len(f) == 3
    assert f[2] == "第三行\n"
    assert f[0] == "第一行\n"
    assert f[-2] == "second\n"
    f.close()

    cache = tmp_path / "offsets.json"
    with open(path, indexable=str(cache)) as f:
        assert f[1] == "second\n"
    assert cache.exists()
    with open(path, indexable=str(cache)) as f:  # offsets read back from the cache
        assert f[2] == "第三行\n"

    with open(path) as f, pytest.raises(TypeError, match="indexable"):
        f[0]


def test_open_write_and_errors(tmp_path):
    path = tmp_path / "out.txt"
    with open(path, "w") as f:
        f.write("中文\n")
    assert path.read_bytes() == "中文\n".encode()
    path.write_bytes(b"ok\xffok\n")
    with open(path, errors="ignore") as f:
        assert f.read() == "okok\n"
    with open(path) as f, pytest.raises(UnicodeDecodeError):
        f.read()
    with open(path, "rb") as f:
        assert f.read() == b"ok\xffok\n"


# ---------------------------------------------------------------------------- DataGenerator


class Batches(DataGenerator):
    """Yields lists of items, as a bert4keras user's generator does."""

    def __iter__(self, random=False):
        batch = []
        for is_end, item in self.sample(random):
            batch.append(item)
            if len(batch) == self.batch_size or is_end:
                yield batch, [len(batch)]
                batch = []


def test_data_generator_batches_in_order():
    gen = Batches(list(range(10)), batch_size=4)
    assert len(gen) == 3
    assert [b for b, _ in gen.__iter__()] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    flags = [is_end for is_end, _ in gen.sample()]
    assert flags == [False] * 9 + [True]
    assert list(Batches([], 4).sample()) == []


def test_data_generator_shuffles_sized_and_unsized_data():
    np.random.seed(0)
    sized = [item for _, item in Batches(list(range(100)), 8).sample(random=True)]
    assert sorted(sized) == list(range(100))
    assert sized != list(range(100))

    unsized = Batches((i for i in range(100)), batch_size=2, buffer_size=10)
    with pytest.raises(TypeError, match="no length"):
        len(unsized)
    items = [item for _, item in unsized.sample(random=True)]
    assert sorted(items) == list(range(100))
    assert items[:50] != list(range(50))
    # A buffer of 10 can only delay an item, never move it more than 10 places forward.
    assert all(position >= item - 10 for position, item in enumerate(items))


def _numpy(batch):
    return [part.numpy().tolist() for part in batch] if isinstance(batch, tuple) else batch.numpy().tolist()


def test_data_generator_forfit_and_fortest_repeat():
    gen = Batches([1, 2, 3], batch_size=2)
    batches = [_numpy(b) for b in itertools.islice(iter(gen.forfit(random=False)), 5)]
    assert [b for b, _ in batches] == [[1, 2], [3], [1, 2], [3], [1, 2]]
    assert [_numpy(b) for b in itertools.islice(iter(gen.fortest()), 3)] == [[1, 2], [3], [1, 2]]
    with pytest.raises(ValueError, match="yielded nothing"):
        Batches([], 2).forfit()
    with pytest.raises(NotImplementedError):
        next(iter(DataGenerator([1])))


class Examples(DataGenerator):
    """Yields single examples for to_dataset: [token ids, segment ids], [label]."""

    def __iter__(self, random=False):
        for _, n in self.sample(random):
            yield [list(range(1, n + 1)), [0] * n], [n]


def test_to_dataset_pads_and_names():
    gen = Examples([3, 1, 2], batch_size=3)
    types, shapes = (("int32", "int32"), ("int32",)), (([None], [None]), ([],))
    (tokens, segments), (labels,) = next(iter(gen.to_dataset(types, shapes, padded_batch=True)))
    assert sorted(labels.numpy().tolist()) == [1, 2, 3]
    for row, n in zip(tokens.numpy().tolist(), labels.numpy().tolist()):
        assert row == list(range(1, n + 1)) + [0] * (3 - n)
    assert segments.shape == (3, 3)

    # bert4keras style: a tuple of name tuples turns each part into a dict.
    names = (("Input-Token", "Input-Segment"), ("label",))
    inputs, labels = next(iter(gen.to_dataset(types, shapes, names=names, padded_batch=True)))
    assert set(inputs) == {"Input-Token", "Input-Segment"}
    assert inputs["Input-Token"].shape == (3, 3)
    assert labels.shape == (3,)  # a one-name level is the value itself (Keras 3 refuses one-entry dicts)

    # Without padded_batch the shapes are exact, so examples must already agree.
    fixed = Examples([2, 2], batch_size=2).to_dataset(types, (([2], [2]), ([],)))
    (tokens, _), _ = next(iter(fixed))
    assert tokens.numpy().tolist() == [[1, 2], [1, 2]]


def test_to_dataset_with_named_inputs_and_output_trains_a_keras_3_model():
    """bert4keras' multi-GPU example: `names=[('Input-Token', 'Input-Segment'), ('Probas',)]` with a single-output
    model named 'Probas'; the dataset's loss is numpy's cross-entropy of the model's predictions."""
    import keras

    token, segment = keras.Input((None,), name="Input-Token"), keras.Input((None,), name="Input-Segment")
    pooled = keras.layers.Concatenate()([keras.ops.mean(token, 1, keepdims=True),
                                         keras.ops.mean(segment, 1, keepdims=True)])
    model = keras.Model([token, segment], keras.layers.Dense(4, activation="softmax", name="Probas")(pooled))
    model.compile(loss="sparse_categorical_crossentropy")
    gen = Examples([3, 1, 2], batch_size=3)
    dataset = gen.to_dataset(types=[("float32", "float32"), ("float32",)], shapes=[([None], [None]), ([],)],
                             names=[("Input-Token", "Input-Segment"), ("Probas",)], padded_batch=True)
    inputs, labels = next(iter(dataset))
    probas = model.predict([inputs["Input-Token"].numpy(), inputs["Input-Segment"].numpy()], verbose=0)
    expected = -np.mean(np.log(probas[np.arange(3), labels.numpy().astype(int)]))
    assert abs(model.evaluate(dataset.take(1), verbose=0) - expected) < 1e-5
    model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0)


# ---------------------------------------------------------------------------- ViterbiDecoder


def test_viterbi_matches_brute_force():
    rng = np.random.default_rng(0)
    for starts, ends in [(None, None), ([0, 1], [2])]:
        for _ in range(20):
            trans, nodes = rng.normal(size=(3, 3)), rng.normal(size=(5, 3))
            best, best_path = -np.inf, None
            for path in itertools.product(range(3), repeat=5):
                if (starts and path[0] not in starts) or (ends and path[-1] not in ends):
                    continue
                score = nodes[np.arange(5), path].sum() + sum(
                    trans[i, j] for i, j in itertools.pairwise(path)
                )
                if score > best:
                    best, best_path = score, list(path)
            original = nodes.copy()
            assert ViterbiDecoder(trans, starts, ends).decode(nodes).tolist() == best_path
            np.testing.assert_array_equal(nodes, original)  # input not modified
