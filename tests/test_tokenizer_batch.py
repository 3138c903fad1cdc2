"""The tokenizer's batch API (`tokenizer(texts)`) and special tokens in text, against Hugging Face's
`BertTokenizerFast` on the same vocab."""
import numpy as np
import pytest

from bert4k.tokenizers import Tokenizer

transformers = pytest.importorskip("transformers")

TEXTS = ["今天天气很好。", "北京欢迎你 hello world", "我"]


@pytest.fixture(scope="module")
def hf(vocab_path):
    return transformers.BertTokenizerFast.from_pretrained(str(vocab_path.parent), do_lower_case=True)


def test_batch_equals_hf_padded(vocab_path, hf):
    tok = Tokenizer(vocab_path, do_lower_case=True)
    got = tok(TEXTS, return_offsets=True)
    ref = hf(TEXTS, padding=True, return_offsets_mapping=True, return_tensors="np")
    np.testing.assert_array_equal(got["token_ids"], ref["input_ids"])
    np.testing.assert_array_equal(got["segment_ids"], ref["token_type_ids"])
    np.testing.assert_array_equal(got["mask"], ref["attention_mask"])
    np.testing.assert_array_equal(got["offsets"], ref["offset_mapping"])
    assert got["token_ids"].dtype == np.int32


def test_single_text_pairs_maxlen_and_pad_to(vocab_path, hf):
    tok = Tokenizer(vocab_path, do_lower_case=True)
    one = tok("北京欢迎你")
    assert one["token_ids"].shape == (1, 7)
    pairs = tok(["问题一", "问"], ["答案", "很长的答案啊"], maxlen=8, pad_to=10)
    ref = hf(["问题一", "问"], ["答案", "很长的答案啊"], truncation="longest_first", max_length=8,
             padding="max_length")
    assert pairs["token_ids"].shape == (2, 10)
    np.testing.assert_array_equal(pairs["token_ids"][:, :8], ref["input_ids"])
    np.testing.assert_array_equal(pairs["segment_ids"][:, :8], ref["token_type_ids"])
    assert not pairs["mask"][:, 8:].any()
    with pytest.raises(ValueError, match="2 texts but 1 second"):
        tok(["a", "b"], ["c"])


@pytest.mark.parametrize("text", ["今天[MASK]气很好", "[CLS]句子[SEP]另一句[MASK][MASK]", "a[MASK]b [SEP] c",
                                  "[mask] stays text", "[UNK][PAD]"])
def test_special_tokens_in_text_equal_hf(vocab_path, hf, text):
    tok = Tokenizer(vocab_path, do_lower_case=True, special_tokens=True)
    tokens = tok.tokenize(text)
    ref = hf(text, return_offsets_mapping=True)
    assert tok.tokens_to_ids(tokens) == ref["input_ids"]
    spans = [(m[0], m[-1] + 1) if m else (0, 0) for m in tok.rematch(text, tokens)]
    assert spans == [tuple(o) for o in ref["offset_mapping"]]


def test_special_tokens_off_by_default_and_checked(vocab_path):
    plain = Tokenizer(vocab_path, do_lower_case=True)
    assert plain.tokenize("[MASK]")[1:-1] == ["[", *plain.tokenize("mask")[1:-1], "]"]
    only_mask = Tokenizer(vocab_path, special_tokens=["[MASK]"])
    sep = only_mask.tokenize("SEP")[1:-1]
    assert only_mask.tokenize("[MASK][SEP]")[1:-1] == ["[MASK]", "[", *sep, "]"]
    with pytest.raises(ValueError, match=r"\['<mask>'\] are not in the vocabulary"):
        Tokenizer(vocab_path, special_tokens=["<mask>"])


def test_special_tokens_with_pre_tokenize(vocab_path):
    import jieba

    tok = Tokenizer(vocab_path, do_lower_case=True, special_tokens=True, pre_tokenize=lambda t: jieba.cut(t, HMM=False))
    text = "我们[MASK]北京"
    tokens = tok.tokenize(text)
    assert "[MASK]" in tokens
    mapping = tok.rematch(text, tokens)
    assert text[mapping[tokens.index("[MASK]")][0]:mapping[tokens.index("[MASK]")][-1] + 1] == "[MASK]"
