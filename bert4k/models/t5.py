"""T5 (1.0), T5.1.1 and mT5: the encoder–decoder model, with serving sub-models and a cached decoding step."""
from __future__ import annotations

import functools

import keras
from keras import ops

from bert4k.config import TransformerConfig
from bert4k.layers.embeddings import TokenEmbedding
from bert4k.layers.initializers import truncated_normal
from bert4k.layers.norms import RMSNorm
from bert4k.layers.structural import OutputMask, PaddingMask
from bert4k.layers.t5 import RelativePositionBias, T5AttentionMask, T5Block
from bert4k.models import condition
from bert4k.models.functional import FunctionalModel
from bert4k.models.input_checks import Limit
from bert4k.models.python_inputs import as_input_arrays

APPLICATIONS = ("encoder", "seq2seq")


@keras.saving.register_keras_serializable("bert4k")
class T5(FunctionalModel):
    """T5 encoder–decoder as one functional Keras model.

    Inputs: `[encoder_token_ids, decoder_token_ids]` (`[batch, len]` int; 0 = padding in the encoder and the start
    token of the decoder), then with `padding_mask=True` an encoder and a decoder padding mask (`[batch, len]` bool
    or 0/1, True = real token, as Hugging Face's `attention_mask` / `decoder_attention_mask`; each may be None or
    absent: the encoder's is then `encoder_token_ids != pad`, the decoder's all real), then the condition of the conditional norms as in `Transformer`: with
    `layer_norm_cond=k` a vector `[batch, k]`, with a condition model its inputs. Only γ is conditioned (RMSNorm has
    no β); every norm of both stacks, final norms included, receives the condition (after the optional hidden Dense).
    Output: `[batch, dec_len, vocab]` next-token probabilities (`logits=True`: logits), whose Keras mask is
    `decoder_token_ids != pad` (position 0, the start token, always real), or the decoder padding mask when given.
    The decoder sees its own tokens causally (never masked as padding) and every non-padding encoder token.
    `encoder_model` / `decoder_model` are serving models over the same weights; `context_cache`, `init_cache`
    and `decode_step` run cached autoregressive decoding. `application` is accepted for the builder's sake:
    "encoder" (its default) and "seq2seq" both mean the whole encoder–decoder.
    """

    def __init__(self, config: TransformerConfig | dict, application: str = "encoder", logits: bool = False,
                 layer_norm_cond: int | keras.Model | None = None, layer_norm_cond_hidden_size: int | None = None,
                 layer_norm_cond_hidden_act: str = "linear", family: str = "t5", dtype=None, padding_mask: bool = False,
                 **kwargs):
        if isinstance(config, dict):
            config = TransformerConfig.from_dict(config)
        if application not in APPLICATIONS:
            raise ValueError(f"T5 is an encoder–decoder; application must be one of {APPLICATIONS}, got {application!r}")
        condition.check_model_kwargs(type(self).__name__, kwargs)
        layer_norm_cond, self.condition_model, cond_dim, cond_size = condition.resolve(layer_norm_cond,
                                                                                       layer_norm_cond_hidden_size)
        cfg = config
        heads, init, rate = cfg.num_attention_heads, cfg.initializer_range, cfg.hidden_dropout_prob
        key_size = cfg.key_size or cfg.head_size
        block_args = dict(heads=heads, key_size=key_size, intermediate_size=cfg.intermediate_size,
                          activation=cfg.hidden_act, gated=cfg.feed_forward_proj.startswith("gated-"),
                          layer_norm_eps=cfg.layer_norm_eps, dropout=rate, initializer_range=init,
                          cond_size=cond_size, dtype=dtype)
        bias_args = dict(heads=heads, num_buckets=cfg.relative_attention_num_buckets,
                         max_distance=cfg.relative_attention_max_distance, initializer_range=init, dtype=dtype)

        # === Layers ===
        self.token_embedding = TokenEmbedding(cfg.vocab_size, cfg.hidden_size, name="Embedding-Token",
                                              embeddings_initializer=truncated_normal(init), dtype=dtype)
        self.embedding_dropout = keras.layers.Dropout(rate, name="Embedding-Dropout", dtype=dtype)
        self.encoder_mask = T5AttentionMask(causal=False, pad_id=cfg.pad_token_id, name="Encoder-Attention-Mask")
        self.decoder_mask = T5AttentionMask(causal=True, name="Decoder-Attention-Mask")
        self.encoder_position_bias = RelativePositionBias(bidirectional=True, name="Encoder-Embedding-Relative-Position",
                                                          **bias_args)
        self.decoder_position_bias = RelativePositionBias(bidirectional=False,
                                                          name="Decoder-Embedding-Relative-Position", **bias_args)
        self.encoder_blocks = [T5Block(name=f"Encoder-Transformer-{i}", **block_args)
                               for i in range(cfg.num_hidden_layers)]
        self.decoder_blocks = [T5Block(cross_attention=True, name=f"Decoder-Transformer-{i}", **block_args)
                               for i in range(cfg.num_decoder_layers or cfg.num_hidden_layers)]
        self.encoder_norm = RMSNorm(cfg.layer_norm_eps, cond_size=cond_size, name="Encoder-Output-Norm", dtype=dtype)
        self.decoder_norm = RMSNorm(cfg.layer_norm_eps, cond_size=cond_size, name="Decoder-Output-Norm", dtype=dtype)
        self.output_dropout = keras.layers.Dropout(rate, name="Output-Dropout", dtype=dtype)
        self.lm_head = (None if cfg.tie_word_embeddings else
                        keras.layers.Dense(cfg.vocab_size, use_bias=False, kernel_initializer=truncated_normal(init),
                                           name="Decoder-Output-LM", dtype=dtype))
        self.head_activation = keras.layers.Activation("linear" if logits else "softmax",
                                                       name="Decoder-Output-Activation", dtype="float32")
        self.cond_dense = condition.dense(cond_dim, layer_norm_cond_hidden_size, layer_norm_cond_hidden_act, init,
                                          dtype)
        self._cond_dim = cond_dim

        # === Functional model ===
        encoder_ids = keras.Input(shape=(None,), dtype="int32", name="Encoder-Input-Token")
        decoder_ids = keras.Input(shape=(None,), dtype="int32", name="Decoder-Input-Token")
        masks = [keras.Input(shape=(None,), dtype="int32", name=f"{part}-Input-Padding-Mask", optional=True)
                 for part in ("Encoder", "Decoder")] if padding_mask else []
        encoder_padding, decoder_padding = masks or (None, None)
        cond_sources, cond = condition.inputs(self.condition_model, cond_dim, self.cond_dense)
        context_mask = self.encoder_mask(encoder_ids, encoder_padding)
        context = self.encode(encoder_ids, cond=cond, attention_mask=context_mask)
        x = self.decode(decoder_ids, context, context_mask, cond=cond, padding_mask=decoder_padding)
        output_mask = PaddingMask(cfg.pad_token_id, keep_first=True, name="Decoder-Padding-Mask")(decoder_ids,
                                                                                                  decoder_padding)
        outputs = OutputMask(name="Decoder-Output-Mask")([self.head_activation(self.lm_logits(x)), output_mask])
        super().__init__(inputs=[encoder_ids, decoder_ids, *masks, *cond_sources], outputs=outputs, **kwargs)

        # === Config ===
        self.config = cfg
        self.application = application
        self.logits = logits
        self.layer_norm_cond = layer_norm_cond
        self.layer_norm_cond_hidden_size = layer_norm_cond_hidden_size
        self.layer_norm_cond_hidden_act = layer_norm_cond_hidden_act
        self.family = family
        self.dtype_name = dtype
        self.padding_mask = padding_mask

    def input_limits(self) -> dict[str, Limit]:
        vocab = Limit(self.config.vocab_size, "vocab_size")
        return {"Encoder-Input-Token": vocab, "Decoder-Input-Token": vocab}

    # --- pieces shared by the functional graph, the serving models and cached decoding ---
    def condition_vector(self, cond):
        """The model's condition input(s) → the `[batch, cond_size]` vector the norms receive (None stays None)."""
        return condition.vector(self.condition_model, self.cond_dense, cond)

    def encode(self, token_ids, cond=None, training=None, attention_mask=None):
        """Encoder output `[batch, len, d_model]` (after the final RMSNorm); `cond`: the condition vector;
        `attention_mask`: `[batch, 1, len]` key mask (None: from the ids)."""
        mask = self.encoder_mask(token_ids) if attention_mask is None else attention_mask
        bias = self.encoder_position_bias(token_ids)
        x = self.embedding_dropout(self.token_embedding(token_ids), training=training)
        for block in self.encoder_blocks:
            x = block(x, attention_mask=mask, position_bias=bias, cond=cond, training=training)
        return self.output_dropout(self.encoder_norm(x, cond=cond), training=training)

    def decode(self, token_ids, context, context_mask=None, cond=None, training=None, padding_mask=None):
        """Decoder output `[batch, dec_len, d_model]`; `context_mask` `[batch, 1, enc_len]` (None = all keys);
        `cond`: the condition vector; `padding_mask` `[batch, dec_len]`: decoder keys to hide (None: none)."""
        mask = self.decoder_mask(token_ids, padding_mask)
        bias = self.decoder_position_bias(token_ids)
        x = self.embedding_dropout(self.token_embedding(token_ids), training=training)
        for block in self.decoder_blocks:
            x = block(x, attention_mask=mask, position_bias=bias, context=context, context_mask=context_mask,
                      cond=cond, training=training)
        return self.output_dropout(self.decoder_norm(x, cond=cond), training=training)

    def lm_logits(self, x):
        """Vocabulary logits: the untied `lm_head`, or the tied embedding after the `d_model**-0.5` rescale."""
        if self.lm_head is not None:
            return self.lm_head(x)
        return self.token_embedding(x * (self.token_embedding.output_dim ** -0.5), reverse=True)

    # --- serving models over the same weights ---
    @functools.cached_property
    def encoder_model(self) -> keras.Model:
        """`encoder_token_ids → encoder output` (`[encoder_token_ids, *condition inputs]` with a condition)."""
        ids = keras.Input(shape=(None,), dtype="int32", name="Encoder-Input-Token")
        cond_sources, cond = condition.inputs(self.condition_model, self._cond_dim, self.cond_dense)
        inputs = [ids, *cond_sources] if cond_sources else ids
        return keras.Model(inputs, self.encode(ids, cond=cond), name=f"{self.name}-Encoder")

    @functools.cached_property
    def decoder_model(self) -> keras.Model:
        """`[encoder_output, encoder_token_ids, decoder_token_ids, *condition inputs] → probabilities` (logits if
        `logits=True`)."""
        return self._decoder_serving_model(with_encoder_ids=True)

    @functools.cached_property
    def encoder(self) -> keras.Model:
        """bert4keras' `t5.encoder`: the same model as `encoder_model`."""
        return self.encoder_model

    @functools.cached_property
    def decoder(self) -> keras.Model:
        """bert4keras' `t5.decoder`: `[encoder_output, decoder_token_ids, *condition inputs]`, attending every
        encoder position (exact for unpadded encoder inputs, as in bert4keras); use `decoder_model` for padded
        batches."""
        return self._decoder_serving_model(with_encoder_ids=False)

    def _decoder_serving_model(self, with_encoder_ids: bool) -> keras.Model:
        context = keras.Input(shape=(None, self.config.hidden_size), name="Decoder-Input-Context")
        decoder_ids = keras.Input(shape=(None,), dtype="int32", name="Decoder-Input-Token")
        inputs, context_mask = [context, decoder_ids], None
        if with_encoder_ids:
            encoder_ids = keras.Input(shape=(None,), dtype="int32", name="Encoder-Input-Token")
            inputs, context_mask = [context, encoder_ids, decoder_ids], self.encoder_mask(encoder_ids)
        cond_sources, cond = condition.inputs(self.condition_model, self._cond_dim, self.cond_dense)
        x = self.decode(decoder_ids, context, context_mask, cond=cond)
        inputs += cond_sources
        return keras.Model(inputs, self.head_activation(self.lm_logits(x)), name=f"{self.name}-Decoder")

    # --- cached autoregressive decoding ---
    def context_cache(self, context) -> list:
        """Cross-attention `(k, v)` of the encoder output for every decoder block (computed once per input)."""
        return [block.cross_attention_layer.cache_key_value(context) for block in self.decoder_blocks]

    def init_cache(self, batch: int, length: int) -> list:
        """Zeroed static self-attention caches `[batch * heads, length, key_size]` for every decoder block."""
        return [block.self_attention.init_cache(batch, length, block.compute_dtype) for block in self.decoder_blocks]

    def decode_step(self, token_ids, cache, cache_index, context_cache, context_mask=None, cond=None, *,
                    condition_vector=None, cache_in_place: bool = False):
        """Decoder logits for `token_ids` `[batch, q]` placed at positions `cache_index ...`; returns
        `(logits [batch, q, vocab], new_cache)`; the cache passed in is not modified unless `cache_in_place` (only
        for a cache the caller owns, see `bert4k.layers.kv_cache.write_cache`). `context_mask`: `[batch, 1,
        enc_len]` (encoder non-padding); `cond`: the model's condition input(s) (the vector, or the condition
        model's inputs), as in `call`, or `condition_vector`: the vector already computed from them."""
        cond = self.condition_vector(cond) if condition_vector is None else condition_vector
        positions = cache_index + ops.arange(ops.shape(token_ids)[1], dtype="int32")
        keys = ops.arange(ops.shape(cache[0][0])[1], dtype="int32")
        mask = ops.expand_dims(keys[None, :] <= positions[:, None], 0)
        bias = self.decoder_position_bias.bias(positions, keys)
        x = self.token_embedding(token_ids)
        new_cache = []
        for block, layer_cache, layer_context in zip(self.decoder_blocks, cache, context_cache):
            x, layer_cache = block(x, attention_mask=mask, position_bias=bias, context_mask=context_mask,
                                   cache=layer_cache, cache_index=cache_index, context_cache=layer_context, cond=cond,
                                   cache_in_place=cache_in_place)
            new_cache.append(layer_cache)
        return self.lm_logits(self.decoder_norm(x, cond=cond)), new_cache

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "config": self.config.to_dict(),
                "application": self.application, "logits": self.logits,
                "layer_norm_cond": condition.config(self.layer_norm_cond, self.condition_model),
                "layer_norm_cond_hidden_size": self.layer_norm_cond_hidden_size,
                "layer_norm_cond_hidden_act": self.layer_norm_cond_hidden_act,
                "family": self.family, "dtype": self.dtype_name, "padding_mask": self.padding_mask}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)

    def predict(self, x, *args, **kwargs):
        """Keras' `predict`; inputs may also be nested Python lists (`[[token_ids], [segment_ids]]`)."""
        return super().predict(as_input_arrays(x, len(self.inputs)), *args, **kwargs)

