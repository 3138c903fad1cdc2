"""Decoding adapter for the T5 encoder–decoder (`bert4k.models.t5.T5`): the encoder and the cross-attention K/V run
once per call; decoder self-attention uses a static cache written at the step index."""
from __future__ import annotations

import math

import numpy as np
from keras import ops

from bert4k.generation.adapters import ModelAdapter, _rows_of, reorder_with_caches
from bert4k.generation.compile import compiled


class T5Adapter(ModelAdapter):
    """Decodes a `T5` model.

    Inputs: encoder token ids — a 2-D array (0 = padding, wherever it stands, exactly as the model reads it), a list
    of rows of any lengths (right-padded with 0), or one sequence; a model with a LayerNorm condition takes
    `(encoder_ids, cond)` (or a dict with keys `token_ids`, `cond`), `cond` as the model's condition input(s), one row
    per input row. The decoder starts from the config's `decoder_start_token_id` (0); the first logits are those
    after the start token. The state holds, per row, the decoder self-attention caches `[rows * heads, L, d_kv]`
    (`L` = `max_new_tokens` rounded up to `cache_block`, so nearby lengths reuse the compiled step), the
    cross-attention `(k, v)` of the encoder output, its padding mask and the condition vector, so beams and samples
    reorder them with the rest.
    """

    in_place_writes = True  # `step(..., in_place=True)` may write the self-attention caches in place

    def __init__(self, model, cache_block: int = 32):
        super().__init__(model)
        self.compute_dtype = model.decoder_blocks[0].compute_dtype
        self.pad_id = model.config.pad_token_id
        self.start_id = model.config.decoder_start_token_id
        self.cache_block = cache_block

    def _parse(self, inputs):
        """`(encoder ids [rows, len], condition input tensor(s) or None)`."""
        sources = self.model.inputs[2:]  # the condition inputs, after the encoder and decoder ids
        if not sources:
            return self._encoder_ids(inputs), None
        if isinstance(inputs, dict) and set(inputs) == {"token_ids", "cond"}:
            inputs = (inputs["token_ids"], inputs["cond"])
        if not (isinstance(inputs, tuple) and len(inputs) == 2):
            raise ValueError("generate: this T5 has a LayerNorm condition; pass (encoder_ids, cond) or "
                             "{'token_ids': ..., 'cond': ...}")
        ids, cond = self._encoder_ids(inputs[0]), inputs[1]
        values = [cond] if len(sources) == 1 else list(cond)
        if len(values) != len(sources):
            raise ValueError(f"generate: cond must hold {len(sources)} arrays (the condition model's inputs "
                             f"{[t.name for t in sources]}), got {len(values)}")
        tensors = []
        for value, source in zip(values, sources):
            value = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
            if value.shape[:1] != (len(ids),) or value.shape[1:] != tuple(source.shape[1:]):
                raise ValueError(f"generate: condition input {source.name} must have shape "
                                 f"{(len(ids), *source.shape[1:])}, got {value.shape}")
            tensors.append(ops.convert_to_tensor(value, dtype=source.dtype))
        return ids, tensors[0] if len(sources) == 1 else tensors

    def _encoder_ids(self, inputs) -> np.ndarray:
        rows = _rows_of(inputs, "encoder token_ids")
        if any(len(r) == 0 for r in rows):
            raise ValueError("generate: every T5 input row needs at least one token")
        ids = np.full((len(rows), max(len(r) for r in rows)), self.pad_id, "int32")
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
        return ids

    def context_ids(self, inputs) -> list:
        """The decoder start token (what HF's repetition penalty counts as already generated)."""
        return [np.array([self.start_id])] * len(self._parse(inputs)[0])

    def start(self, inputs, max_new_tokens: int):
        m = self.model
        encoder_ids, cond = self._parse(inputs)
        encoder_ids = ops.convert_to_tensor(encoder_ids)
        rows = int(encoder_ids.shape[0])
        length = int(math.ceil(max_new_tokens / self.cache_block) * self.cache_block)
        prefill = compiled(self, "prefill", lambda: self._prefill, jit=False, relaxed=True, direct=False)
        return prefill(encoder_ids, m.init_cache(rows, length), cond)

    def _prefill(self, encoder_ids, cache, cond):
        """Encoder, cross-attention K/V and the decoder start token, in one pass."""
        m = self.model
        cond_vector = m.condition_vector(cond)
        state = {"cache": cache, "context_cache": m.context_cache(m.encode(encoder_ids, cond=cond_vector)),
                 "context_mask": m.encoder_mask(encoder_ids)}
        if cond is not None:
            state["cond"] = cond_vector
        start_ids = ops.full((ops.shape(encoder_ids)[0], 1), self.start_id, "int32")
        return self._decode(state, start_ids, 0)

    def reorder(self, state, rows):
        heads = self.model.decoder_blocks[0].self_attention.heads
        return reorder_with_caches(state, rows, heads, caches=("cache", "context_cache"))

    def step(self, state, token_ids, index, in_place: bool = False):
        # The start token sits at decoder position 0, so the token generated at `index` goes to `index + 1`.
        return self._decode(state, token_ids, index + 1, in_place)

    def _decode(self, state, token_ids, position, in_place=False):
        logits, cache = self.model.decode_step(token_ids, state["cache"], position, state["context_cache"],
                                               state["context_mask"], condition_vector=state.get("cond"),
                                               cache_in_place=in_place)
        return ops.cast(logits[:, -1], "float32"), {**state, "cache": cache}
