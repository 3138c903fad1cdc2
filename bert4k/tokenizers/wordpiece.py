"""BERT WordPiece tokenizer (bert4keras API), id-for-id equal to Hugging Face's `BertTokenizerFast`."""
from __future__ import annotations

import os
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from .vocab import is_cjk, is_punctuation, load_vocab, stem

# Character kinds after normalisation.
_WORD, _ALONE, _SPACE = 0, 1, 2
_WORD_CACHE_MAX = 1 << 17

# Punctuation after which `decode` puts no space: full-width forms, CJK marks, dashes, quotes.
_CJK_PUNCTUATION = (
    "\uff02\uff03\uff04\uff05\uff06\uff07\uff08\uff09\uff0a\uff0b\uff0c\uff0d\uff0f\uff1a\uff1b"
    "\uff1c\uff1d\uff1e\uff20\uff3b\uff3c\uff3d\uff3e\uff3f\uff40\uff5b\uff5c\uff5d\uff5e\uff5f"
    "\uff60\uff62\uff63\uff64\u3000\u3001\u3003\u3008\u3009\u300a\u300b\u300c\u300d\u300e\u300f"
    "\u3010\u3011\u3014\u3015\u3016\u3017\u3018\u3019\u301a\u301b\u301c\u301d\u301e\u301f\u3030"
    "\u303e\u303f\u2013\u2014\u2018\u2019\u201b\u201c\u201d\u201e\u201f\u2026\u2027\ufe4f\ufe51"
    "\ufe54\u00b7\uff01\uff1f\uff61\u3002"
)
_NO_SPACE_AFTER = re.compile("([" + re.escape(_CJK_PUNCTUATION + "+-/={(<[") + "]) ")
_SPACES = re.compile(" +")
_CONTRACTION = re.compile(r"' (re|m|s|t|ve|d|ll) ")
_DECIMAL = re.compile(r"(\d\.) (\d)")


def _truncate(maxlen: int, index: int, sequences: list[list[str]], keep: int) -> None:
    """Pop items at `index` from the longest sequence (the first on ties) until all fit in `maxlen`."""
    total = sum(len(s) for s in sequences)
    while total > maxlen:
        longest = max(sequences, key=len)
        if len(longest) <= keep:
            raise ValueError(f"maxlen={maxlen} leaves no room for the start/end tokens")
        longest.pop(index)
        total -= 1


