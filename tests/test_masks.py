"""Each mask function against small matrices written out by hand from the definitions in DESIGN.md §1.

Rows are queries i, columns keys j; 1 = query i may attend key j.
"""
import numpy as np
import pytest
from keras import ops

from bert4k import masks


def as_np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x)).astype(int)


def ids(*rows):
    return np.array(rows, dtype="int32")


def test_key_padding_mask():
    got = as_np(masks.key_padding_mask(ids([5, 6, 0], [7, 0, 0])))
    np.testing.assert_array_equal(got, [[[1, 1, 0]], [[1, 0, 0]]])


def test_bidirectional_mask_hides_only_padding_per_row_of_the_batch():
    got = as_np(masks.bidirectional_mask(ids([5, 6, 7, 0], [5, 6, 0, 0])))
    np.testing.assert_array_equal(got[0], [[1, 1, 1, 0]] * 4)
    np.testing.assert_array_equal(got[1], [[1, 1, 0, 0]] * 4)


def test_bidirectional_mask_custom_pad_id():
    got = as_np(masks.bidirectional_mask(ids([0, 3, 1, 1]), pad_id=1))
    np.testing.assert_array_equal(got[0], [[1, 1, 0, 0]] * 4)


def test_causal_mask():
    got = as_np(masks.causal_mask(ids([5, 6, 7, 0])))
    np.testing.assert_array_equal(got[0], [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [1, 1, 1, 0],  # padding query: sees the real tokens, never the padding key
    ])


def test_unilm_mask():
    # source = positions 0,1 (segment 0); target = 2,3,4 (segment 1); 5 is padding. c = cumsum(seg) = 0 0 1 2 3 3.
    got = as_np(masks.unilm_mask(ids([5, 6, 7, 8, 9, 0]), ids([0, 0, 1, 1, 1, 0])))
    np.testing.assert_array_equal(got[0], [
        [1, 1, 0, 0, 0, 0],  # source sees the whole source, no target
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],  # first target token: source + itself
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 0],
    ])


def test_unilm_mask_with_no_target_is_bidirectional():
    got = as_np(masks.unilm_mask(ids([5, 6, 7]), ids([0, 0, 0])))
    np.testing.assert_array_equal(got[0], np.ones((3, 3)))


# Factorisation order: position 1, then 3, then 0, then 2  →  ranks r = [2, 0, 3, 1].
RANKS = ids([2, 0, 3, 1])
CONTENT = [  # r[j] <= r[i]
    [1, 1, 0, 1],
    [0, 1, 0, 0],
    [1, 1, 1, 1],
    [0, 1, 0, 1],
]
QUERY = [  # r[j] < r[i]
    [0, 1, 0, 1],
    [0, 0, 0, 0],
    [1, 1, 0, 1],
    [0, 1, 0, 0],
]


def test_permutation_content_mask():
    got = as_np(masks.permutation_content_mask(ids([5, 6, 7, 8]), RANKS))
    np.testing.assert_array_equal(got[0], CONTENT)


def test_permutation_query_mask():
    got = as_np(masks.permutation_query_mask(ids([5, 6, 7, 8]), RANKS))
    np.testing.assert_array_equal(got[0], QUERY)


def test_permutation_masks_hide_padding():
    # position 3 is padding; its rank is last. content: r[j] <= r[i], query: r[j] < r[i], column 3 removed.
    tokens, ranks = ids([5, 6, 7, 0]), ids([1, 2, 0, 3])
    content = as_np(masks.permutation_content_mask(tokens, ranks))[0]
    query = as_np(masks.permutation_query_mask(tokens, ranks))[0]
    np.testing.assert_array_equal(content, [[1, 0, 1, 0], [1, 1, 1, 0], [0, 0, 1, 0], [1, 1, 1, 0]])
    np.testing.assert_array_equal(query, [[0, 0, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0]])


