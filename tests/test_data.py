"""Data helpers: batch padding, MLM masking statistics, whole-word grouping (jieba as the oracle),
and the tf.data MLM pipeline on real text."""

import itertools

import jieba
import numpy as np
import pytest

from bert4k.data import chinese_word_spans, mlm_dataset, mlm_mask, pad_batch
from bert4k.tokenizers import Tokenizer

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
SPECIALS = {PAD, CLS, SEP, MASK}


def corpus_lines(data_dir, n, start=0):
    path = data_dir / "zh-plain-corpus" / "zh_corpus.txt"
    with path.open(encoding="utf-8") as f:
        return [line.strip() for line in itertools.islice(f, start, start + n)]


# ---------------------------------------------------------------------------- pad_batch


def test_pad_batch_pads_columns_to_one_length():
    tokens, segments = pad_batch([[CLS, 5, SEP], [CLS, SEP]], [[0, 0, 0], [0, 0]])
    assert tokens.tolist() == [[CLS, 5, SEP], [CLS, SEP, 0]]
    assert segments.tolist() == [[0, 0, 0], [0, 0, 0]]
    # The length is common to all columns, and an explicit length cuts.
    a, b = pad_batch([[1]], [[1, 2, 3]])
    assert a.shape == b.shape == (1, 3)
    (cut,) = pad_batch([[1, 2, 3]], length=2)
    assert cut.tolist() == [[1, 2]]
    with pytest.raises(ValueError, match="equally many"):
        pad_batch([[1]], [[1], [2]])


# ---------------------------------------------------------------------------- mlm_mask


def random_sequences(seed, n, length, vocab_size):
    """Sequences of ordinary ids >= 1000, framed by [CLS] ... [SEP] and ending in padding."""
    rng = np.random.default_rng(seed)
    body = rng.integers(1000, vocab_size, size=(n, length))
    return [[CLS, *row[: length - 5], SEP, PAD, PAD, PAD] for row in body.tolist()]


def split_stats(originals, inputs, labels):
    selected = labels != 0
    masked = selected & (inputs == MASK)
    kept = selected & (inputs == originals)
    replaced = selected & ~masked & ~kept
    n = selected.sum()
    return selected, masked.sum() / n, replaced.sum() / n, kept.sum() / n


def test_mlm_mask_rate_and_80_10_10_split():
    vocab_size = 5000
    sequences = random_sequences(0, 2000, 100, vocab_size)
    rng = np.random.default_rng(1)
    results = [mlm_mask(s, vocab_size, MASK, SPECIALS, rng=rng) for s in sequences]
    originals = np.array(sequences)
    inputs = np.array([r[0] for r in results])
    labels = np.array([r[1] for r in results])
    assert inputs.dtype == labels.dtype == np.int32

    special = np.isin(originals, list(SPECIALS))
    selected, masked, replaced, kept = split_stats(originals, inputs, labels)
    # 2000 x 95 ordinary tokens: the standard error of the rate is about 0.0008.
    assert selected[~special].mean() == pytest.approx(0.15, abs=0.005)
    assert not selected[special].any()
    # ~28,500 selected: standard errors about 0.0024 (80%) and 0.0018 (10%).
    assert masked == pytest.approx(0.8, abs=0.01)
    assert replaced == pytest.approx(0.1, abs=0.008)
    assert kept == pytest.approx(0.1, abs=0.008)
    # Labels: the original id where selected, 0 elsewhere; unselected inputs untouched.
    np.testing.assert_array_equal(labels[selected], originals[selected])
    np.testing.assert_array_equal(inputs[~selected], originals[~selected])
    # Random replacements are ordinary vocabulary ids, spread over the whole vocabulary
    # (originals are all >= 1000; ids 1..999 are about 996/4996 of the draws).
    random_ids = inputs[selected & (inputs != MASK) & (inputs != originals)]
    assert not np.isin(random_ids, list(SPECIALS)).any()
    assert random_ids.max() < vocab_size
    assert (random_ids < 1000).mean() == pytest.approx(996 / 4996, abs=0.03)


