"""WordPiece `Tokenizer`: ids and offsets equal Hugging Face's `BertTokenizerFast` on real text.

The oracle runs over every text of ChnSentiCorp (train.tsv), CMRC 2018 (both files) and
DRCD (both files), contexts and questions: 18193 texts, about 2.06M chars.
"""
from __future__ import annotations

import json
import unicodedata

import pytest
import transformers

from bert4k.tokenizers import Tokenizer, load_vocab, save_vocab


def _hf(vocab_path, lower: bool):
    # `BertTokenizerFast(vocab_file=...)` silently ignores the file in transformers 5
    # (a 5-token vocab); loading the folder works in 4.x and 5.x.
    hf = transformers.BertTokenizerFast.from_pretrained(str(vocab_path.parent), do_lower_case=lower)
    assert len(hf) == 21128
    return hf


@pytest.fixture(scope="module")
def texts(data_dir) -> list[str]:
    out = []
    with open(data_dir / "chnsenticorp" / "train.tsv", encoding="utf-8") as f:
        next(f)
        out += [line.rstrip("\n").split("\t", 1)[1] for line in f]
    for name in ("cmrc2018/cmrc2018_trial.json", "cmrc2018/cmrc2018_train_sample.json",
                 "drcd/DRCD_dev.json", "drcd/DRCD_test.json"):
        with open(data_dir / name, encoding="utf-8") as f:
            for article in json.load(f)["data"]:
                for para in article["paragraphs"]:
                    out.append(para["context"])
                    out += [qa["question"] for qa in para["qas"]]
    assert len(out) == 18193
    return out


@pytest.fixture(scope="module")
def tok(vocab_path) -> Tokenizer:
    return Tokenizer(vocab_path, do_lower_case=True)


def _spans(mapping: list[list[int]]) -> list[tuple[int, int]]:
    return [(m[0], m[-1] + 1) if m else (0, 0) for m in mapping]


@pytest.mark.parametrize("lower", [True, False])
def test_ids_and_offsets_equal_hf_on_corpus(vocab_path, texts, lower):
    """do_lower_case=True (bert-base-chinese's setting): every text; False: every 3rd text."""
    if not lower:
        texts = texts[::3]
    ours = Tokenizer(vocab_path, do_lower_case=lower)
    ref = _hf(vocab_path, lower)(texts, return_offsets_mapping=True)
    for i, text in enumerate(texts):
        tokens = ours.tokenize(text)
        assert ours.tokens_to_ids(tokens) == ref["input_ids"][i], f"ids differ on text {i}: {text[:80]!r}"
        mapping = ours.rematch(text, tokens)
        assert _spans(mapping) == [tuple(o) for o in ref["offset_mapping"][i]], f"offsets differ on text {i}"
        if i % 20 == 0:
            assert ours.encode(text) == (ref["input_ids"][i], [0] * len(tokens))