def test_two_stream_mask_layout():
    got = as_np(masks.two_stream_mask(ids([5, 6, 7, 8]), RANKS))[0]
    zeros, eye = np.zeros((4, 4), int), np.eye(4, dtype=int)
    expected = np.block([[np.array(CONTENT), zeros], [np.array(QUERY), eye]])
    np.testing.assert_array_equal(got, expected)


def test_identity_order_gives_causal_content_and_strictly_causal_query():
    tokens, ranks = ids([5, 6, 7]), ids([0, 1, 2])
    np.testing.assert_array_equal(as_np(masks.permutation_content_mask(tokens, ranks))[0],
                                  [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(as_np(masks.permutation_query_mask(tokens, ranks))[0],
                                  [[0, 0, 0], [1, 0, 0], [1, 1, 0]])


def test_sliding_window_mask():
    got = as_np(masks.sliding_window_mask(ids([5, 6, 7, 8, 9]), window=1))[0]
    np.testing.assert_array_equal(got, [
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 1, 1],
        [0, 0, 0, 1, 1],
    ])


def test_sliding_window_with_global_token_and_padding():
    # window 1; position 0 is global (sees all, seen by all); position 5 is padding.
    tokens = ids([5, 6, 7, 8, 9, 0])
    glob = np.array([[True, False, False, False, False, False]])
    got = as_np(masks.sliding_window_mask(tokens, window=1, global_mask=glob))[0]
    np.testing.assert_array_equal(got, [
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 0, 1, 1, 1, 0],
        [1, 0, 0, 1, 1, 0],
        [1, 0, 0, 0, 1, 0],
    ])


def test_composition_with_and_and_or():
    tokens = ids([5, 6, 7, 8, 9])
    causal = masks.causal_mask(tokens)
    window = masks.sliding_window_mask(tokens, window=1)
    local_causal = [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 1, 1],
    ]
    np.testing.assert_array_equal(as_np(causal & window)[0], local_causal)
    np.testing.assert_array_equal(as_np(ops.logical_and(causal, window))[0], local_causal)
    both_ways = as_np(ops.logical_or(causal, window))[0]
    np.testing.assert_array_equal(both_ways, [
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
    ])
    # a key-padding mask broadcasts over queries when combined
    padded = ids([5, 6, 0, 0, 0])
    np.testing.assert_array_equal(as_np(masks.sliding_window_mask(tokens, 1) & masks.key_padding_mask(padded))[0, 1],
                                  [1, 1, 0, 0, 0])


@pytest.mark.parametrize("application", ["encoder", "mlm", "lm", "unilm", "plm"])
def test_application_mask_dispatch(application):
    tokens, segments, ranks = ids([5, 6, 7, 0]), ids([0, 1, 1, 0]), ids([2, 0, 1, 3])
    got = as_np(masks.application_mask(application, tokens, segments, ranks))[0]
    expected = {
        "encoder": [[1, 1, 1, 0]] * 4,
        "mlm": [[1, 1, 1, 0]] * 4,
        "lm": [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]],
        # c = 0 1 2 2
        "unilm": [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]],
    }
    if application == "plm":
        # ranks 2 0 1 (3 = padding): content r[j] <= r[i], query r[j] < r[i], query sees its own query column.
        content = [[1, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0]]
        query = [[0, 1, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 1, 0]]
        expected = np.block([[np.array(content), np.zeros((4, 4), int)], [np.array(query), np.eye(4, dtype=int)]])
        assert got.shape == (8, 8)
    np.testing.assert_array_equal(got, expected[application] if isinstance(expected, dict) else expected)


def test_application_mask_errors_name_the_missing_input():
    tokens = ids([5, 6])
    with pytest.raises(ValueError, match="segment_ids"):
        masks.application_mask("unilm", tokens)
    with pytest.raises(ValueError, match="perm_ranks"):
        masks.application_mask("plm", tokens)
    with pytest.raises(ValueError, match="unknown application"):
        masks.application_mask("seq2seq", tokens)
