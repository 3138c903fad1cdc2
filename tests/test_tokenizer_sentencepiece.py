"""`SpTokenizer`: exactly the pieces and ids of `sentencepiece` itself, on both real models."""
from __future__ import annotations

import json

import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from bert4k.tokenizers import SpTokenizer

MT5 = "spm-mt5-chinese/sentencepiece_cn.model"
CLUE = "spm-cluecorpussmall/cluecorpussmall_spm.model"


@pytest.fixture(scope="module")
def texts(data_dir) -> list[str]:
    with open(data_dir / "chnsenticorp" / "train.tsv", encoding="utf-8") as f:
        next(f)
        out = [line.rstrip("\n").split("\t", 1)[1] for line in f]
    with open(data_dir / "csl-title" / "dev.tsv", encoding="utf-8") as f:
        for line in f:
            _, abstract, title = line.rstrip("\n").split("\t")
            out += [abstract, title]
    assert len(out) == 7887 + 2000
    return out


@pytest.mark.parametrize("model, start, end", [(MT5, None, "</s>"), (CLUE, "[CLS]", "[SEP]")])
def test_pieces_and_ids_equal_sentencepiece(data_dir, texts, model, start, end):
    path = str(data_dir / model)
    sp = spm.SentencePieceProcessor(model_file=path)
    tok = SpTokenizer(path, token_start=start, token_end=end)
    head = [] if start is None else [start]
    head_ids = [] if start is None else [sp.piece_to_id(start)]
    all_pieces = sp.encode(texts, out_type=str)
    all_ids = sp.encode(texts)
    for text, pieces, ids in zip(texts, all_pieces, all_ids):
        assert tok.tokenize(text) == head + pieces + [end]
        token_ids, segment_ids = tok.encode(text)
        assert token_ids == head_ids + ids + [sp.piece_to_id(end)]
        assert segment_ids == [0] * len(token_ids)
        assert tok.decode(token_ids) == sp.decode(ids)


def test_mt5_specials_and_decode(data_dir):
    tok = SpTokenizer(data_dir / MT5)
    assert tok.vocab_size == 32596
    assert (tok._token_pad_id, tok._token_end_id, tok._token_unk_id) == (0, 1, 2)
    assert tok._token_start_id is None and tok._token_mask_id is None
    assert tok.id_to_token(0) == "<pad>" and tok.id_to_token(1) == "</s>"
    assert tok.id_to_token(32597) == ""  # ids past the pieces (a larger embedding) decode to nothing
    text = "今天天气不错，我们去公园散步吧。"
    ids, _ = tok.encode(text)
    assert ids[-1] == 1 and tok.tokenize(text)[-1] == "</s>"
    # mT5's normaliser maps the full-width comma to ","; <pad>, </s> and overflow ids are skipped
    assert tok.decode(ids + [0, 0, 32597]) == "今天天气不错,我们去公园散步吧。"
    assert tok.decode(tok.encode("Hello World! 😀 𠀀")[0]) == "Hello World! 😀 𠀀"  # byte fallback


def test_encode_pair_and_maxlen(data_dir):
    tok = SpTokenizer(data_dir / MT5)
    sp = tok.sp_model
    a, b = "我们去公园散步吧", "好的"
    ids, segments = tok.encode(a, b)
    assert ids == sp.encode(a) + [1] + sp.encode(b) + [1]
    assert segments == [0] * (len(sp.encode(a)) + 1) + [1] * (len(sp.encode(b)) + 1)
    ids, _ = tok.encode(a, b, maxlen=6)
    assert len(ids) == 6 and ids.count(1) == 2 and ids[-1] == 1
    assert tok.tokenize(a, maxlen=3) == sp.encode(a, out_type=str)[:2] + ["</s>"]


def test_clue_model_specials(data_dir):
    tok = SpTokenizer(data_dir / CLUE, token_start="[CLS]", token_end="[SEP]")
    assert (tok._token_pad_id, tok._token_unk_id, tok._token_start_id, tok._token_end_id, tok._token_mask_id) == (
        0, 1, 2, 3, 4)
    assert tok.tokenize("今天天气不错，我们去公园散步吧。") == [
        "[CLS]", "▁今天", "天气", "不错", ",", "我们去", "公园", "散步", "吧", "。", "[SEP]"]
    with pytest.warns(UserWarning, match="token_end='</s>' is not in the vocabulary"):
        t5_style = SpTokenizer(data_dir / CLUE)  # T5's </s> is not a piece of this model
    assert t5_style.encode("今天")[0][-1] == t5_style.sp_model.unk_id()  # as in bert4keras: the unknown piece


