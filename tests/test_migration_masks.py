"""A bert4keras-style `Loss` placed on a bert4k LM / UniLM / T5 output receives `[None, mask]`, the mask being the
real (non-padding) token positions, as bert4keras' LM, UniLM and seq2seq example losses expect in `mask[1]`."""
from typing import ClassVar

import numpy as np
import pytest

from bert4k.backend import K, keras
from bert4k.layers import Loss
from bert4k.models import build_transformer_model

BERT = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=16, type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
T5 = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, attention_head_size=8,
          intermediate_size=24, hidden_act=["gelu", "linear"], hidden_dropout_prob=0.0, attention_scale=False)


class MaskRecordingCrossEntropy(Loss):
    """The bert4keras examples' seq2seq loss, recording the masks it is given (read them after an eager call)."""
    seen: ClassVar[list] = []

    def compute_loss(self, inputs, mask=None):
        type(self).seen.append(mask)
        y_true, y_pred = inputs
        y_mask = K.cast(mask[1], K.floatx())[:, 1:]
        loss = K.sparse_categorical_crossentropy(y_true[:, 1:], y_pred[:, :-1])
        return K.sum(loss * y_mask) / K.sum(y_mask)


def numpy_masked_loss(probs: np.ndarray, ids: np.ndarray) -> float:
    real = ids[:, 1:] != 0
    picked = np.take_along_axis(probs[:, :-1], ids[:, 1:, None], -1)[..., 0]
    return float(-(np.log(picked) * real).sum() / real.sum())


def run_and_record_mask(model, inputs):
    """`(probabilities, evaluate loss, the mask the Loss layer received for its second input)`; the first input's
    mask must be None."""
    model.compile(optimizer="sgd")
    probs = model.predict(inputs, verbose=0)
    loss = model.evaluate(inputs, verbose=0)
    MaskRecordingCrossEntropy.seen = []
    model(inputs)  # eager: the recorded masks are concrete
    first, second = MaskRecordingCrossEntropy.seen[-1]
    assert first is None
    return probs, loss, keras.ops.convert_to_numpy(second)


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_loss_on_a_bert_lm_or_unilm_output_receives_the_padding_mask(application):
    bert = build_transformer_model(BERT, application=application)
    output = MaskRecordingCrossEntropy(1)([bert.inputs[0], bert.outputs[0]])
    model = keras.models.Model(bert.inputs, output)
    ids = np.array([[2, 5, 6, 7, 3, 0, 0], [2, 5, 6, 7, 8, 9, 3]], "int32")
    segments = np.array([[0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 1]], "int32")
    probs, loss, second = run_and_record_mask(model, [ids, segments])
    np.testing.assert_array_equal(second, ids != 0)
    assert np.isclose(loss, numpy_masked_loss(probs, ids), rtol=1e-4)


def test_loss_on_a_t5_decoder_output_receives_the_decoder_mask():
    t5 = build_transformer_model(T5, model="t5.1.1", return_keras_model=False)
    output = MaskRecordingCrossEntropy(1)([t5.model.inputs[1], t5.model.outputs[0]])
    model = keras.models.Model(t5.model.inputs, output)
    enc = np.array([[4, 5, 6, 0], [4, 5, 6, 7]], "int32")
    dec = np.array([[0, 8, 9, 0, 0], [0, 8, 9, 10, 11]], "int32")  # 0: the start token, then right padding
    probs, loss, second = run_and_record_mask(model, [enc, dec])
    expected = dec != 0
    expected[:, 0] = True  # bert4keras' embedding keeps the first position (T5's start token, id 0) unmasked
    np.testing.assert_array_equal(second, expected)
    assert np.isclose(loss, numpy_masked_loss(probs, dec), rtol=1e-4)
