"""Attention masks as data: pure `keras.ops` functions returning boolean `[batch, q, k]` (True = may attend).

Every application of the one Transformer is one of these masks. They combine with `&` / `|`
(`ops.logical_and`, `ops.logical_or`), so a new pattern is a new function, not a new layer. A user's mask reaches
a model through `build_transformer_model(..., attention_mask=fn)` (`fn(token_ids)` → such a mask) or
`attention_mask="input"` (an extra `[batch, q, k]` input); it restricts the application's mask.

Padding is data: every function takes `padding` (`[batch, n]`, True = real token), used instead of
`token_ids != pad_id` when given.
"""
from __future__ import annotations

from keras import ops


def key_padding_mask(token_ids, pad_id: int = 0, padding=None):
    """`[batch, 1, k]`: key j is not padding (`padding[:, j]` when given, else `token_ids[:, j] != pad_id`)."""
    real = ops.not_equal(token_ids, pad_id) if padding is None else ops.cast(padding, "bool")
    return ops.expand_dims(real, 1)


def _rows(token_ids):
    """`[1, n, 1]` query index and `[1, 1, n]` key index."""
    idx = ops.arange(ops.shape(token_ids)[1])
    return idx[None, :, None], idx[None, None, :]


def bidirectional_mask(token_ids, pad_id: int = 0, padding=None):
    """encoder / mlm: every position sees every non-padding key."""
    n = ops.shape(token_ids)[1]
    return ops.broadcast_to(key_padding_mask(token_ids, pad_id, padding), (ops.shape(token_ids)[0], n, n))


def causal_mask(token_ids, pad_id: int = 0, padding=None):
    """lm: query i sees keys j ≤ i that are not padding."""
    i, j = _rows(token_ids)
    return ops.logical_and(j <= i, key_padding_mask(token_ids, pad_id, padding))


def unilm_mask(token_ids, segment_ids, pad_id: int = 0, padding=None):
    """unilm: with c = cumsum(segment_ids), query i sees key j iff c[j] ≤ c[i] (and j is not padding).

    Source tokens (segment 0) see the whole source; target tokens (segment 1) see the source and earlier targets.
    """
    c = ops.cumsum(ops.cast(segment_ids, "int32"), axis=1)
    allowed = ops.expand_dims(c, 1) <= ops.expand_dims(c, 2)
    return ops.logical_and(allowed, key_padding_mask(token_ids, pad_id, padding))


def permutation_content_mask(token_ids, perm_ranks, pad_id: int = 0, padding=None):
    """plm content stream: query i sees key j iff rank[j] ≤ rank[i]."""
    r = ops.cast(perm_ranks, "int32")
    return ops.logical_and(ops.expand_dims(r, 1) <= ops.expand_dims(r, 2), key_padding_mask(token_ids, pad_id, padding))


def permutation_query_mask(token_ids, perm_ranks, pad_id: int = 0, padding=None):
    """plm query stream: query i sees content key j iff rank[j] < rank[i] (never its own token)."""
    r = ops.cast(perm_ranks, "int32")
    return ops.logical_and(ops.expand_dims(r, 1) < ops.expand_dims(r, 2), key_padding_mask(token_ids, pad_id, padding))


def two_stream_mask(token_ids, perm_ranks, pad_id: int = 0, padding=None):
    """`[batch, 2n, 2n]` mask over `[content ; query]` positions for the single-stack permutation LM.

    Content rows see content columns by `permutation_content_mask` and no query column; query rows see content
    columns by `permutation_query_mask` and their own query column only.
    """
    batch, n = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
    content = permutation_content_mask(token_ids, perm_ranks, pad_id, padding)
    query = permutation_query_mask(token_ids, perm_ranks, pad_id, padding)
    eye = ops.broadcast_to(ops.expand_dims(ops.eye(n, dtype="bool"), 0), (batch, n, n))
    top = ops.concatenate([content, ops.zeros_like(eye)], axis=2)
    bottom = ops.concatenate([query, eye], axis=2)
    return ops.concatenate([top, bottom], axis=1)


def sliding_window_mask(token_ids, window: int, global_mask=None, pad_id: int = 0, padding=None):
    """Longformer-style: query i sees keys with |i − j| ≤ window; `global_mask` (`[batch, n]` bool)
    marks tokens that see everything and that everything sees."""
    i, j = _rows(token_ids)
    local = ops.abs(i - j) <= window
    if global_mask is not None:
        g = ops.cast(global_mask, "bool")
        local = ops.logical_or(local, ops.logical_or(ops.expand_dims(g, 1), ops.expand_dims(g, 2)))
    return ops.logical_and(local, key_padding_mask(token_ids, pad_id, padding))


APPLICATIONS = ("encoder", "mlm", "lm", "unilm", "plm")


def application_mask(application: str, token_ids, segment_ids=None, perm_ranks=None, pad_id: int = 0, padding=None):
    """The mask an application uses (for `plm`, the two-stream `[batch, 2n, 2n]` mask)."""
    if application in ("encoder", "mlm"):
        return bidirectional_mask(token_ids, pad_id, padding)
    if application == "lm":
        return causal_mask(token_ids, pad_id, padding)
    if application == "unilm":
        if segment_ids is None:
            raise ValueError("application 'unilm' needs segment_ids (0 = source, 1 = target)")
        return unilm_mask(token_ids, segment_ids, pad_id, padding)
    if application == "plm":
        if perm_ranks is None:
            raise ValueError("application 'plm' needs perm_ranks [batch, seq]")
        return two_stream_mask(token_ids, perm_ranks, pad_id, padding)
    raise ValueError(f"unknown application {application!r}; expected one of {APPLICATIONS}")
