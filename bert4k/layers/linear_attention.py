"""Linear attention (Katharopoulos et al. 2020): φ(x) = elu(x) + 1 on queries and keys, no 1/√d, never n×n.

For query i and the application's mask m,

    out_i = Σ_j m_ij (φq_i·φk_j) v_j / Σ_j m_ij (φq_i·φk_j)

A boolean `[b, n, n]` mask cannot be evaluated in linear time, so the linear path takes the mask's *structure*
instead (`linear_mask`): `{kind: {"key_valid": bool [b, n], "segment_ids": int [b, n] (unilm only)}}` with kind
one of "bidirectional", "causal", "unilm" (the kind is the dict's key: Keras call arguments cannot mix strings and
tensors).

- bidirectional (encoder, mlm): φQ (Σ_j φk_j v_jᵀ) over the valid keys.
- causal (lm): prefix sums over keys, computed in chunks (inside a chunk a C×C masked product, across chunks the
  running sums), so memory is O(n·C + n/C·d²) instead of O(n²).
- unilm: source rows (c = 0, with c = cumsum(segment_ids)) use the source-only sums; target rows use the source sums
  plus the causal prefix over targets. This equals the mask `c[j] ≤ c[i]` for the UniLM layout: a source block
  (segment 0), then a target block (segment 1), then padding.

Every call also takes and returns the running state `(S, Z) = (Σ φk vᵀ [b, h, dk, dv], Σ φk [b, h, dk])` over the
keys seen so far, so decoding one token costs O(d²) per head and constant memory, whatever the prefix length.
There are no attention probabilities, so attention dropout does not apply in this mode.
"""
from __future__ import annotations

from keras import ops

KINDS = ("bidirectional", "causal", "unilm")
APPLICATION_KINDS = {"encoder": "bidirectional", "mlm": "bidirectional", "lm": "causal", "unilm": "unilm"}
CHUNK_SIZE = 64


def application_kind(application: str) -> str:
    """The linear-attention mask kind of an application; raises for those with no linear-time form (plm)."""
    if application not in APPLICATION_KINDS:
        raise ValueError(f"attention='linear' does not support application {application!r}: its mask has no "
                         f"linear-time form. Supported applications: {sorted(APPLICATION_KINDS)}")
    return APPLICATION_KINDS[application]


def linear_mask(kind: str, token_ids, segment_ids=None, pad_id: int = 0) -> dict:
    """The mask structure the linear path takes in place of a boolean `[b, n, n]` mask."""
    if kind not in KINDS:
        raise ValueError(f"unknown linear attention kind {kind!r}; expected one of {KINDS}")
    if kind == "unilm" and segment_ids is None:
        raise ValueError("linear attention kind 'unilm' needs segment_ids (0 = source, 1 = target)")
    fields = {"key_valid": ops.not_equal(token_ids, pad_id)}
    if kind == "unilm":
        fields["segment_ids"] = segment_ids
    return {kind: fields}


def initial_state(batch: int, heads: int, key_size: int, head_size: int, dtype: str = "float32"):
    """Empty running state `(S, Z)` for one attention layer (the linear counterpart of a KV cache)."""
    return (ops.zeros((batch, heads, key_size, head_size), dtype=dtype), ops.zeros((batch, heads, key_size), dtype=dtype))


def feature_map(x):
    """φ(x) = elu(x) + 1 (positive, so every normaliser is > 0 when a row sees any key)."""
    return ops.elu(x) + 1.0


def _safe_divide(num, den):
    """num / den, with rows that see no key at all (den = 0: padding only) giving 0 instead of NaN."""
    seen = den > 0
    return ops.where(ops.expand_dims(seen, -1), num / ops.expand_dims(ops.where(seen, den, 1.0), -1), 0.0)


def _sums(fk, v):
    """Σ_j φk_j v_jᵀ and Σ_j φk_j over the sequence axis: `[b, h, dk, dv]`, `[b, h, dk]`."""
    return ops.einsum("bnhd,bnhe->bhde", fk, v), ops.sum(fk, axis=1)


def _read(fq, s, z):
    """Numerator `[b, n, h, dv]` and normaliser `[b, n, h]` of every query against the sums (S, Z)."""
    return ops.einsum("bnhd,bhde->bnhe", fq, s), ops.einsum("bnhd,bhd->bnh", fq, z)


