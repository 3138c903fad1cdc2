"""bert4keras' layer-by-layer building API on `return_keras_model=False` objects (BERT-of-Theseus): re-apply a built
model's own embedding and block layers (the same weights) to new tensors, the padding flowing as a Keras mask."""
from __future__ import annotations

import keras
from keras import ops

from bert4k.compat.views import keras_mask
from bert4k.layers.structural import OutputMask, PaddingMask


@keras.saving.register_keras_serializable("bert4k")
class KeyPaddingMask(keras.layers.Layer):
    """`x` carrying a Keras mask `[batch, n]` → the attention's key mask `[batch, 1, n]` (bert4keras' attention took
    its key mask from the Keras mask of its input)."""

    def call(self, x, mask=None):
        return ops.expand_dims(ops.cast(mask, "bool"), 1)

    def compute_mask(self, x, mask=None):
        return None

    def compute_output_spec(self, x, mask=None):
        return keras.KerasTensor((x.shape[0], 1, x.shape[1]), dtype="bool")


class LayerByLayer:
    """`apply_embeddings(inputs)` and `apply_main_layers(x, index)` of bert4keras' `Transformer`, on `self.model`
    (an encoder: bert4keras' BERT / ALBERT take their attention mask from the padding alone)."""

    @property
    def num_hidden_layers(self) -> int:
        return self.model.config.num_hidden_layers

    def _check_encoder(self, api: str) -> None:
        model = self.model
        problems = [what for what, bad in (
            (f"application={model.application!r} (its attention mask is not the padding alone)",
             model.application not in ("encoder", "mlm")),
            ("layer_norm_cond (the blocks need the condition)", model.cond_dense is not None
             or model.condition_model is not None or model.layer_norm_cond is not None),
            ("padding_mask / attention_mask inputs", model.padding_mask or model.attention_mask is not None),
            (f"attention={model.attention!r}", model.attention == "linear")) if bad]
        if problems:
            raise NotImplementedError(f"{api}: bert4k re-applies an encoder's layers only; this model has "
                                      f"{'; '.join(problems)}")

    def apply_embeddings(self, inputs):
        """The model's embeddings of `inputs` (`[token_ids, segment_ids]` Keras tensors, or token ids alone),
        carrying the padding (`token_ids != pad_token_id`) as their Keras mask."""
        self._check_encoder("apply_embeddings")
        model = self.model
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        token_ids = inputs[0]
        segment_ids = inputs[1] if model.use_segments and len(inputs) > 1 else None
        x = model.embed(token_ids, segment_ids)
        padding = [layer for layer in model.layers if isinstance(layer, PaddingMask)]
        return OutputMask()([x, padding[0](token_ids, None)]) if padding else x

    def apply_main_layers(self, inputs, index: int):
        """Block `index` of the model (its own weights) applied to `inputs`, its attention masked by the Keras mask
        `inputs` carries, which its output carries on."""
        self._check_encoder("apply_main_layers")
        model = self.model
        if not 0 <= index < len(model.blocks):
            raise IndexError(f"apply_main_layers(x, {index}): the model has {len(model.blocks)} blocks "
                             f"(0 to {len(model.blocks) - 1})")
        mask = keras_mask(inputs)
        attention_mask = None if mask is None else KeyPaddingMask()(inputs)
        block = model.blocks[index]
        if model.block_intermediates:
            x = block(inputs, attention_mask=attention_mask, intermediates=True)[0]
        else:
            x = block(inputs, attention_mask=attention_mask)
        return x if mask is None else OutputMask()([x, mask])


__all__ = ["KeyPaddingMask", "LayerByLayer"]
