"""The one Transformer stack. BERT, RoBERTa, GPT-2, GPT2-ML and ALBERT are configurations of it, and the five
applications (encoder, mlm, lm, unilm, plm) are masks fed to it plus at most a head."""
from __future__ import annotations

import keras
from keras import ops

from bert4k import masks
from bert4k.config import TransformerConfig
from bert4k.layers.activations import get_activation
from bert4k.layers.block import TransformerBlock
from bert4k.layers.embeddings import BiasAdd, HierarchicalPositionEmbedding, TokenEmbedding
from bert4k.layers.initializers import truncated_normal
from bert4k.layers.linear_attention import application_kind, linear_mask
from bert4k.layers.norms import LayerNorm
from bert4k.layers.structural import AttentionMask, OutputMask, PaddingMask, PositionIds, QueryStream, RestrictMask
from bert4k.models import condition
from bert4k.models.functional import FunctionalModel
from bert4k.models.input_checks import Limit
from bert4k.models.python_inputs import as_input_arrays

HEAD_APPLICATIONS = ("mlm", "lm", "unilm", "plm")


def _activation_name(value, default: str = "softmax") -> str:
    """`with_mlm=True` (or an lm/unilm/plm head without `with_mlm`) → softmax; a string names the activation."""
    return value if isinstance(value, str) else default


def _alpha(hierarchical_position: bool | float) -> float:
    """`hierarchical_position=True` → bert4keras' alpha 0.4; a number is alpha itself."""
    return 0.4 if hierarchical_position is True else float(hierarchical_position)


def _attention_options(attention: str, options: dict | None, cfg: TransformerConfig) -> dict | None:
    """The synthesizers' fixed length defaults to the model's maximum position."""
    if attention.startswith("synthesizer_"):
        return {"max_length": cfg.max_position_embeddings, **(options or {})}
    return options