def test_mlm_mask_whole_words_all_or_none():
    vocab_size, length = 5000, 100
    sequences = random_sequences(2, 1500, length, vocab_size)
    rng = np.random.default_rng(3)
    word_rng = np.random.default_rng(4)
    per_token, per_word, whole = [], [], []
    for ids in sequences:
        # Words of 1 to 4 tokens covering positions 1 .. length - 5 (between [CLS] and [SEP]).
        spans, start = [], 1
        while start < length - 4:
            end = min(start + int(word_rng.integers(1, 5)), length - 4)
            spans.append((start, end))
            start = end
        _, labels = mlm_mask(ids, vocab_size, MASK, SPECIALS, rng=rng, word_spans=spans)
        for s, e in spans:
            chosen = labels[s:e] != 0
            whole.append(chosen.all() or not chosen.any())
            per_word.append(chosen.all())
        per_token.extend(labels[1 : length - 4] != 0)
    assert all(whole)
    # ~37,500 words and ~142,500 tokens: standard errors about 0.0018 and 0.0015 (clustered).
    assert np.mean(per_word) == pytest.approx(0.15, abs=0.008)
    assert np.mean(per_token) == pytest.approx(0.15, abs=0.008)


def test_mlm_mask_seeded_and_validated():
    ids = random_sequences(5, 1, 200, 5000)[0]
    a = mlm_mask(ids, 5000, MASK, SPECIALS, rng=7)
    b = mlm_mask(ids, 5000, MASK, SPECIALS, rng=7)
    c = mlm_mask(ids, 5000, MASK, SPECIALS, rng=8)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])
    with pytest.raises(ValueError, match="token id 6000"):
        mlm_mask([CLS, 6000], 5000, MASK, SPECIALS)
    with pytest.raises(ValueError, match="overlaps"):
        mlm_mask(ids, 5000, MASK, SPECIALS, word_spans=[(1, 4), (3, 5)])
    with pytest.raises(ValueError, match="outside"):
        mlm_mask(ids, 5000, MASK, SPECIALS, word_spans=[(190, 201)])
    with pytest.raises(ValueError, match="rate"):
        mlm_mask(ids, 5000, MASK, SPECIALS, rate=0)
    with pytest.raises(ValueError, match="every vocabulary id"):
        mlm_mask([1], 2, 1, [0, 1])


# ---------------------------------------------------------------------------- chinese_word_spans


def test_chinese_word_spans_hand_cases():
    # jieba: 我 / 爱 / 北京 / 天安门; token 0 is [CLS], so 北京 = tokens 3-4, 天安门 = 5-7.
    text = "我爱北京天安门"
    tokens = ["[CLS]", *text, "[SEP]"]
    assert chinese_word_spans(text, tokens) == [(3, 5), (5, 8)]
    # jieba: 我用 / iphone / 手机; WordPiece pieces of "iPhone" form one word.
    text = "我用iPhone手机"
    tokens = ["[CLS]", "我", "用", "ip", "##hone", "手", "机", "[SEP]"]
    mapping = [[], [0], [1], [2, 3], [4, 5, 6, 7], [8], [9], []]
    assert chinese_word_spans(text, tokens, mapping) == [(1, 3), (3, 5), (5, 7)]
    assert chinese_word_spans(text, tokens) == [(1, 3), (3, 5), (5, 7)]  # found in the text
    # A token straddling 北京 | 天安门 joins both words into one group.
    assert chinese_word_spans("北京天安门", ["北", "京天", "安", "门"], [[0], [1, 2], [3], [4]]) == [(0, 4)]
    with pytest.raises(ValueError, match="mapping has 1 entries for 2 tokens"):
        chinese_word_spans("北京", ["北", "京"], [[0]])


def test_chinese_word_spans_follow_jieba_on_real_text(data_dir):
    """One token per non-space character: the spans must be exactly jieba's words of 2+ chars."""
    for text in corpus_lines(data_dir, 30):
        text = text[:300]
        positions = [i for i, c in enumerate(text) if not c.isspace()]
        tokens = ["[CLS]"] + [text[i] for i in positions] + ["[SEP]"]
        token_of = {char: k + 1 for k, char in enumerate(positions)}
        expected = []
        for _, start, end in jieba.tokenize(text):
            covered = [token_of[i] for i in range(start, end) if i in token_of]
            if len(covered) >= 2:
                expected.append((covered[0], covered[-1] + 1))
        mapping = [[]] + [[i] for i in positions] + [[]]
        assert chinese_word_spans(text, tokens, mapping) == expected