def test_keep_tokens_do_not_change_ids(data_dir, texts, tmp_path):
    path = data_dir / "spm-mt5-chinese" / "sentencepiece_cn_keep_tokens.json"
    tok = SpTokenizer(data_dir / MT5, keep_tokens=path)
    plain = SpTokenizer(data_dir / MT5)
    assert plain.keep_tokens is None
    keep = tok.keep_tokens
    assert len(keep) == 32598 and keep[:3] == [0, 1, 2] and max(keep) == 250101
    for text in texts[:200]:
        assert tok.encode(text) == plain.encode(text)
    assert SpTokenizer(data_dir / MT5, keep_tokens=list(keep)).keep_tokens == keep
    short = tmp_path / "short.json"
    short.write_text(json.dumps(keep[:100]))
    with pytest.raises(ValueError, match="100 entries"):
        SpTokenizer(data_dir / MT5, keep_tokens=short)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        SpTokenizer(data_dir / MT5, keep_tokens=tmp_path / "missing.json")


def test_missing_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.model"):
        SpTokenizer(tmp_path / "nope.model")


def test_pre_tokenize_and_translate(data_dir):
    tok = SpTokenizer(data_dir / MT5, pre_tokenize=lambda s: ["我们", "去", "公园"])
    assert tok.tokenize("我们去公园") == tok.sp_model.encode("我们 去 公园", out_type=str) + ["</s>"]
    tok = SpTokenizer(data_dir / MT5, token_translate={"我们": "<unk>"})
    ids, _ = tok.encode("我们去公园")
    assert 2 in ids and tok.decode(ids) == "我们去公园"


# === the same contract as the WordPiece Tokenizer: any str, maxlen, offsets ===

ANY_CHAR = st.characters(blacklist_categories=())  # surrogates (Cs), controls, private use included


@pytest.fixture(scope="module")
def mt5(data_dir):
    return SpTokenizer(data_dir / MT5)


def test_lone_surrogate_does_not_crash(mt5):
    """Before: sentencepiece raised "Unable to cast Python instance of type <class 'str'> to C++ type"."""
    text = "好\ud800的\udfff"
    assert mt5.tokenize(text) == mt5.tokenize("好的")
    assert mt5.encode(text, "\ud83d", maxlen=4)[0][-1] == 1
    tokens = mt5.tokenize(text)
    # a span runs over the dropped chars inside it, as WordPiece's does; the trailing surrogate is in no span
    assert "".join(text[i] for span in mt5.rematch(text, tokens) for i in span) == "好\ud800的"


@settings(max_examples=150, deadline=None)
@given(text=st.text(ANY_CHAR, max_size=40), second=st.text(ANY_CHAR, max_size=20), maxlen=st.integers(3, 12))
def test_any_text_tokenizes_within_maxlen(mt5, text, second, maxlen):
    ids, segments = mt5.encode(text, second, maxlen=maxlen)
    assert len(ids) == len(segments) <= maxlen and ids.count(1) == 2
    tokens = mt5.tokenize(text, maxlen=maxlen)
    assert len(tokens) <= maxlen and tokens[-1] == "</s>"
    mapping = mt5.rematch(text, tokens)
    assert len(mapping) == len(tokens) and mapping[-1] == []
    covered = [i for span in mapping for i in span]
    assert all(0 <= i < len(text) for i in covered) and covered == sorted(covered)


@pytest.mark.parametrize("model, end", [(MT5, "</s>"), (CLUE, "[SEP]")])
def test_rematch_spans_normalise_to_their_pieces(data_dir, texts, model, end):
    """Each piece's chars, normalised by sentencepiece itself, spell the piece (byte-fallback pieces aside)."""
    tok = SpTokenizer(data_dir / model, token_end=end)
    sp = tok.sp_model

    def bare(s):
        return s.replace("▁", "").replace(" ", "")

    checked = 0
    for text in texts[:300]:
        tokens = tok.tokenize(text)
        for token, span in zip(tokens, tok.rematch(text, tokens)):
            if span and not token.startswith("<0x"):
                assert bare(sp.normalize(text[span[0]:span[-1] + 1])) == bare(token), (text, token, span)
                checked += 1
    assert checked > 5000


def test_offsets_through_the_batch_call(mt5):
    text = "我们去ＡＢＣ公园"
    out = mt5([text], return_offsets=True)
    tokens = mt5.tokenize(text)
    spans = [(s[0], s[-1] + 1) if s else (0, 0) for s in mt5.rematch(text, tokens)]
    assert [tuple(o) for o in out["offsets"][0][:len(tokens)]] == spans
    assert any(text[a:b] == "ＡＢＣ" for a, b in spans)
