"""SentencePiece tokenizer with the bert4keras API (T5 conventions by default)."""
from __future__ import annotations

import json
import os
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


class SpTokenizer(TokenizerBase):
    """Tokenizer over a SentencePiece `.model`: token ids are the model's piece ids.

    By default it follows T5: no start token, `</s>` appended, pad id = the model's
    `<pad>` (0 for mT5).  `keep_tokens` does not change tokenization; it is carried for
    the model builder: entry `i` is the row of the original checkpoint's embedding
    matrix that id `i` of this (cut-down) `.model` uses, e.g.
    `build_transformer_model(..., keep_tokens=tokenizer.keep_tokens)`.
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

    def _tokenize(self, text: str) -> list[str]:
        if self._pre_tokenize is not None:
            text = " ".join(self._pre_tokenize(text))
        return self.sp_model.encode(text, out_type=str)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` as SentencePiece decodes it (control pieces such as `</s>`/`<pad>` dropped)."""
        ids = [int(i) for i in ids if 0 <= int(i) < self._vocab_size]
        if self._token_translate_inv:
            ids = [self.token_to_id(self._token_translate_inv.get(p, p)) for p in self.ids_to_tokens(ids)]
        return self.sp_model.decode(ids)