def test_unicode_sweep_bmp_equals_hf(vocab_path, tok):
    """Every BMP code point between two letters: same ids and offsets as HF, except
    chars HF's old Unicode tables do not know (it treats them as plain letters) and two
    chars Unicode has re-categorised since."""
    hf = _hf(vocab_path, True)
    codes = [c for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    ref = hf([f"q{chr(c)}q" for c in codes], add_special_tokens=False, return_offsets_mapping=True)
    unknown_to_hf = ([hf.unk_token_id], [(0, 3)])  # what HF gives for an unassigned char, e.g. U+0378
    assert (ref["input_ids"][0x378], [tuple(o) for o in ref["offset_mapping"][0x378]]) == unknown_to_hf
    # re-categorised since HF's tables: U+166D Po -> So (Unicode 13), U+1734 Mn -> Mc (Unicode 14)
    recategorised = {0x166D, 0x1734}
    newer = []
    for c, ids, offsets in zip(codes, ref["input_ids"], ref["offset_mapping"]):
        tokens, spans = tok._tokenize_with_spans(f"q{chr(c)}q")
        assert tok.tokenize(f"q{chr(c)}q")[1:-1] == tokens, hex(c)  # fast path == offsets path
        if (tok.tokens_to_ids(tokens), spans) == (ids, [tuple(o) for o in offsets]) or c in recategorised:
            continue
        assert (ids, [tuple(o) for o in offsets]) == unknown_to_hf, hex(c)
        assert unicodedata.category(chr(c)) != "Cn", hex(c)
        newer.append(c)
    assert len(newer) < 300, len(newer)  # 149 with Python 3.11 (Unicode 14) and tokenizers 0.23


def test_cjk_extension_e_is_isolated(vocab_path, tok):
    # U+2B820..U+2B91F are CJK ideographs (Extension E).  Google's BERT isolates them;
    # HF's Rust normalizer starts the block at U+2B920 and glues them to neighbours.
    text = "a\U0002B820b\U0002B920c"
    tokens = tok.tokenize(text)
    assert tokens == ["[CLS]", "a", "[UNK]", "b", "[UNK]", "c", "[SEP]"]
    assert tok.rematch(text, tokens) == [[], [0], [1], [2], [3], [4], []]


def test_special_ids_and_vocab(vocab_path, tok):
    assert tok.vocab_size == tok._vocab_size == 21128
    assert (tok._token_pad_id, tok._token_unk_id, tok._token_start_id, tok._token_end_id, tok._token_mask_id) == (
        0, 100, 101, 102, 103)
    assert tok.token_to_id("的") == 4638 and tok.id_to_token(4638) == "的"
    assert tok.token_to_id("not-a-token") == 100
    assert tok.ids_to_tokens(tok.tokens_to_ids(["[CLS]", "我", "##s"])) == ["[CLS]", "我", "##s"]
    with pytest.raises(IndexError):
        tok.id_to_token(21128)


def test_missing_vocab_and_bad_special_tokens(tmp_path):
    missing = tmp_path / "nope" / "vocab.txt"
    with pytest.raises(FileNotFoundError, match="nope"):
        Tokenizer(missing)
    with pytest.warns(UserWarning, match="token_start='\\[CLS\\]' is not in the vocabulary of the given token_dict"):
        Tokenizer({"[SEP]": 0, "a": 1})


def test_start_end_tokens_missing_from_the_vocab_encode_as_unknown_like_bert4keras():
    """bert4keras' task_language_model_chinese_chess: a vocabulary of [PAD] and the ICCS characters only; the
    script sets `_token_unk_id = 0` after construction and strips the first and last ids."""
    chars = ["[PAD]"] + list("0123456789abcdefghi")
    token_dict = dict(zip(chars, range(len(chars))))
    with pytest.warns(UserWarning, match="token_end='\\[SEP\\]'"):
        tokenizer = Tokenizer(token_dict)
    assert tokenizer.tokenize("h 2 e 2") == ["[CLS]", "h", "2", "e", "2", "[SEP]"]
    with pytest.raises(ValueError, match="no unknown token '\\[UNK\\]'"):
        tokenizer.encode("h 2 e 2")  # [CLS] has no id at all: an error, not a list holding None
    tokenizer._token_unk_id = 0
    token_ids, segment_ids = tokenizer.encode(" ".join("h2e2h9g7"), maxlen=6)
    assert token_ids == [0, token_dict["h"], token_dict["2"], token_dict["e"], token_dict["2"], 0]
    assert segment_ids == [0] * 6


def test_unk_words_and_rematch(vocab_path, tok):
    hf = _hf(vocab_path, True)
    long_word = "x" * 101  # over 100 chars: one [UNK], like BERT
    text = f"我喜欢☃☃雪人 naïve Café {long_word} end\u200b!"
    tokens = tok.tokenize(text)
    ref = hf(text, return_offsets_mapping=True)
    assert tok.tokens_to_ids(tokens) == ref["input_ids"]
    mapping = tok.rematch(text, tokens)
    assert _spans(mapping) == [tuple(o) for o in ref["offset_mapping"]]
    unk = [text[m[0]:m[-1] + 1] for t, m in zip(tokens, mapping) if t == "[UNK]"]
    assert unk == ["☃☃", long_word]  # [UNK] covers the whole word it replaces
    # accented words map back onto the original (unnormalised) characters
    assert [text[m[0]:m[-1] + 1] for t, m in zip(tokens, mapping) if t in ("cafe", "na")] == ["na", "Café"]
    # a dropped zero-width char stays outside any token; [CLS]/[SEP] map to []
    assert mapping[0] == mapping[-1] == []
    assert mapping[-3:-1] == [[len(text) - 5, len(text) - 4, len(text) - 3], [len(text) - 1]]


def test_rematch_truncated_tokens(tok):
    text = "北京欢迎你 hello"
    tokens = tok.tokenize(text, maxlen=5)
    assert tokens == ["[CLS]", "北", "京", "欢", "[SEP]"]
    assert tok.rematch(text, tokens) == [[], [0], [1], [2], []]


def test_tokenize_maxlen_keeps_end_token(tok):
    assert tok.tokenize("一二三四五", maxlen=4) == ["[CLS]", "一", "二", "[SEP]"]
    with pytest.raises(ValueError, match="maxlen"):
        tok.tokenize("一二三", maxlen=1)


def test_encode_pair_truncates_longer_side(tok):
    ids, segments = tok.encode("一二三四五六", "甲乙")
    assert tok.ids_to_tokens(ids) == ["[CLS]", *"一二三四五六", "[SEP]", "甲", "乙", "[SEP]"]
    assert segments == [0] * 8 + [1] * 3
    # 11 tokens -> 8: all 3 cuts come from the longer first text, [SEP]s kept
    ids, segments = tok.encode("一二三四五六", "甲乙", maxlen=8)
    assert tok.ids_to_tokens(ids) == ["[CLS]", "一", "二", "三", "[SEP]", "甲", "乙", "[SEP]"]
    assert segments == [0] * 5 + [1] * 3
    # once both sides are equally long, the first side is cut first, then they alternate
    ids, _ = tok.encode("一二三四五六", "甲乙", maxlen=7)
    assert tok.ids_to_tokens(ids) == ["[CLS]", "一", "二", "[SEP]", "甲", "乙", "[SEP]"]
    ids, _ = tok.encode("一二三四五六", "甲乙", maxlen=6)
    assert tok.ids_to_tokens(ids) == ["[CLS]", "一", "[SEP]", "甲", "乙", "[SEP]"]
    ids, _ = tok.encode("一二三四五六", "甲乙", maxlen=5)
    assert tok.ids_to_tokens(ids) == ["[CLS]", "一", "[SEP]", "甲", "[SEP]"]
    ids, _ = tok.encode("一二三四五六", "甲乙", maxlen=8, truncate_from="left")
    assert tok.ids_to_tokens(ids) == ["[CLS]", "四", "五", "六", "[SEP]", "甲", "乙", "[SEP]"]
    ids, segments = tok.encode("一二", "甲乙", pattern="S*ES*E")
    assert tok.ids_to_tokens(ids) == ["[CLS]", "一", "二", "[SEP]", "[CLS]", "甲", "乙", "[SEP]"]
    assert segments == [0] * 4 + [1] * 4
    # token lists are used as they are (the second one's [CLS] is dropped, as for text)
    assert tok.encode(["[CLS]", "一", "[SEP]"], ["[CLS]", "甲", "[SEP]"]) == tok.encode("一", "甲")


def test_encode_pair_equals_hf(vocab_path, texts, tok):
    hf = _hf(vocab_path, True)
    pairs = list(zip(texts[:200], texts[200:400]))
    ref = hf([a for a, _ in pairs], [b for _, b in pairs])
    for (a, b), ids, segments in zip(pairs, ref["input_ids"], ref["token_type_ids"]):
        assert tok.encode(a, b) == (ids, segments)


def test_decode(tok):
    text = "这家酒店的服务很好，房间也干净。"
    assert tok.decode(tok.encode(text)[0]) == text
    assert tok.decode(tok.encode("Hello World, it's 3.14 元")[0]) == "hello world, it's 3.14元"
    tokens = ["[CLS]", "i", "'", "m", "un", "##aff", "##able", "(", "ok", ")", "!", "[SEP]", "[PAD]"]
    assert tok.decode(None, tokens=tokens) == "i'm unaffable(ok) !"  # bert4keras' spacing rules


def test_decode_roundtrip_on_corpus(vocab_path, texts, tok):
    normalize = _hf(vocab_path, True).backend_tokenizer.normalizer.normalize_str
    checked = 0
    for text in texts[:2000]:
        ids = tok.encode(text)[0]
        if tok._token_unk_id in ids:
            continue
        assert "".join(tok.decode(ids).split()) == "".join(normalize(text).split())
        checked += 1
    assert checked > 1500


def test_load_vocab_simplified(vocab_path, texts, tmp_path):
    full = load_vocab(vocab_path)
    start = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    token_dict, keep = load_vocab(vocab_path, simplified=True, startswith=start)
    assert keep[:5] == [0, 100, 101, 102, 103]
    assert sorted(token_dict.values()) == list(range(len(keep))) == list(range(len(token_dict)))
    assert len(keep) == len(set(keep)) and keep[5:] == sorted(keep[5:])
    inv = {i: t for t, i in full.items()}
    assert all(inv[keep[i]] == t for t, i in token_dict.items())
    assert {"的", "hello", "##ing", "，", "2008"} <= token_dict.keys()
    assert not {"[unused1]", "##的", "##，", "##.", "[MASK]"} & token_dict.keys() - set(start)

    def droppable(t: str) -> bool:  # the rule, restated with unicodedata names
        stem = t.removeprefix("##")
        return len(t) > 1 and any(
            unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum() and c.isprintable()
                                                        and c != " ")
            or unicodedata.name(c, "").startswith(("CJK UNIFIED", "CJK COMPATIBILITY IDEOGRAPH"))
            for c in stem)

    assert [t for t in full if t not in start and not droppable(t)] == list(token_dict)[len(start):]

    # tokenization never needs a dropped token: ids map back through keep_tokens
    small, big = Tokenizer(token_dict, do_lower_case=True), Tokenizer(vocab_path, do_lower_case=True)
    for text in texts[::50]:
        assert [keep[i] for i in small.encode(text)[0]] == big.encode(text)[0]

    path = tmp_path / "vocab.txt"
    save_vocab(path, token_dict)
    assert load_vocab(path) == token_dict


