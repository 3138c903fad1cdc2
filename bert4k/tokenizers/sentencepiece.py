"""SentencePiece tokenizer with the bert4keras API (T5 conventions by default)."""
from __future__ import annotations

import bisect
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import sentencepiece as spm

from .wordpiece import TokenizerBase


def load_keep_tokens(keep_tokens: Sequence[int] | str | os.PathLike) -> list[int]:
    """A keep-tokens list, given as a list or as the path of a JSON list of ints."""
    if isinstance(keep_tokens, (str, os.PathLike)):
        if not os.path.isfile(keep_tokens):
            raise FileNotFoundError(f"keep_tokens file not found: {os.fspath(keep_tokens)!r}")
        with open(keep_tokens, encoding="utf-8") as f:
            keep_tokens = json.load(f)
    if not all(isinstance(i, int) and i >= 0 for i in keep_tokens):
        raise ValueError("keep_tokens must be a list of non-negative ints")
    return list(keep_tokens)


_SURROGATES = re.compile("[\ud800-\udfff]")


def _drop_surrogates(text: str) -> tuple[str, list[int] | None]:
    """`text` without lone surrogates (which SentencePiece cannot take), and for each kept char its index in `text`
    (None when nothing was dropped)."""
    if not _SURROGATES.search(text):
        return text, None
    where = [i for i, ch in enumerate(text) if not "\ud800" <= ch <= "\udfff"]
    return "".join(text[i] for i in where), where


class SpTokenizer(TokenizerBase):
    """Tokenizer over a SentencePiece `.model`: token ids are the model's piece ids.

    By default it follows T5: no start token, `</s>` appended, pad id = the model's
    `<pad>` (0 for mT5).  `keep_tokens` does not change tokenization; it is carried for
    the model builder: entry `i` is the row of the original checkpoint's embedding
    matrix that id `i` of this (cut-down) `.model` uses, e.g.
    `build_transformer_model(..., keep_tokens=tokenizer.keep_tokens)`.

    Same contract as the WordPiece `Tokenizer`: any `str` is accepted (lone surrogates are dropped, as the
    WordPiece cleaner does), `maxlen` is respected, and `rematch` maps tokens back to the chars of the text.
    """

    def __init__(
        self,
        sp_model_path: str | os.PathLike,
        token_start: str | None = None,
        token_end: str | None = "</s>",
        pre_tokenize: Callable[[str], Iterable[str]] | None = None,
        token_translate: Mapping[str, str] | None = None,
        keep_tokens: Sequence[int] | str | os.PathLike | None = None,
    ) -> None:
        super().__init__(token_start, token_end, pre_tokenize, token_translate)
        if not os.path.isfile(sp_model_path):
            raise FileNotFoundError(f"SentencePiece model not found: {os.fspath(sp_model_path)!r}")
        self.sp_model = spm.SentencePieceProcessor(model_file=os.fspath(sp_model_path))
        self._vocab_size = self.sp_model.get_piece_size()
        pad_id, unk_id = self.sp_model.pad_id(), self.sp_model.unk_id()
        self._token_pad = self.sp_model.id_to_piece(pad_id) if pad_id >= 0 else None
        self._token_unk = self.sp_model.id_to_piece(unk_id) if unk_id >= 0 else None
        self._set_special_ids(repr(os.fspath(sp_model_path)))
        self.keep_tokens = None if keep_tokens is None else load_keep_tokens(keep_tokens)
        if self.keep_tokens is not None and len(self.keep_tokens) < self._vocab_size:
            raise ValueError(
                f"keep_tokens has {len(self.keep_tokens)} entries but the model has {self._vocab_size} pieces"
            )

    def _lookup(self, token: str) -> int | None:
        i = self.sp_model.piece_to_id(token)
        return i if i != self.sp_model.unk_id() or token == self._token_unk else None

    def token_to_id(self, token: str) -> int:
        """Piece id of `token` (the unk id for an unknown piece)."""
        return self.sp_model.piece_to_id(token)

    def id_to_token(self, i: int) -> str:
        """Piece of id `i`; `""` for ids past the model's pieces (a larger model vocab)."""
        return self.sp_model.id_to_piece(i) if 0 <= i < self._vocab_size else ""

    def _source(self, text: str) -> tuple[str, list[int] | None]:
        """The string SentencePiece encodes (surrogates dropped; pre-tokenized words joined by spaces), and for
        each of its chars the index of the char of `text` it comes from (-1: none; None: the identity)."""
        clean, where = _drop_surrogates(text)
        if self._pre_tokenize is None:
            return clean, where
        words = [w for w in self._pre_tokenize(clean) if w]
        position: list[int] = []
        start = 0
        for k, word in enumerate(words):
            if k:
                position.append(-1)
            found = clean.find(word, start)
            if found < 0:
                position.extend([-1] * len(word))
                continue
            position.extend(range(found, found + len(word)))
            start = found + len(word)
        if where is not None:
            position = [where[i] if i >= 0 else -1 for i in position]
        return " ".join(words), position

    def _tokenize(self, text: str) -> list[str]:
        return self.sp_model.encode(self._source(text)[0], out_type=str)

    def _tokenize_with_spans(self, text: str) -> tuple[list[str], list[tuple[int, int] | None]]:
        """Pieces and, for each, the `(start, end)` chars of `text` it covers (None for an inserted `▁`)."""
        source, position = self._source(text)
        byte_offsets = [0]
        for ch in source:
            byte_offsets.append(byte_offsets[-1] + len(ch.encode("utf-8")))
        pieces, spans = [], []
        for piece in self.sp_model.encode(source, out_type="proto").pieces:
            first, last = bisect.bisect_left(byte_offsets, piece.begin), bisect.bisect_left(byte_offsets, piece.end)
            chars = [c if position is None else position[c] for c in range(first, last)]
            chars = [c for c in chars if c >= 0]
            pieces.append(piece.piece)
            spans.append((min(chars), max(chars) + 1) if chars else None)
        return pieces, spans

    def rematch(self, text: str, tokens: Sequence[str]) -> list[list[int]]:
        """For each token, the indices of the chars of `text` it covers (`[]` for added tokens and a `▁` that
        SentencePiece inserted). `tokens` is the output of `tokenize(text)`, possibly truncated."""
        ref_tokens, spans = self._tokenize_with_spans(text)
        if self._token_translate:
            ref_tokens = [self._token_translate.get(t, t) for t in ref_tokens]
        return self._align(tokens, ref_tokens, spans)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` as SentencePiece decodes it (control pieces such as `</s>`/`<pad>` dropped)."""
        ids = [int(i) for i in ids if 0 <= int(i) < self._vocab_size]
        if self._token_translate_inv:
            ids = [self.token_to_id(self._token_translate_inv.get(p, p)) for p in self.ids_to_tokens(ids)]
        return self.sp_model.decode(ids)
