"""Pictures of the attention masks that turn the one Transformer into each application (matplotlib, Agg canvas)."""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np

from bert4k import masks
from bert4k.objectives import sample_perm_ranks


def example_tokens(text: str | int | Sequence[str], target: str | None = None,
                   num_pad: int = 1) -> tuple[list[str], np.ndarray]:
    """Tokens and unilm segment ids for a picture.

    `text` is a string (one token per non-space character, between [CLS] and [SEP]), a token count, or a token
    list. With `target`, the pair is `[CLS] text [SEP] target [SEP]` and the target is segment 1; otherwise the
    second half of the tokens plays the target. `num_pad` [PAD] tokens are appended.
    """
    if isinstance(text, int):
        if text < 1:
            raise ValueError(f"token count must be ≥ 1, got {text}")
        tokens = [str(i) for i in range(text)]
    elif isinstance(text, str):
        tokens = ["[CLS]", *(c for c in text if not c.isspace()), "[SEP]"]
    else:
        tokens = list(text)
    if not tokens:
        raise ValueError("no tokens to draw")
    if target is None:
        segments = [0] * ((len(tokens) + 1) // 2) + [1] * (len(tokens) // 2)
    else:
        target_tokens = [c for c in target if not c.isspace()] + ["[SEP]"]
        segments = [0] * len(tokens) + [1] * len(target_tokens)
        tokens += target_tokens
    return tokens + ["[PAD]"] * num_pad, np.array(segments + [0] * num_pad, dtype="int32")


def application_masks(tokens: Sequence[str], segments, seed: int = 0) -> dict[str, np.ndarray]:
    """The `[n, n]` masks of encoder, mlm, lm, unilm and the `[2n, 2n]` two-stream plm mask, plus the plm ranks."""
    ids = np.array([[0 if t == "[PAD]" else 1 for t in tokens]], dtype="int32")
    segments = np.asarray(segments, dtype="int32")[None]
    ranks = sample_perm_ranks(ids, seed)
    out = {app: np.asarray(masks.application_mask(app, ids, segments, ranks))[0] for app in masks.APPLICATIONS}
    out["ranks"] = ranks[0]
    return out


@functools.cache
def _font_covering(chars: str):
    """A font file that has glyphs for all `chars` (None if no installed font does)."""
    from matplotlib import font_manager, ft2font

    default = font_manager.findfont(font_manager.FontProperties())
    paths = [default] + [f.fname for f in font_manager.fontManager.ttflist
                         if f.fname != default and "LastResort" not in f.fname]  # placeholder boxes, not glyphs
    for path in paths:
        try:
            charmap = ft2font.FT2Font(path).get_charmap()
        except (OSError, RuntimeError):
            continue
        if all(ord(c) in charmap for c in chars):
            return path
    return None


def _labels(tokens: Sequence[str]):
    """Tick labels and a font that can draw them; tokens without glyphs become `#position`."""
    from matplotlib.font_manager import FontProperties

    chars = "".join(sorted({c for t in tokens for c in t}))
    path = _font_covering(chars)
    if path is not None:
        return list(tokens), FontProperties(fname=path), False
    labels = [t if _font_covering("".join(sorted(set(t)))) else f"#{i}" for i, t in enumerate(tokens)]
    return labels, None, True


def _draw(ax, mask: np.ndarray, xlabels, ylabels, font, title: str) -> None:
    from matplotlib.colors import ListedColormap

    ax.imshow(mask.astype(int), cmap=ListedColormap(["#f4f4f4", "#2b6cb0"]), vmin=0, vmax=1)
    n_rows, n_cols = mask.shape
    ax.set_xticks(range(n_cols))
    ax.set_yticks(range(n_rows))
    ax.set_xticklabels(xlabels, rotation=90, fontproperties=font, fontsize=8)
    ax.set_yticklabels(ylabels, fontproperties=font, fontsize=8)
    ax.set_xticks(np.arange(-0.5, n_cols), minor=True)
    ax.set_yticks(np.arange(-0.5, n_rows), minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("key j (attended)")
    ax.set_ylabel("query i")
    ax.set_title(title, fontsize=10)


def plot_application_masks(text: str | int | Sequence[str] = "北京欢迎你", path: str | os.PathLike = "masks.png",
                           target: str | None = None, num_pad: int = 1, seed: int = 0) -> str:
    """Draw the masks of the five applications for an example input and save a PNG; returns the path.

    Panels: encoder, mlm, lm, unilm (source = segment 0, target = segment 1) and plm as the single `[2n, 2n]`
    mask over `[content ; query]` positions (a random factorisation order drawn with `seed`). Blue = may attend.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg

    tokens, segments = example_tokens(text, target, num_pad)
    m = application_masks(tokens, segments, seed)
    labels, font, fallback = _labels(tokens)
    n, ranks = len(tokens), m["ranks"]

    fig = Figure(figsize=(15, 10.5), layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1.25])
    titles = {
        "encoder": "encoder: every non-padding key",
        "mlm": "mlm: same mask, MLM head",
        "lm": "lm: keys j ≤ i",
        "unilm": "unilm: source sees source; target sees\nsource + earlier target (c = cumsum(segment))",
    }
    for k, app in enumerate(("encoder", "mlm", "lm")):
        _draw(fig.add_subplot(grid[0, k]), m[app], labels, labels, font, titles[app])
    seg_labels = [t if tok == "[PAD]" else f"{t} ({'src' if s == 0 else 'tgt'})"
                  for t, tok, s in zip(labels, tokens, segments)]
    ax = fig.add_subplot(grid[1, 0])
    _draw(ax, m["unilm"], labels, seg_labels, font, titles["unilm"])
    boundary = int(np.argmax(segments == 1)) if (segments == 1).any() else n
    for line in (ax.axvline, ax.axhline):
        line(boundary - 0.5, color="#c53030", linewidth=1.5)

    order = [labels[i] for i in np.argsort(ranks) if tokens[i] != "[PAD]"]
    plm_labels = [f"{t} r{r}" for t, r in zip(labels, ranks)]
    ax = fig.add_subplot(grid[1, 1:])
    _draw(ax, m["plm"], [f"c:{t}" for t in labels] + [f"q:{t}" for t in labels],
          [f"content {t}" for t in plm_labels] + [f"query {t}" for t in plm_labels], font,
          "plm, one [2n, 2n] mask over [content ; query]: content i sees r[j] ≤ r[i]; query i sees r[j] < r[i]"
          " and itself\norder: " + " → ".join(order))
    for line in (ax.axvline, ax.axhline):
        line(n - 0.5, color="#c53030", linewidth=1.5)

    note = "one Transformer, five applications: blue = query i may attend key j"
    if fallback:
        note += "   (no installed font has these glyphs: such tokens are shown as #position)"
    fig.suptitle(note, fontsize=12)
    path = os.fspath(path)
    fig.savefig(path, dpi=110)
    return path