def test_vocab_lines_are_right_stripped(vocab_path):
    # line 344 of the file is U+2028 and line 13503 is "##\u2028"; HF's reader strips
    # trailing whitespace too, so they become "" and "##"
    vocab = load_vocab(vocab_path)
    assert vocab[""] == 343 and vocab["##"] == 13502 and len(vocab) == 21128


def test_pre_tokenize_and_translate():
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "北京", "北", "京", "我", "爱",
                                         "[unused1]", "ab", "##c"])}
    tok = Tokenizer(vocab, pre_tokenize=lambda s: ["我", "爱", "北京", " ", "abc", "北京"])
    text = "我爱北京 abc北京"
    tokens = tok.tokenize(text)
    assert tokens == ["[CLS]", "我", "爱", "北京", "ab", "##c", "北京", "[SEP]"]
    assert tok.rematch(text, tokens) == [[], [0], [1], [2, 3], [5, 6], [7], [8, 9], []]
    assert Tokenizer(vocab).tokenize("北京") == ["[CLS]", "北", "京", "[SEP]"]
    with pytest.raises(ValueError, match="substring"):
        Tokenizer(vocab, pre_tokenize=lambda s: ["x"]).rematch("我", ["我"])

    tok = Tokenizer(vocab, token_translate={"爱": "[unused1]"})
    ids = tok.encode("我爱北")[0]
    assert tok.ids_to_tokens(ids) == ["[CLS]", "我", "[unused1]", "北", "[SEP]"]
    assert tok.decode(ids) == "我爱北"