def test_chinese_word_spans_with_real_tokenizer(data_dir, vocab_path):
    """Spans from the real WordPiece tokens cover whole jieba words: each starts and ends on a
    word boundary, and every word spread over 2+ tokens lies inside one span."""
    tokenizer = Tokenizer(str(vocab_path), do_lower_case=True)
    for text in corpus_lines(data_dir, 20, start=2500):  # CMRC contexts: Chinese with Latin words
        tokens = tokenizer.tokenize(text)
        mapping = tokenizer.rematch(text, tokens)
        spans = chinese_word_spans(text, tokens, mapping)
        boundaries = {s for _, s, _ in jieba.tokenize(text)} | {len(text)}
        for start, end in spans:
            assert mapping[start][0] in boundaries
            assert mapping[end - 1][-1] + 1 in boundaries
        for _, w_start, w_end in jieba.tokenize(text):
            inside = [k for k, chars in enumerate(mapping) if chars and w_start <= chars[0] < w_end]
            if len(inside) >= 2:
                assert any(s <= inside[0] and inside[-1] < e for s, e in spans), text[w_start:w_end]


# ---------------------------------------------------------------------------- mlm_dataset


class CharTokenizer:
    """A minimal bert4keras-API tokenizer over the real vocab: one token per character."""

    def __init__(self, vocab_path):
        tokens = vocab_path.read_text(encoding="utf-8").splitlines()
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.vocab_size = len(tokens)

    def token_to_id(self, token):
        return self.vocab.get(token, UNK)

    def tokens_to_ids(self, tokens):
        return [self.token_to_id(t) for t in tokens]

    def tokenize(self, text, maxlen=None):
        chars = [c for c in text.lower() if not c.isspace()]
        if maxlen is not None:
            chars = chars[: maxlen - 2]
        return ["[CLS]", *chars, "[SEP]"]


def check_mlm_batches(dataset, n_batches, batch_size, maxlen):
    selected = ordinary = 0
    for (tokens, segments), labels in itertools.islice(dataset, n_batches):
        tokens, segments, labels = tokens.numpy(), segments.numpy(), labels.numpy()
        assert tokens.dtype == np.int32
        assert tokens.shape == labels.shape == segments.shape
        assert tokens.shape[0] == batch_size
        assert tokens.shape[1] <= maxlen
        assert not segments.any()
        assert (tokens[:, 0] == CLS).all()
        assert not labels[tokens == PAD].any()
        assert not np.isin(labels, [CLS, SEP, MASK]).any()
        selected += (labels != 0).sum()
        ordinary += (~np.isin(tokens, [PAD, CLS, SEP]) | (labels != 0)).sum()
    return selected / ordinary


def test_mlm_dataset_on_real_text(data_dir, vocab_path):
    texts = corpus_lines(data_dir, 256, start=5757)  # ChnSentiCorp reviews
    tokenizer = CharTokenizer(vocab_path)
    dataset = mlm_dataset(texts, tokenizer, maxlen=64, batch_size=32, seed=0)
    # ~256 x 60 ordinary tokens: standard error of the rate about 0.003.
    assert check_mlm_batches(dataset, 8, 32, 64) == pytest.approx(0.15, abs=0.015)

    fresh = [mlm_dataset(texts, tokenizer, maxlen=64, batch_size=32, seed=0) for _ in range(2)]
    first, again = (next(iter(d))[1].numpy() for d in fresh)
    np.testing.assert_array_equal(first, again)  # same seed, same masks
    second_pass = next(iter(fresh[0]))[1].numpy()
    assert not np.array_equal(first, second_pass)  # masks are redrawn on every pass


def test_mlm_dataset_with_real_tokenizer(data_dir, vocab_path):
    texts = corpus_lines(data_dir, 128, start=2500)
    tokenizer = Tokenizer(str(vocab_path), do_lower_case=True)
    dataset = mlm_dataset(texts, tokenizer, maxlen=128, batch_size=16, seed=1)
    assert check_mlm_batches(dataset, 8, 16, 128) == pytest.approx(0.15, abs=0.02)