class TokenizerBase:
    """bert4keras-style `tokenize`/`encode` on top of a subclass's `_tokenize` and vocabulary."""

    _token_pad = "[PAD]"
    _token_unk = "[UNK]"
    _token_mask = "[MASK]"

    def __init__(
        self,
        token_start: str | None = "[CLS]",
        token_end: str | None = "[SEP]",
        pre_tokenize: Callable[[str], Iterable[str]] | None = None,
        token_translate: Mapping[str, str] | None = None,
    ) -> None:
        self._token_start = token_start
        self._token_end = token_end
        self._pre_tokenize = pre_tokenize
        self._token_translate = dict(token_translate or {})
        self._token_translate_inv = {v: k for k, v in self._token_translate.items()}
        self._n_special = (token_start is not None) + (token_end is not None)

    def _set_special_ids(self, source: str) -> None:
        """Set `_token_{pad,unk,mask,start,end}_id`: None for a token not in the vocab. A start/end token not in
        the vocab is still added by `tokenize` and encodes as the unknown token, as in bert4keras (a script may
        strip it, or set `_token_unk_id` itself); a warning says so."""
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, f"_token_{name}")
            token_id = None if token is None else self._lookup(token)
            if token_id is None and token is not None and name in ("start", "end"):
                warnings.warn(f"token_{name}={token!r} is not in the vocabulary of {source}: tokenize still adds "
                              f"it and it encodes as the unknown token's id (bert4keras' behaviour); pass "
                              f"token_{name}=None to leave it out", stacklevel=3)
            setattr(self, f"_token_{name}_id", token_id)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def tokenize(self, text: str, maxlen: int | None = None) -> list[str]:
        """Tokens of `text`, with the start/end tokens; cut to `maxlen` keeping the end token."""
        tokens = self._tokenize(text)
        if self._token_translate:
            tokens = [self._token_translate.get(t, t) for t in tokens]
        if self._token_start is not None:
            tokens.insert(0, self._token_start)
        if self._token_end is not None:
            tokens.append(self._token_end)
        if maxlen is not None:
            _truncate(maxlen, -int(self._token_end is not None) - 1, [tokens], self._n_special)
        return tokens

    def encode(
        self,
        first_text: str | list[str],
        second_text: str | list[str] | None = None,
        maxlen: int | None = None,
        pattern: str = "S*E*E",
        truncate_from: str | int = "right",
    ) -> tuple[list[int], list[int]]:
        """`(token_ids, segment_ids)` of one text or a pair (texts or token lists).

        A pair is `[CLS] a [SEP] b [SEP]` (`pattern="S*E*E"`) or `[CLS] a [SEP] [CLS] b [SEP]`
        (`"S*ES*E"`); segment ids are 0 for `a`, 1 for `b`.  With `maxlen`, tokens are popped
        from the longer side, from the right end (before `[SEP]`), or from the left end
        (after `[CLS]`) with `truncate_from="left"`, or at a given index.
        """
        if pattern not in ("S*E*E", "S*ES*E"):
            raise ValueError(f"pattern must be 'S*E*E' or 'S*ES*E', got {pattern!r}")
        first = self.tokenize(first_text) if isinstance(first_text, str) else list(first_text)
        second = None
        if second_text is not None:
            second = self.tokenize(second_text) if isinstance(second_text, str) else list(second_text)
        if maxlen is not None:
            if truncate_from == "right":
                index = -int(self._token_end is not None) - 1
            elif truncate_from == "left":
                index = int(self._token_start is not None)
            else:
                index = truncate_from
            if second is not None and pattern == "S*E*E":
                maxlen += int(self._token_start is not None)  # b's start token is dropped below
            _truncate(maxlen, index, [first] if second is None else [first, second], self._n_special)
        ids = self.tokens_to_ids(first)
        segment_ids = [0] * len(ids)
        if second is not None:
            if pattern == "S*E*E" and self._token_start is not None:
                second = second[1:]
            ids += self.tokens_to_ids(second)
            segment_ids += [1] * len(second)
        return ids, segment_ids

    def _align(self, tokens: Sequence[str], ref_tokens: list[str], spans: list) -> list[list[int]]:
        """`rematch`'s alignment: each of `tokens` (a possibly truncated tokenisation) is found in `ref_tokens` in
        order and gets the char indices of its span (`[]` for added start/end tokens, unknown ones, span None)."""
        tokens = list(tokens)
        head = tail = []
        if self._token_start is not None and tokens[:1] == [self._token_start]:
            head, tokens = [[]], tokens[1:]  # the added start token, even where the text holds one too
        if self._token_end is not None and tokens[-1:] == [self._token_end]:
            tail, tokens = [[]], tokens[:-1]
        mapping, j = list(head), 0
        for token in tokens:
            try:
                k = ref_tokens.index(token, j)
            except ValueError:
                mapping.append([])
                continue
            mapping.append([] if spans[k] is None else list(range(*spans[k])))
            j = k + 1
        return mapping + tail

    def tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.token_to_id(t) for t in tokens]

    def ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.id_to_token(int(i)) for i in ids]

    def __call__(
        self,
        texts: str | Sequence[str],
        pairs: str | Sequence[str] | None = None,
        maxlen: int | None = None,
        return_offsets: bool = False,
        pad_to: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Encode one text or a batch (optionally with second texts) into padded arrays.

        Returns `token_ids` and `segment_ids` (int32 `[batch, len]`, padded with the pad id / 0), `mask` (1 on real
        tokens, 0 on padding) and, with `return_offsets`, `offsets` (`[batch, len, 2]` char `(start, end)` in the
        text each token came from, `(0, 0)` for added and padding tokens, as Hugging Face's `offset_mapping`).
        A single string gives a batch of one. `pad_to` pads to at least that length.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if pairs is not None:
            pairs = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(pairs) != len(texts):
                raise ValueError(f"tokenizer: {len(texts)} texts but {len(pairs)} second texts")
        rows = [self.encode(t, None if pairs is None else pairs[i], maxlen=maxlen) for i, t in enumerate(texts)]
        width = max([len(ids) for ids, _ in rows] + [pad_to or 0])
        pad = self._token_pad_id or 0
        out = {"token_ids": np.full((len(rows), width), pad, "int32"),
               "segment_ids": np.zeros((len(rows), width), "int32"),
               "mask": np.zeros((len(rows), width), "int32")}
        for i, (ids, segments) in enumerate(rows):
            out["token_ids"][i, :len(ids)] = ids
            out["segment_ids"][i, :len(ids)] = segments
            out["mask"][i, :len(ids)] = 1
        if return_offsets:
            if pairs is not None or not hasattr(self, "rematch"):
                raise ValueError(f"{type(self).__name__}: return_offsets is for single texts of a WordPiece Tokenizer")
            out["offsets"] = np.zeros((len(rows), width, 2), "int32")
            for i, text in enumerate(texts):
                tokens = self.ids_to_tokens(rows[i][0])
                for j, chars in enumerate(self.rematch(text, tokens)):
                    if chars:
                        out["offsets"][i, j] = (chars[0], chars[-1] + 1)
        return out


class Tokenizer(TokenizerBase):
    """BERT WordPiece tokenizer.

    Text is cleaned (NUL, U+FFFD and control, format, private-use and surrogate chars
    dropped; every whitespace char a separator), CJK ideographs and punctuation become
    tokens of their own, and with `do_lower_case` each char is NFD-decomposed, stripped
    of non-spacing marks and lower-cased.  Each remaining word is split by greedy
    longest-match-first WordPiece (`##` continuations); a word that cannot be split, or
    is longer than `word_maxlen` chars, becomes `[UNK]`.  `pre_tokenize(text)` (e.g.
    `jieba.cut`), if given, runs first on the raw text: a piece whose normalised form is
    in the vocab stays whole, the rest is tokenized as usual.  `token_translate` renames
    tokens after tokenizing (and back in `decode`).

    Ids and offsets equal Hugging Face's `BertTokenizerFast` (same `do_lower_case`) except
    where its Rust code is wrong or outdated: it does not isolate CJK Extension E chars
    U+2B820..U+2B91F (it starts that block at U+2B920; Google's BERT and we isolate them),
    and its Unicode category tables are old (about Unicode 8), so it treats chars added
    or re-categorised since as plain letters, where we use Python's `unicodedata`.

    `special_tokens`: strings kept as one token when they occur in the text, matched exactly before any
    normalisation (`True`: the vocab's `[PAD] [UNK] [CLS] [SEP] [MASK]`, as Hugging Face does). By default
    (`None`) `[MASK]`-like strings in the text are tokenized as text (`[`, `mask`, `]`), as in Google's BERT.
    """

    def __init__(
        self,
        token_dict: Mapping[str, int] | str | os.PathLike,
        do_lower_case: bool = False,
        token_start: str | None = "[CLS]",
        token_end: str | None = "[SEP]",
        pre_tokenize: Callable[[str], Iterable[str]] | None = None,
        token_translate: Mapping[str, str] | None = None,
        word_maxlen: int = 100,
        special_tokens: Iterable[str] | bool | None = None,
    ) -> None:
        super().__init__(token_start, token_end, pre_tokenize, token_translate)
        source = None
        if not isinstance(token_dict, Mapping):
            source, token_dict = repr(os.fspath(token_dict)), load_vocab(token_dict)
        self._token_dict = dict(token_dict)
        self._token_dict_inv = {i: t for t, i in self._token_dict.items()}
        self._vocab_size = max(self._token_dict.values(), default=-1) + 1
        self._do_lower_case = do_lower_case
        self._word_maxlen = word_maxlen
        self._max_token_chars = max((len(stem(t)) for t in self._token_dict), default=0)
        self._chars: dict[str, tuple[tuple[str, int], ...]] = {}
        self._spaced = _Table(self._spaced_form)  # str.translate table: char -> spaced normal form
        self._plain = _Table(self._plain_form)  # char -> normal form, unspaced
        self._word_cache: dict[str, tuple[str, ...]] = {}
        self._set_special_ids(source or "the given token_dict")
        self._special_split = self._special_pattern(special_tokens, source or "the given token_dict")

    def _special_pattern(self, special_tokens, source: str) -> re.Pattern | None:
        """A regex that splits text around the special tokens (longest first), or None."""
        if special_tokens is None or special_tokens is False:
            return None
        if special_tokens is True:
            names = ("pad", "unk", "start", "end", "mask")
            special_tokens = [getattr(self, f"_token_{n}") for n in names if getattr(self, f"_token_{n}_id") is not None]
        special_tokens = list(special_tokens)
        absent = [t for t in special_tokens if t not in self._token_dict]
        if absent:
            raise ValueError(f"special_tokens {absent} are not in the vocabulary of {source}")
        if not special_tokens:
            return None
        return re.compile("(" + "|".join(re.escape(t) for t in sorted(special_tokens, key=len, reverse=True)) + ")")

    def _pieces(self, text: str) -> Iterable[tuple[str, int, bool]]:
        """`(piece, offset, is_special)` of `text` split around its special tokens."""
        if self._special_split is None:
            yield text, 0, False
            return
        offset = 0
        for k, piece in enumerate(self._special_split.split(text)):
            if piece:
                yield piece, offset, k % 2 == 1
            offset += len(piece)

    # -- vocabulary --------------------------------------------------------------------
    def _lookup(self, token: str) -> int | None:
        return self._token_dict.get(token)

    def token_to_id(self, token: str) -> int:
        """Id of `token`; the `[UNK]` id for a token not in the vocab."""
        return self._token_dict.get(token, self._token_unk_id)

    def tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        get, unk = self._token_dict.get, self._token_unk_id
        tokens = list(tokens)
        ids = [get(t, unk) for t in tokens]
        if unk is None and None in ids:
            absent = list(dict.fromkeys(t for t, i in zip(tokens, ids) if i is None))
            raise ValueError(f"tokens {absent} are not in the vocabulary, which has no unknown token "
                             f"{self._token_unk!r}: add it to the vocabulary or set `_token_unk_id`")
        return ids

    def id_to_token(self, i: int) -> str:
        try:
            return self._token_dict_inv[i]
        except KeyError:
            raise IndexError(f"token id {i} is not in the vocabulary (size {self._vocab_size})") from None

    # -- normalisation: one cached entry per distinct char ---------------------------------
    def _char_entry(self, ch: str) -> tuple[tuple[str, int], ...]:
        """`((normal_char, kind), ...)` for one input char; empty when the char is dropped."""
        entry = self._chars.get(ch)
        if entry is not None:
            return entry
        if ch in "\t\n\r":
            entry = ((" ", _SPACE),)
        elif ch in "\x00\ufffd" or unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs"):
            entry = ()
        elif ch.isspace():
            entry = ((" ", _SPACE),)
        else:
            norm = ch
            if self._do_lower_case:
                norm = unicodedata.normalize("NFD", ch)
                norm = "".join(c.lower() for c in norm if unicodedata.category(c) != "Mn")
            if is_cjk(ch):
                entry = tuple((c, _ALONE) for c in norm)
            else:
                entry = tuple((c, _ALONE if is_punctuation(c) else _WORD) for c in norm)
        self._chars[ch] = entry
        return entry

    def _spaced_form(self, ch: str) -> str:
        return "".join(f" {c} " if kind == _ALONE else c for c, kind in self._char_entry(ch))

    def _plain_form(self, ch: str) -> str:
        return "".join(c for c, _ in self._char_entry(ch))

    # -- WordPiece ------------------------------------------------------------------------
    def _word_pieces(self, word: str) -> tuple[str, ...]:
        """WordPiece split of one normalised word (cached)."""
        pieces = self._word_cache.get(word)
        if pieces is None:
            if len(self._word_cache) >= _WORD_CACHE_MAX:
                self._word_cache.clear()
            pieces = self._word_cache[word] = self._split_word(word)
        return pieces

    def _split_word(self, word: str) -> tuple[str, ...]:
        if len(word) > self._word_maxlen:
            return (self._token_unk,)
        vocab, pieces, start, n = self._token_dict, [], 0, len(word)
        while start < n:
            prefix = "##" if start else ""
            for end in range(min(n, start + self._max_token_chars), start, -1):
                piece = prefix + word[start:end]
                if piece in vocab:
                    pieces.append(piece)
                    start = end
                    break
            else:
                return (self._token_unk,)
        return tuple(pieces)

    def _words_to_tokens(self, words: Iterable[str], out: list[str]) -> None:
        vocab, maxlen = self._token_dict, self._word_maxlen
        for word in words:
            if word in vocab and len(word) <= maxlen:
                out.append(word)
            else:
                out.extend(self._word_pieces(word))

    def _whole_token(self, piece: str) -> str | None:
        """The normalised `piece` if it is one vocab token with no whitespace, else None."""
        whole = piece.translate(self._plain)
        return whole if whole in self._token_dict and whole and " " not in whole else None

    def _tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        for part, _, special in self._pieces(text):
            if special:
                tokens.append(part)
            elif self._pre_tokenize is None:
                self._words_to_tokens(part.translate(self._spaced).split(), tokens)
            else:
                for piece in self._pre_tokenize(part):
                    whole = self._whole_token(piece)
                    if whole is not None:
                        tokens.append(whole)
                    else:
                        self._words_to_tokens(piece.translate(self._spaced).split(), tokens)
        return tokens

    # -- offsets ----------------------------------------------------------------------------
    def _add_word(self, chars: list[str], where: list[int], tokens: list[str], spans: list[tuple[int, int]]) -> None:
        """Append the WordPiece tokens of one word and their spans (`where` = char positions)."""
        word = "".join(chars)
        if word in self._token_dict and len(word) <= self._word_maxlen:
            tokens.append(word)
            spans.append((where[0], where[-1] + 1))
            return
        pieces = self._word_pieces(word)
        if pieces == (self._token_unk,):
            tokens.append(self._token_unk)
            spans.append((where[0], where[-1] + 1))
            return
        start = 0
        for piece in pieces:
            end = start + len(piece) - (2 if start else 0)
            tokens.append(piece)
            spans.append((where[start], where[end - 1] + 1))
            start = end

    def _add_segment(self, text: str, offset: int, tokens: list[str], spans: list[tuple[int, int]]) -> None:
        """Tokenize `text`, which starts at `offset` in the full text, appending tokens and spans."""
        entries, vocab, unk = self._chars, self._token_dict, self._token_unk
        chars: list[str] = []
        where: list[int] = []
        for i, ch in enumerate(text, offset):
            entry = entries.get(ch)
            if entry is None:
                entry = self._char_entry(ch)
            for c, kind in entry:
                if kind == _WORD:
                    chars.append(c)
                    where.append(i)
                    continue
                if chars:
                    self._add_word(chars, where, tokens, spans)
                    chars, where = [], []
                if kind == _ALONE:
                    tokens.append(c if c in vocab else unk)
                    spans.append((i, i + 1))
        if chars:
            self._add_word(chars, where, tokens, spans)

    def _tokenize_with_spans(self, text: str) -> tuple[list[str], list[tuple[int, int]]]:
        """Tokens of `text` (no start/end tokens) and each one's `(start, end)` in `text`."""
        tokens: list[str] = []
        spans: list[tuple[int, int]] = []
        for part, offset, special in self._pieces(text):
            if special:
                tokens.append(part)
                spans.append((offset, offset + len(part)))
            elif self._pre_tokenize is None:
                self._add_segment(part, offset, tokens, spans)
            else:
                pos = 0
                for piece in self._pre_tokenize(part):
                    at = part.find(piece, pos)
                    if at < 0:
                        raise ValueError(f"pre_tokenize returned {piece!r}, which is not a substring of the text")
                    pos = at + len(piece)
                    whole = self._whole_token(piece)
                    if whole is not None:
                        tokens.append(whole)
                        spans.append((offset + at, offset + pos))
                    else:
                        self._add_segment(piece, offset + at, tokens, spans)
        if self._token_translate:
            tokens = [self._token_translate.get(t, t) for t in tokens]
        return tokens, spans

    def rematch(self, text: str, tokens: Sequence[str]) -> list[list[int]]:
        """For each token, the indices of the chars of `text` it covers (`[]` for tokens not from the text).

        `tokens` is the output of `tokenize(text)`, possibly truncated.  A token's indices
        run over its whole span in the original text, including chars that normalisation
        dropped inside it; `[UNK]` covers the whole word it replaced; `[CLS]`, `[SEP]`
        and other added tokens get `[]`.  These are Hugging Face's `offset_mapping` spans.
        """
        return self._align(tokens, *self._tokenize_with_spans(text))

    # -- decoding -----------------------------------------------------------------------------
    def decode(self, ids: Iterable[int], tokens: Sequence[str] | None = None) -> str:
        """Readable text: `##` pieces joined, CJK chars unspaced, English words spaced, `[...]` specials dropped."""
        if tokens is None:
            tokens = self.ids_to_tokens(ids)
        if self._token_translate_inv:
            tokens = [self._token_translate_inv.get(t, t) for t in tokens]
        text = ""
        for token in tokens:
            if token[:1] == "[" and token[-1:] == "]":
                continue
            if token.startswith("##"):
                text += token[2:]
            elif len(token) == 1 and is_cjk(token):
                text += token
            elif len(token) == 1 and is_punctuation(token):
                text += token + " "
            elif text and is_cjk(text[-1]):
                text += token
            else:
                text += " " + token
        text = _SPACES.sub(" ", text)
        text = _CONTRACTION.sub(r"'\1 ", text)
        text = _NO_SPACE_AFTER.sub(r"\1", text)
        text = _DECIMAL.sub(r"\1\2", text)
        return text.strip()


class _Table(dict):
    """`str.translate` table filled on first use of each char."""

    def __init__(self, form: Callable[[str], str]) -> None:
        super().__init__()
        self._form = form

    def __missing__(self, code: int) -> str:
        value = self[code] = self._form(chr(code))
        return value