def _causal(fq, fk, v, chunk_size: int):
    """Inclusive causal prefix: numerator Σ_{j≤i} (φq_i·φk_j) v_j and normaliser, chunk by chunk."""
    batch, n, heads, dk = ops.shape(fq)[0], ops.shape(fq)[1], ops.shape(fq)[2], ops.shape(fq)[3]
    dv = ops.shape(v)[3]
    static_n = fq.shape[1]
    size = static_n if static_n is not None and static_n <= chunk_size else chunk_size
    pad = (-n) % size
    widths = [[0, 0], [0, pad], [0, 0], [0, 0]]
    fq, fk, v = (ops.pad(t, widths) for t in (fq, fk, v))
    chunks = (n + pad) // size
    fq = ops.reshape(fq, (batch, chunks, size, heads, dk))
    fk = ops.reshape(fk, (batch, chunks, size, heads, dk))
    v = ops.reshape(v, (batch, chunks, size, heads, dv))
    # Across chunks: the sums of all earlier chunks (exclusive prefix over chunks).
    s = ops.einsum("bmchd,bmche->bmhde", fk, v)
    z = ops.sum(fk, axis=2)
    s_before = ops.cumsum(s, axis=1) - s
    z_before = ops.cumsum(z, axis=1) - z
    num = ops.einsum("bmihd,bmhde->bmihe", fq, s_before)
    den = ops.einsum("bmihd,bmhd->bmih", fq, z_before)
    # Inside a chunk: a size×size lower-triangular product.
    lower = ops.tril(ops.ones((size, size), dtype=fq.dtype))
    scores = ops.einsum("bmihd,bmjhd->bmhij", fq, fk) * lower
    num = num + ops.einsum("bmhij,bmjhe->bmihe", scores, v)
    den = den + ops.transpose(ops.sum(scores, axis=-1), (0, 1, 3, 2))
    num = ops.reshape(num, (batch, chunks * size, heads, dv))[:, :n]
    den = ops.reshape(den, (batch, chunks * size, heads))[:, :n]
    return num, den


def linear_attention(q, k, v, linear_mask: dict, state=None, chunk_size: int = CHUNK_SIZE):
    """Linear attention of `q`, `k` (`[b, n, h, dk]`) and `v` (`[b, n, h, dv]`) under `linear_mask`.

    `state=(S, Z)` holds the sums over keys seen before this call (cached decoding); they are visible to every
    query here. Returns `(out [b, n, h, dv], new_state)`; math runs in float32, `out` has `q`'s dtype.
    """
    if not isinstance(linear_mask, dict) or len(linear_mask) != 1:
        raise ValueError("attention='linear' takes the mask structure {kind: {'key_valid', 'segment_ids'}} "
                         "(see bert4k.layers.linear_attention.linear_mask), not a boolean [batch, q, k] matrix: "
                         "a custom mask has no linear-time form")
    (kind, fields), = linear_mask.items()
    if kind not in KINDS:
        raise ValueError(f"unknown linear attention kind {kind!r}; expected one of {KINDS}")
    dtype = q.dtype
    valid = ops.cast(fields["key_valid"], "float32")[:, :, None, None]
    fq = feature_map(ops.cast(q, "float32"))
    fk = feature_map(ops.cast(k, "float32")) * valid
    v = ops.cast(v, "float32")
    if state is None:
        s0 = z0 = None
    else:
        s0, z0 = (ops.cast(t, "float32") for t in state)
    if kind == "bidirectional":
        s, z = _sums(fk, v)
        s, z = (s, z) if s0 is None else (s0 + s, z0 + z)
        num, den = _read(fq, s, z)
        new_state = (s, z)
    elif kind == "causal":
        num, den = _causal(fq, fk, v, chunk_size)
        s, z = _sums(fk, v)
        if s0 is not None:
            num0, den0 = _read(fq, s0, z0)
            num, den = num + num0, den + den0
            s, z = s0 + s, z0 + z
        new_state = (s, z)
    else:
        if fields.get("segment_ids") is None:
            raise ValueError("linear attention kind 'unilm' needs segment_ids in its mask structure")
        c = ops.cumsum(ops.cast(fields["segment_ids"], "int32"), axis=1)
        target = ops.cast(c > 0, "float32")[:, :, None, None]
        fk_source, fk_target = fk * (1.0 - target), fk * target
        s, z = _sums(fk_source, v)
        s, z = (s, z) if s0 is None else (s0 + s, z0 + z)
        num, den = _read(fq, s, z)
        num_t, den_t = _causal(fq, fk_target, v, chunk_size)
        num = num + num_t * target
        den = den + den_t * target[..., 0]
        s_t, z_t = _sums(fk_target, v)
        new_state = (s + s_t, z + z_t)
    return ops.cast(_safe_divide(num, den), dtype), new_state
