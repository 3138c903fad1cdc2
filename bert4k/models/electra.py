"""ELECTRA: the one `Transformer` with ELECTRA's names (family `electra`, registered in `bert4k.models.families`),
plus the discriminator head.

`build_transformer_model(config, checkpoint, model="electra")` gives `ElectraModel` (factorised embeddings when
`embedding_size` ≠ `hidden_size`, as in the HFL Chinese ELECTRA checkpoints); `application="mlm"` gives the generator
(`ElectraForMaskedLM`). `build_electra_discriminator` adds the replaced-token head (`ElectraForPreTraining`).
Names: `bert4k.checkpoints.electra`.
"""
from __future__ import annotations

import os

import keras
from keras import ops

from bert4k.checkpoints import electra as electra_ckpt
from bert4k.checkpoints.readers import is_tf_checkpoint, read_tensors, resolve_checkpoint
from bert4k.checkpoints.specs import export_tensors, linear_spec, load_specs
from bert4k.checkpoints.writers import save_safetensors, save_tf_checkpoint
from bert4k.layers.activations import get_activation
from bert4k.models.families import get_family


@keras.saving.register_keras_serializable("bert4k")
class ReplacedTokenHead(keras.layers.Layer):
    """Per-token logit that the token was replaced: Dense(hidden) → activation → Dense(1), squeezed."""

    def __init__(self, hidden_size: int, activation: str = "gelu", initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        init = keras.initializers.TruncatedNormal(stddev=initializer_range)
        self.hidden_size, self.activation_name, self.initializer_range = hidden_size, activation, initializer_range
        self.dense = keras.layers.Dense(hidden_size, activation=get_activation(activation), kernel_initializer=init,
                                        name="dense", dtype=self.dtype_policy)
        self.prediction = keras.layers.Dense(1, kernel_initializer=init, name="dense_prediction",
                                             dtype=self.dtype_policy)

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.prediction.build((*input_shape[:-1], self.hidden_size))

    def call(self, x):
        return ops.cast(ops.squeeze(self.prediction(self.dense(x)), -1), "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size, "activation": self.activation_name,
                "initializer_range": self.initializer_range}


def head_specs(head: ReplacedTokenHead) -> list:
    return [*linear_spec(head.dense, "discriminator_predictions.dense"),
            *linear_spec(head.prediction, "discriminator_predictions.dense_prediction")]


def build_electra_discriminator(config, checkpoint_path: str | os.PathLike | None = None,
                                **kwargs) -> keras.Model:
    """`ElectraForPreTraining`: the `electra` encoder (`model.encoder`) + `ReplacedTokenHead` (`model.head`);
    outputs the replaced-token logits `[batch, seq]`."""
    from bert4k.models.builder import build_transformer_model

    encoder = build_transformer_model(config, None, model="electra", **kwargs)
    cfg = encoder.config
    head = ReplacedTokenHead(cfg.hidden_size, cfg.hidden_act, cfg.initializer_range, name="Discriminator-Head")
    model = keras.Model(encoder.inputs, head(encoder.output), name="electra_discriminator")
    model.encoder, model.head = encoder, head
    if checkpoint_path is not None:
        path = resolve_checkpoint(checkpoint_path)
        tensors = read_tensors(path)
        family = get_family("electra")
        tensors = family.reference("from_tf" if is_tf_checkpoint(path) else "from_hf")(tensors)
        load_specs(electra_ckpt.electra_specs(encoder) + head_specs(head), tensors, source=path,
                   ignored=family.ignored)
    return model


def export_electra_discriminator(model: keras.Model, path: str | os.PathLike, format: str = "safetensors") -> str:
    """Write a `build_electra_discriminator` model as HF `ElectraForPreTraining` safetensors (`electra.` prefix on
    the body, as HF saves it) or as a Google ELECTRA TF checkpoint (`format="tf"`)."""
    tensors = export_tensors(electra_ckpt.electra_specs(model.encoder) + head_specs(model.head))
    if format == "tf":
        return save_tf_checkpoint(electra_ckpt.to_google_electra(tensors), path)
    if format != "safetensors":
        raise ValueError(f"unknown export format {format!r}; expected 'safetensors' or 'tf'")
    heads = electra_ckpt._HEADS
    return save_safetensors({(k if k.startswith(heads) else "electra." + k): v for k, v in tensors.items()}, path)
