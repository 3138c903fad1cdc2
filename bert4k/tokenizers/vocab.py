"""WordPiece vocabulary files and the character classes BERT tokenization uses."""
from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Mapping

# CJK Unified Ideographs and extensions A-E plus the compatibility blocks, as in
# Google's BERT.  (HF `tokenizers` writes 0x2B920 for the start of extension E,
# a typo; see `Tokenizer` for how that case is handled.)
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def is_cjk(ch: str) -> bool:
    """True for a CJK ideograph (BERT puts each one in a token of its own)."""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def is_punctuation(ch: str) -> bool:
    """BERT's punctuation: every non-alphanumeric printable ASCII char, or Unicode category P*."""
    code = ord(ch)
    if code < 128:
        return 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126
    return unicodedata.category(ch).startswith("P")


def stem(token: str) -> str:
    """The token without its `##` continuation prefix."""
    return token.removeprefix("##")


def load_vocab(
    dict_path: str | os.PathLike,
    encoding: str = "utf-8",
    simplified: bool = False,
    startswith: Iterable[str] | None = None,
) -> dict[str, int] | tuple[dict[str, int], list[int]]:
    """Read a WordPiece vocab file (one token a line; id = line number) into `{token: id}`.

    Trailing whitespace is stripped from each line, as Hugging Face `tokenizers` does.

    With `simplified=True`, return `(token_dict, keep_tokens)` as bert4keras does: the
    `startswith` tokens come first, then every other token in file order except those
    longer than one character whose stem (the token without `##`) contains a CJK
    character or punctuation -- e.g. `##的`, `[unused1]`, `##.`; `[...]` specials not
    listed in `startswith` go too.  `keep_tokens[new_id]` is the token's original id,
    the row to keep from a checkpoint's embedding matrix.
    """
    path = dict_path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vocab file not found: {os.fspath(path)!r}")
    with open(path, encoding=encoding) as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    token_dict = {line.rstrip(): i for i, line in enumerate(lines)}
    if not simplified:
        return token_dict

    new_dict: dict[str, int] = {}
    keep_tokens: list[int] = []
    for token in startswith or ():
        if token not in token_dict:
            raise KeyError(f"startswith token {token!r} is not in {os.fspath(path)!r}")
        new_dict[token] = len(new_dict)
        keep_tokens.append(token_dict[token])
    for token, i in sorted(token_dict.items(), key=lambda kv: kv[1]):
        if token in new_dict:
            continue
        if len(token) > 1 and any(is_cjk(c) or is_punctuation(c) for c in stem(token)):
            continue
        new_dict[token] = len(new_dict)
        keep_tokens.append(i)
    return new_dict, keep_tokens


def save_vocab(path: str | os.PathLike, token_dict: Mapping[str, int], encoding: str = "utf-8") -> None:
    """Write `token_dict` as a vocab file, one token a line in id order."""
    with open(path, "w", encoding=encoding) as f:
        f.writelines(token + "\n" for token, _ in sorted(token_dict.items(), key=lambda kv: kv[1]))