@keras.saving.register_keras_serializable("bert4k")
class Transformer(FunctionalModel):
    """A functional Keras model over one Transformer stack.

    Inputs: `token_ids` (`[batch, seq]`), then `segment_ids` when the config has token types or the application is
    `unilm`, then with `padding_mask=True` a `padding_mask` (`[batch, seq]` bool or 0/1, True = real token;
    `None` or absent: `token_ids != pad_token_id`, and nothing is padding when `pad_token_id < 0`), then with
    `attention_mask="input"` a `[batch, seq, seq]` mask, then `perm_ranks` for `plm`, then the condition of the conditional
    LayerNorms: with `layer_norm_cond=k` (int) a vector `[batch, k]`; with `layer_norm_cond=condition_model` (a
    `keras.Model` whose output is `[batch, k]`, e.g. a label embedding) that model's inputs, computed inside.
    Outputs follow bert4keras: the sequence output; with `with_pool` only the pooled output; with an MLM/LM head only
    the head's distribution; with both `[pooled, head]`. `logits=True` returns head logits instead of probabilities.
    `attention="linear"` uses linear attention (φ = elu + 1, never n×n) in every block: encoder, mlm, lm, unilm.
    `attention_mask`: a user's mask restricting the application's (`"input"`, or `fn(token_ids)` → bool
    `[batch, seq, seq]`, e.g. `lambda ids: bert4k.masks.sliding_window_mask(ids, 2)`; a function is saved in
    `.keras` only if it is registered serializable). The outputs carry the padding as their Keras mask.
    `attention="talking_heads"` / `"synthesizer_dense" | "synthesizer_random" | "synthesizer_factorized"`: see
    `bert4k.layers.talking_heads` / `bert4k.layers.synthesizer`, settings in `attention_options` (the synthesizers'
    fixed `max_length` defaults to `max_position_embeddings`).
    `recompute=True` (bert4keras' name) recomputes each block's activations in the backward pass instead of keeping
    them (gradient checkpointing: less memory for long sequences, one more forward pass per step).
    `block_intermediates=True`: each block's node in the graph also outputs the tensors inside it
    (`bert4k.layers.block.INTERMEDIATES`, from the same pass), so `get_output_at(i)[k]` reaches them (the bert4keras
    compatibility layer's per-sub-layer views).
    `hierarchical_position=True` (or alpha, default 0.4) lets a table of n learned positions embed inputs up to n²
    long (bert4keras' hierarchical decomposition, `HierarchicalPositionEmbedding`); without it, inputs longer than
    `max_position_embeddings` are refused.
    """

    def __init__(self, config: TransformerConfig | dict, application: str = "encoder", with_pool: bool = False,
                 with_mlm: bool | str = False, logits: bool = False, mask_token_id: int = 103,
                 layer_norm_cond: int | keras.Model | None = None, layer_norm_cond_hidden_size: int | None = None,
                 layer_norm_cond_hidden_act: str = "linear", family: str = "bert", dtype=None, attention: str = "softmax",
                 attention_options: dict | None = None, padding_mask: bool = False, attention_mask=None,
                 recompute: bool = False, hierarchical_position: bool | float = False,
                 block_intermediates: bool = False, **kwargs):
        if isinstance(config, dict):
            config = TransformerConfig.from_dict(config)
        if isinstance(attention_mask, dict):
            attention_mask = keras.saving.deserialize_keras_object(attention_mask)
        if application not in masks.APPLICATIONS:
            raise ValueError(f"unknown application {application!r}; expected one of {masks.APPLICATIONS}")
        linear_kind = application_kind(application) if attention == "linear" else None
        cfg = config
        head_activation = "linear" if logits else _activation_name(with_mlm)
        has_head = bool(with_mlm) or application in HEAD_APPLICATIONS
        use_segments = cfg.type_vocab_size > 0 or application == "unilm"
        condition.check_model_kwargs(type(self).__name__, kwargs)
        layer_norm_cond, self.condition_model, cond_dim, cond_size = condition.resolve(layer_norm_cond,
                                                                                       layer_norm_cond_hidden_size)

        # === Layers ===
        embed_dim = cfg.embedding_size or cfg.hidden_size
        init = cfg.initializer_range
        self.token_embedding = TokenEmbedding(cfg.vocab_size, embed_dim, embeddings_initializer=truncated_normal(init),
                                              name="Embedding-Token", dtype=dtype)
        self.segment_embedding = (
            keras.layers.Embedding(cfg.type_vocab_size, embed_dim, embeddings_initializer=truncated_normal(init),
                                   name="Embedding-Segment", dtype=dtype) if cfg.type_vocab_size > 0 else None)
        position_kind, position_args = ((keras.layers.Embedding, {}) if not hierarchical_position else
                                        (HierarchicalPositionEmbedding, {"alpha": _alpha(hierarchical_position)}))
        self.position_embedding = position_kind(
            cfg.max_position_embeddings, embed_dim, **position_args,
            embeddings_initializer=truncated_normal(init), name="Embedding-Position", dtype=dtype)
        self.position_ids = PositionIds(cfg.position_offset, cfg.pad_token_id, name="Position-Ids")
        self.embedding_norm = (LayerNorm(cfg.layer_norm_eps, cond_size=cond_size, name="Embedding-Norm", dtype=dtype)
                               if cfg.embedding_norm else None)
        self.embedding_dropout = keras.layers.Dropout(cfg.hidden_dropout_prob, name="Embedding-Dropout", dtype=dtype)
        self.embedding_mapping = (
            keras.layers.Dense(cfg.hidden_size, kernel_initializer=truncated_normal(init), name="Embedding-Mapping",
                               dtype=dtype) if embed_dim != cfg.hidden_size else None)
        block_args = dict(heads=cfg.num_attention_heads, head_size=cfg.head_size,
                          intermediate_size=cfg.intermediate_size, key_size=cfg.key_size, activation=cfg.hidden_act,
                          norm_position=cfg.norm_position, layer_norm_eps=cfg.layer_norm_eps,
                          dropout=cfg.hidden_dropout_prob, attention_dropout=cfg.attention_probs_dropout_prob,
                          initializer_range=init, cond_size=cond_size, attention=attention,
                          attention_options=_attention_options(attention, attention_options, cfg), recompute=recompute,
                          dtype=dtype)
        if cfg.shared_layers:
            shared = TransformerBlock(name="Transformer", **block_args)
            self.blocks = [shared] * cfg.num_hidden_layers
        else:
            self.blocks = [TransformerBlock(name=f"Transformer-{i}", **block_args)
                           for i in range(cfg.num_hidden_layers)]
        self.output_norm = (LayerNorm(cfg.layer_norm_eps, cond_size=cond_size, name="Output-Norm", dtype=dtype)
                            if cfg.final_norm else None)
        self.pooler = (keras.layers.Dense(cfg.hidden_size, activation="tanh", kernel_initializer=truncated_normal(init),
                                          name="Pooler-Dense", dtype=dtype) if with_pool else None)
        mlm_style = has_head and cfg.lm_head == "mlm"
        self.mlm_dense = (keras.layers.Dense(embed_dim, activation=get_activation(cfg.hidden_act),
                                             kernel_initializer=truncated_normal(init), name="MLM-Dense",
                                             dtype=dtype) if mlm_style else None)
        self.mlm_norm = (LayerNorm(cfg.layer_norm_eps, cond_size=cond_size, name="MLM-Norm", dtype=dtype)
                         if mlm_style else None)
        self.mlm_bias = BiasAdd(name="MLM-Bias", dtype=dtype) if mlm_style else None
        self.head_activation = (keras.layers.Activation(head_activation, name="MLM-Activation", dtype="float32")
                                if has_head else None)
        self.cond_dense = condition.dense(cond_dim, layer_norm_cond_hidden_size, layer_norm_cond_hidden_act, init,
                                          dtype)

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="Input-Token")
        inputs = [token_ids]
        segment_ids = perm_ranks = None
        if use_segments:
            segment_ids = keras.Input(shape=(None,), dtype="int32", name="Input-Segment")
            inputs.append(segment_ids)
        padding_input = user_mask_input = None
        if padding_mask:
            padding_input = keras.Input(shape=(None,), dtype="int32", name="Input-Padding-Mask", optional=True)
            inputs.append(padding_input)
        if attention_mask == "input":
            user_mask_input = keras.Input(shape=(None, None), dtype="int32", name="Input-Attention-Mask")
            inputs.append(user_mask_input)
        if application == "plm":
            perm_ranks = keras.Input(shape=(None,), dtype="int32", name="Input-PermRanks")
            inputs.append(perm_ranks)
        cond_sources, cond = condition.inputs(self.condition_model, cond_dim, self.cond_dense)
        inputs.extend(cond_sources)

        x = self.embed(token_ids, segment_ids, cond=cond)
        if application == "plm":
            query_ids = ops.full_like(token_ids, mask_token_id)
            query = self.embed(query_ids, segment_ids, positions=self.position_ids(token_ids), cond=cond)
            x = ops.concatenate([x, query], axis=1)
        padding = (PaddingMask(cfg.pad_token_id, name="Padding-Mask")(token_ids, padding_input)
                   if padding_mask or cfg.pad_token_id >= 0 else None)
        # softmax attention takes the causal structure as `causal=True` (fused kernel, no [b, n, n] mask)
        causal = application == "lm" and attention == "softmax"
        if linear_kind is not None:
            if padding_mask or attention_mask is not None:
                raise ValueError("attention='linear' takes its mask from token_ids only (no padding_mask / "
                                 "attention_mask)")
            mask = linear_mask(linear_kind, token_ids, segment_ids, cfg.pad_token_id)
        elif padding is None and (application in ("encoder", "mlm") or causal):
            mask = None
        else:
            mask = AttentionMask(application, cfg.pad_token_id, causal_in_attention=causal, name="Attention-Mask")(
                token_ids, segment_ids, perm_ranks, padding=padding)
        if attention_mask is not None and linear_kind is None:
            if mask is None:
                mask = ops.ones_like(token_ids, dtype="bool")[:, None, :]
            user_fn = None if attention_mask == "input" else attention_mask
            mask = RestrictMask(user_fn, name="Attention-Mask-User")(mask, token_ids, user_mask_input)
        for block in self.blocks:
            if block_intermediates:
                x = block(x, attention_mask=mask, cond=cond, causal=causal, intermediates=True)[0]
            else:
                x = block(x, attention_mask=mask, cond=cond, causal=causal)
        if self.output_norm is not None:
            x = self.output_norm(x, cond=cond)
        if application == "plm":
            x = QueryStream(name="PLM-QueryStream")(x)

        def with_mask(t, name):
            return t if padding is None else OutputMask(name=name)([t, padding])

        outputs = [with_mask(x, "Output-Mask")]
        if self.pooler is not None:
            outputs.append(self.pooler(x[:, 0]))
        if has_head:
            outputs.append(with_mask(self.head(x, cond), "Output-Mask-Head"))
        outputs = outputs[0] if len(outputs) == 1 else outputs[1] if len(outputs) == 2 else outputs[1:]
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.config = cfg
        self.application = application
        self.with_pool = with_pool
        self.with_mlm = with_mlm
        self.logits = logits
        self.mask_token_id = mask_token_id
        self.layer_norm_cond = layer_norm_cond
        self.layer_norm_cond_hidden_size = layer_norm_cond_hidden_size
        self.layer_norm_cond_hidden_act = layer_norm_cond_hidden_act
        self.use_segments = use_segments
        self.dtype_name = dtype
        self.family = family
        self.attention = attention
        self.padding_mask = padding_mask
        self.attention_mask = attention_mask
        self.attention_options = attention_options
        self.recompute = recompute
        self.hierarchical_position = hierarchical_position
        self.block_intermediates = block_intermediates

    def input_limits(self) -> dict[str, Limit]:
        cfg = self.config
        rows, what = cfg.max_position_embeddings, "max_position_embeddings"
        if self.hierarchical_position:
            rows, what = rows**2, "max_position_embeddings² (hierarchical_position)"
        positions = rows - cfg.position_offset  # RoBERTa: rows start at pad + 1
        limits = {"Input-Token": Limit(cfg.vocab_size, "vocab_size", positions, what)}
        if self.segment_embedding is not None:
            limits["Input-Segment"] = Limit(cfg.type_vocab_size, "type_vocab_size")
        return limits

    # --- pieces shared by the functional graph and the cached decoding step ---
    def embed(self, token_ids, segment_ids=None, positions=None, cond=None, training=None):
        """Token (+ segment) (+ position) embeddings, then norm, dropout and the ALBERT mapping."""
        x = self.token_embedding(token_ids)
        if self.segment_embedding is not None:
            segment_ids = ops.zeros_like(token_ids) if segment_ids is None else segment_ids
            x = x + self.segment_embedding(segment_ids)
        positions = self.position_ids(token_ids) if positions is None else positions
        x = x + self.position_embedding(positions)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x, cond=cond)
        x = self.embedding_dropout(x, training=training)
        if self.embedding_mapping is not None:
            x = self.embedding_mapping(x)
        return x

    def head(self, x, cond=None, activation: bool = True):
        """The tied MLM/LM head: (Dense → act → LayerNorm →) embeddingᵀ (+ bias) → activation.

        `activation=False` returns the logits whatever the model's output activation (used by decoding)."""
        if self.mlm_dense is not None:
            x = self.mlm_norm(self.mlm_dense(x), cond=cond)
        x = self.token_embedding(x, reverse=True)
        if self.mlm_bias is not None:
            x = self.mlm_bias(x)
        return self.head_activation(x) if activation else x

    def init_cache(self, batch: int, length: int) -> list:
        """Zeroed static caches for `length` positions, one per block (see `MultiHeadAttention.init_cache`)."""
        return [block.attention.init_cache(batch, length, block.compute_dtype) for block in self.blocks]

    def call_with_cache(self, token_ids, mask, cache, cache_index, segment_ids=None, positions=None, cond=None, *,
                        condition_vector=None, last_only: bool = False, logits: bool = False,
                        cache_in_place: bool = False):
        """The cached forward pass (the one decoding uses): new tokens over a static KV cache.

        `token_ids`: the new tokens `[batch, q]`; `mask`: `[batch, q, cache_len]` (linear attention: its mask
        structure, see `bert4k.layers.linear_attention.linear_mask`); `cache`: per-block `(k, v)` of shape
        `[batch * heads, cache_len, size]` (`init_cache`; linear attention: the running states `(S, Z)`); the new K/V are written
        at `cache_index`; `positions`: `[batch, q]` position ids; `cond`: the model's condition input(s) (the
        vector, or the condition model's inputs), or `condition_vector`: the vector already computed from them.
        `last_only`: the head runs on the last position only (`[batch, 1, vocab]`). `logits=True`: logits whatever the
        model's output activation (default: the model's own output). `cache_in_place`: write the cache in
        place (only for a cache the caller owns; see `bert4k.layers.kv_cache.write_cache`).
        Returns `(head_output, new_cache)`; the cache passed in is not modified unless `cache_in_place`.
        """
        if condition_vector is None:
            condition_vector = condition.vector(self.condition_model, self.cond_dense, cond)
        cond = condition_vector
        x = self.embed(token_ids, segment_ids, positions, cond=cond)
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache):
            x, layer_cache = block(x, attention_mask=mask, cond=cond, cache=layer_cache, cache_index=cache_index,
                                   cache_in_place=cache_in_place)
            new_cache.append(layer_cache)
        if last_only:
            x = x[:, -1:]
        if self.output_norm is not None:
            x = self.output_norm(x, cond=cond)
        return self.head(x, cond, activation=not logits), new_cache

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "config": self.config.to_dict(),
            "application": self.application,
            "with_pool": self.with_pool,
            "with_mlm": self.with_mlm,
            "logits": self.logits,
            "mask_token_id": self.mask_token_id,
            "layer_norm_cond": condition.config(self.layer_norm_cond, self.condition_model),
            "layer_norm_cond_hidden_size": self.layer_norm_cond_hidden_size,
            "layer_norm_cond_hidden_act": self.layer_norm_cond_hidden_act,
            "family": self.family,
            "attention": self.attention,
            "padding_mask": self.padding_mask,
            "attention_mask": (self.attention_mask if self.attention_mask in (None, "input") else
                               keras.saving.serialize_keras_object(self.attention_mask)),
            "attention_options": self.attention_options,
            "recompute": self.recompute,
            "hierarchical_position": self.hierarchical_position,
            "block_intermediates": self.block_intermediates,
            "dtype": self.dtype_name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)

    def predict(self, x, *args, **kwargs):
        """Keras' `predict`; inputs may also be nested Python lists (`[[token_ids], [segment_ids]]`)."""
        return super().predict(as_input_arrays(x, len(self.inputs)), *args, **kwargs)
