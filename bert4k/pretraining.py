"""Pre-training objectives over one `Transformer`: masked LM scored at the masked positions only, and ELECTRA's
replaced-token detection (a small MLM generator fills the masks, a discriminator tells replaced tokens apart).

Both models take `x = (token_ids, segment_ids, positions, labels)`: the masked ids `[batch, seq]`, their segment
ids, the masked positions `[batch, k]` and the original ids there (`labels`, 0 = an unused slot). No `y`.
"""
from __future__ import annotations

import keras
from keras import ops

from bert4k.layers.activations import get_activation
from bert4k.models.transformer import Transformer


def tie_embeddings(generator: Transformer, discriminator: Transformer) -> None:
    """Make `generator` use `discriminator`'s token, position and segment tables (ELECTRA's shared embeddings).

    The generator's own tables are dropped from its variables. Its embedding width must equal the discriminator's
    (a narrower generator maps the shared embeddings to its hidden size with `Embedding-Mapping`)."""
    pairs = [("token_embedding", True), ("position_embedding", True), ("segment_embedding", False)]
    for name, required in pairs:
        g, d = getattr(generator, name), getattr(discriminator, name)
        if g is None or d is None:
            if required or (g is None) != (d is None):
                raise ValueError(f"tie_embeddings: {name} present in only one model")
            continue
        if tuple(g.embeddings.shape) != tuple(d.embeddings.shape):
            raise ValueError(f"tie_embeddings: {name} shapes differ: generator {tuple(g.embeddings.shape)}, "
                             f"discriminator {tuple(d.embeddings.shape)}")
        own = g._embeddings
        g._tracker.unlock()
        g._embeddings = d._embeddings
        g._tracker.lock()
        g._trainable_variables[:] = [v for v in g._trainable_variables if v is not own]


def _sequence_model(model: Transformer) -> keras.Model:
    """`model`'s inputs → its last hidden states (before any head)."""
    x = model.blocks[-1].output
    return keras.Model(model.inputs, x, name=f"{model.name}_sequence")


def _masked_mean(values, weights):
    return ops.sum(values * weights) / ops.maximum(ops.sum(weights), 1.0)


class _Pretrainer(keras.Model):
    """Shared parts: the MLM loss of a generator at the masked positions, and metric trackers."""

    METRICS = ("mlm_loss", "mlm_accuracy")

    def __init__(self, generator: Transformer, **kwargs):
        super().__init__(**kwargs)
        if generator.output_norm is not None:
            raise ValueError("pre-training heads expect a post-LN Transformer (no final norm)")
        self.generator = generator
        self.generator_sequence = _sequence_model(generator)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.METRICS}

    def _track(self, name: str, value):
        self.trackers[name].update_state(value)

    @property
    def metrics(self):
        return [*super().metrics, *self.trackers.values()]

    def _mlm_logits(self, token_ids, segment_ids, positions, training):
        inputs = [token_ids, segment_ids] if self.generator.use_segments else [token_ids]
        hidden = self.generator_sequence(inputs, training=training)
        hidden = ops.take_along_axis(hidden, ops.expand_dims(positions, -1), axis=1)
        return ops.cast(self.generator.head(hidden, activation=False), "float32")

    def _mlm_loss(self, logits, labels):
        weights = ops.cast(labels > 0, "float32")
        losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        hits = ops.cast(ops.cast(ops.argmax(logits, -1), "int32") == ops.cast(labels, "int32"), "float32")
        return _masked_mean(losses, weights), _masked_mean(hits, weights)


class MaskedLMAtPositions(_Pretrainer):
    """Masked LM with the head run only at the masked positions (the `hidden × vocab` product on every position
    is a large part of the work otherwise)."""

    def call(self, inputs, training=None):
        token_ids, segment_ids, positions, _ = inputs
        return self._mlm_logits(token_ids, segment_ids, positions, training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss, acc = self._mlm_loss(y_pred, x[3])
        self._track("mlm_loss", loss)
        self._track("mlm_accuracy", acc)
        return loss


class ReplacedTokenDetection(_Pretrainer):
    """ELECTRA (Clark et al. 2020): the generator's samples at the masked positions replace the masks; the
    discriminator (`encoder` + Dense → act → Dense(1) per token) predicts which tokens were replaced.
    Loss = generator MLM loss + `rtd_weight` × mean binary cross-entropy over the real tokens."""

    METRICS = ("mlm_loss", "mlm_accuracy", "rtd_loss", "rtd_accuracy", "replaced_fraction")

    def __init__(self, generator: Transformer, discriminator: Transformer, rtd_weight: float = 50.0,
                 temperature: float = 1.0, seed: int = 0, **kwargs):
        super().__init__(generator, **kwargs)
        self.discriminator = discriminator
        cfg = discriminator.config
        init = keras.initializers.TruncatedNormal(stddev=cfg.initializer_range)
        self.rtd_dense = keras.layers.Dense(cfg.hidden_size, activation=get_activation(cfg.hidden_act),
                                            kernel_initializer=init, name="RTD-Dense")
        self.rtd_output = keras.layers.Dense(1, kernel_initializer=init, name="RTD-Output")
        self.rtd_weight = rtd_weight
        self.temperature = temperature
        self.seed_generator = keras.random.SeedGenerator(seed)

    def detector_logits(self, token_ids, segment_ids=None, training=None):
        """Per-token logits `[batch, seq]` that the token was replaced."""
        inputs = [token_ids, segment_ids] if self.discriminator.use_segments else [token_ids]
        hidden = self.discriminator(inputs, training=training)
        return ops.cast(ops.squeeze(self.rtd_output(self.rtd_dense(hidden)), -1), "float32")

    def call(self, inputs, training=None):
        token_ids, segment_ids, positions, labels = inputs
        mlm_logits = self._mlm_logits(token_ids, segment_ids, positions, training)
        noise = keras.random.uniform(ops.shape(mlm_logits), minval=1e-9, maxval=1.0, seed=self.seed_generator)
        gumbel = -ops.log(-ops.log(noise))
        sampled = ops.cast(ops.argmax(ops.stop_gradient(mlm_logits) / self.temperature + gumbel, -1), "int32")
        used = ops.cast(labels > 0, "int32")
        slots = ops.one_hot(positions, ops.shape(token_ids)[1], dtype="int32") * ops.expand_dims(used, -1)
        at_mask = ops.sum(slots, axis=1) > 0
        filled = ops.where(at_mask, ops.sum(slots * ops.expand_dims(sampled, -1), axis=1), token_ids)
        original = ops.where(at_mask, ops.sum(slots * ops.expand_dims(labels, -1), axis=1), token_ids)
        replaced = ops.cast(filled != original, "float32")
        logits = self.detector_logits(filled, segment_ids, training)
        return mlm_logits, logits, replaced, ops.cast(token_ids != self.discriminator.config.pad_token_id, "float32")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        mlm_logits, logits, replaced, real = y_pred
        mlm_loss, mlm_acc = self._mlm_loss(mlm_logits, x[3])
        bce = ops.maximum(logits, 0.0) - logits * replaced + ops.log1p(ops.exp(-ops.abs(logits)))
        rtd_loss = _masked_mean(bce, real)
        hits = ops.cast((logits > 0) == (replaced > 0.5), "float32")
        self._track("mlm_loss", mlm_loss)
        self._track("mlm_accuracy", mlm_acc)
        self._track("rtd_loss", rtd_loss)
        self._track("rtd_accuracy", _masked_mean(hits, real))
        self._track("replaced_fraction", _masked_mean(replaced, real))
        return mlm_loss + self.rtd_weight * rtd_loss
