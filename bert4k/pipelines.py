"""Text in, text (or vectors) out: `fill_mask`, `encode` (sentence vectors) and `generate_text`, over any bert4k
model and its tokenizer."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POOLINGS = ("cls", "mean")


def _is_t5(model) -> bool:
    from bert4k.models.t5 import T5

    return isinstance(model, T5)


def _inputs(model, token_ids: np.ndarray, segment_ids: np.ndarray) -> list[np.ndarray]:
    if getattr(model, "layer_norm_cond", None):
        raise ValueError("this helper does not feed a LayerNorm condition; call model.predict with the condition")
    return [token_ids, segment_ids] if getattr(model, "use_segments", False) else [token_ids]


def _content(tokenizer, text: str) -> list[str]:
    """The tokens of `text` without the start/end tokens the tokenizer adds."""
    tokens = tokenizer.tokenize(text)
    start = int(tokenizer._token_start is not None)
    end = len(tokens) - int(tokenizer._token_end is not None)
    return tokens[start:end]


def mask_token_ids(tokenizer, text: str, mask: str = "[MASK]") -> list[int]:
    """Token ids of `text` where each `mask` string becomes the mask token, whatever the tokenizer's
    `special_tokens` setting."""
    mask_id = tokenizer.token_to_id(mask)
    if mask_id is None or tokenizer.id_to_token(mask_id) != mask:
        raise ValueError(f"fill_mask: {mask!r} is not in the tokenizer's vocabulary")
    tokens = [] if tokenizer._token_start is None else [tokenizer._token_start]
    for k, piece in enumerate(text.split(mask)):
        if k:
            tokens.append(mask)
        tokens.extend(_content(tokenizer, piece))
    if tokenizer._token_end is not None:
        tokens.append(tokenizer._token_end)
    return tokenizer.tokens_to_ids(tokens)


def fill_mask(model, tokenizer, text: str, top_k: int = 5, mask: str = "[MASK]") -> list[dict] | list[list[dict]]:
    """The `top_k` most likely tokens at each `[MASK]` of `text`.

    `model`: an MLM (`application="mlm"`, or `with_mlm=True`; probabilities or `logits=True`). Returns, for one
    mask, a list of `{"token", "id", "score", "text"}` (best first; `text` = the input with this token in place of
    the mask, other masks kept); for several masks, one such list per mask, each scored independently (as Hugging Face's pipeline).
    """
    if not (getattr(model, "application", None) == "mlm" or getattr(model, "with_mlm", False)):
        raise ValueError(f"fill_mask: needs a model with an MLM head (application='mlm' or with_mlm=True), got "
                         f"application={getattr(model, 'application', None)!r}")
    ids = mask_token_ids(tokenizer, text, mask)
    mask_id = tokenizer.token_to_id(mask)
    positions = [i for i, t in enumerate(ids) if t == mask_id]
    if not positions:
        raise ValueError(f"fill_mask: no {mask} in the text {text[:60]!r}")
    token_ids = np.asarray([ids], "int32")
    out = model.predict(_inputs(model, token_ids, np.zeros_like(token_ids)), verbose=0)
    out = np.asarray(out[-1] if isinstance(out, (list, tuple)) else out, "float64")[0]
    if getattr(model, "logits", False):
        out = np.exp(out - out.max(-1, keepdims=True))
        out /= out.sum(-1, keepdims=True)
    pieces = text.split(mask)
    results = []
    for k, p in enumerate(positions):
        best = np.argsort(-out[p], kind="stable")[:top_k]
        rows = []
        for i in best:
            token = tokenizer.id_to_token(int(i))
            filled = mask.join(pieces[:k + 1]) + token.removeprefix("##") + mask.join(pieces[k + 1:])
            rows.append({"token": token, "id": int(i), "score": float(out[p, i]), "text": filled})
        results.append(rows)
    return results[0] if len(results) == 1 else results


def encode(model, tokenizer, texts: str | Sequence[str], pooling: str = "cls", normalize: bool = False,
           maxlen: int | None = None, batch_size: int = 32) -> np.ndarray:
    """Sentence vectors `[n, hidden]` (`[hidden]` for one string) from an encoder's last hidden states.

    `pooling="cls"`: the first token's state; `"mean"`: the mean over the real tokens (what sentence-transformers'
    mean pooling computes). `normalize`: unit L2 norm.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"encode: pooling must be one of {POOLINGS}, got {pooling!r}")
    if getattr(model, "application", "encoder") != "encoder" or getattr(model, "with_mlm", False) or getattr(
            model, "with_pool", False) or _is_t5(model):
        raise ValueError("encode: needs an encoder returning hidden states (application='encoder', no head, no pool)")
    single = isinstance(texts, str)
    texts = [texts] if single else list(texts)
    vectors = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], maxlen=maxlen)
        hidden = np.asarray(model.predict(_inputs(model, batch["token_ids"], batch["segment_ids"]), verbose=0),
                            "float32")
        if pooling == "cls":
            vectors.append(hidden[:, 0])
        else:
            mask = batch["mask"][..., None].astype("float32")
            vectors.append((hidden * mask).sum(1) / np.maximum(mask.sum(1), 1.0))
    out = np.concatenate(vectors) if vectors else np.zeros((0, 0), "float32")
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out[0] if single else out


def generate_text(model, tokenizer, text: str | Sequence[str], max_new_tokens: int = 32, **kwargs) -> str | list[str]:
    """The model's continuation of `text` (LM), target for it (UniLM seq2seq) or output for it (T5), decoded.

    The prompt is the tokenized text: for `application="lm"` without its end token, so the model continues it;
    for `unilm` and T5 the whole encoded text is the source. Decoding stops at the tokenizer's end token (`[SEP]`,
    `</s>`). Other keyword arguments go to `bert4k.generate` (`method`, `num_beams`, `top_p`, `seed`, ...).
    A list of texts gives a list of strings.
    """
    from bert4k.generation import generate

    single = isinstance(text, str)
    texts = [text] if single else list(text)
    end_id = tokenizer._token_end_id
    kwargs.setdefault("stop_ids", end_id)
    application = getattr(model, "application", None)
    rows = [tokenizer.encode(t)[0] for t in texts]
    if _is_t5(model):
        inputs = rows
    elif application == "lm":
        inputs = [r[:-1] if tokenizer._token_end is not None else r for r in rows]
    elif application == "unilm":
        inputs = rows
    else:
        raise ValueError(f"generate_text: needs an lm or unilm Transformer or a T5, got application={application!r}")
    if kwargs.get("num_samples", 1) != 1:
        raise ValueError("generate_text: one output per text (num_samples=1); call bert4k.generate for more")
    new_ids = generate(model, inputs, max_new_tokens, **kwargs)
    outputs = []
    for row in new_ids:
        row = [int(i) for i in row]
        if end_id is not None and end_id in row:
            row = row[:row.index(end_id)]
        outputs.append(tokenizer.decode(row))
    return outputs[0] if single else outputs
