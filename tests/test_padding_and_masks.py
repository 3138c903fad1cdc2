"""Padding is data (a `padding_mask` input; GPT-2's eos is never padding), Keras masks reach layers after the model,
and a user's attention mask reaches the model (proved by perturbation)."""
import functools

import keras
import numpy as np
import pytest
import torch
import transformers

from bert4k import build_transformer_model, masks
from bert4k.models.t5 import T5
from tests.oracles.hf import max_diff, randomize, save_both, to_numpy

TOL = 1e-4
GPT2 = dict(vocab_size=61, n_positions=40, n_embd=32, n_layer=2, n_head=4, n_inner=48, bos_token_id=1,
            eos_token_id=2, pad_token_id=2)
BERT = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=16, type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def hf_gpt2_pad_eos(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2))
    randomize(model)
    st_dir, _ = save_both(model, str(tmp_path_factory.mktemp("gpt2_pad_eos")))
    return model, st_dir


def hf_logits(model, ids, attention_mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long),
                     attention_mask=torch.tensor(attention_mask, dtype=torch.long)).logits.numpy()


def test_gpt2_eos_mid_sequence_stays_visible_when_pad_is_eos(hf_gpt2_pad_eos):
    hf, st_dir = hf_gpt2_pad_eos
    ours = build_transformer_model(st_dir, st_dir, model="gpt2", logits=True)
    ids = np.random.default_rng(0).integers(3, 61, (2, 9)).astype("int32")
    ids[:, 3] = 2  # end-of-text between two documents
    ids[1, 6] = 2
    assert max_diff(ours.predict(ids, verbose=0), hf_logits(hf, ids, np.ones_like(ids))) <= TOL


def test_gpt2_padding_mask_input_matches_hf_attention_mask(hf_gpt2_pad_eos):
    hf, st_dir = hf_gpt2_pad_eos
    ours = build_transformer_model(st_dir, st_dir, model="gpt2", logits=True, padding_mask=True)
    ids = np.random.default_rng(1).integers(3, 61, (3, 8)).astype("int32")
    ids[0, 2] = 2  # a real eos
    padding = np.ones_like(ids)
    padding[1, 5:] = 0
    padding[2, 3:] = 0
    ids[padding == 0] = 2  # right padding with the eos id
    got = to_numpy(ours([ids, padding]))
    keep = padding.astype(bool)
    assert max_diff(got[keep], hf_logits(hf, ids, padding)[keep]) <= TOL


def test_bert_padding_mask_is_data_and_absent_means_ids():
    model = build_transformer_model(dict(BERT), model="bert", padding_mask=True)
    plain = build_transformer_model(dict(BERT), model="bert")
    plain.set_weights(model.get_weights())
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 40, (2, 7)).astype("int32")
    ids[1, 4:] = 0
    segments = np.zeros_like(ids)
    expected = to_numpy(plain([ids, segments]))
    # absent (None) → derived from the ids
    assert max_diff(model([ids, segments, None]), expected) == 0
    # a mask hides real-looking ids: the padded slots' content no longer matters
    other = ids.copy()
    other[1, 4:] = 9
    got = to_numpy(model([other, segments, (ids != 0).astype("int32")]))
    assert max_diff(got[0], expected[0]) == 0
    assert max_diff(got[1, :4], expected[1, :4]) <= 1e-6
    assert max_diff(got[1, :4], to_numpy(model([other, segments, None]))[1, :4]) > 1e-3


class MaskProbe(keras.layers.Layer):
    """A user's layer after the model: records the Keras mask it receives (as bert4keras' Loss does)."""

    def call(self, inputs, mask=None):
        self.seen = mask
        return inputs

    def compute_mask(self, inputs, mask=None):
        return mask


@pytest.mark.parametrize("family", ["bert", "gpt2_ml"])
def test_model_output_carries_the_padding_mask(family):
    config = dict(BERT) if family == "bert" else {k: v for k, v in BERT.items() if k != "type_vocab_size"}
    model = build_transformer_model(config, model=family, with_mlm=family == "bert")
    ids = np.array([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]], "int32")
    inputs = [ids, np.zeros_like(ids)] if family == "bert" else [ids]
    probe = MaskProbe()
    wrapped = keras.Model(model.inputs, probe(model.output))
    wrapped(inputs)
    np.testing.assert_array_equal(to_numpy(probe.seen), ids != 0)
    assert model.output._keras_mask is not None  # symbolic: a layer built on model.output receives it


def test_t5_decoder_output_mask_is_decoder_ids_not_pad():
    cfg = dict(vocab_size=30, d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=2, feed_forward_proj="relu")
    t5 = build_transformer_model(cfg, model="t5")
    assert isinstance(t5, T5)
    enc = np.array([[4, 5, 6, 0], [4, 5, 6, 7]], "int32")
    dec = np.array([[0, 8, 9, 0, 0], [0, 8, 9, 10, 11]], "int32")  # 0: start token, then right padding
    probe = MaskProbe()
    keras.Model(t5.inputs, probe(t5.output))([enc, dec])
    expected = dec != 0
    expected[:, 0] = True  # the start token (id 0 = pad) is a real decoder position
    np.testing.assert_array_equal(to_numpy(probe.seen), expected)


def dependence(model, ids):
    """`d[i, j]` = max |Δ output at i| when only token j changes."""
    n = ids.shape[1]
    batch = np.repeat(ids, n + 1, axis=0)
    for j in range(n):
        batch[j + 1, j] = 2 + (batch[j + 1, j] + 5) % 30
    out = to_numpy(model([batch, np.zeros_like(batch)]))
    return np.abs(out[1:] - out[:1]).max(axis=-1).T


def window(ids):
    return masks.sliding_window_mask(ids, 1)


@pytest.mark.parametrize("form", ["function", "input"])
def test_user_mask_reaches_the_model(form):
    config = {**BERT, "num_hidden_layers": 1}
    rng = np.random.default_rng(0)
    model = build_transformer_model(config, model="bert", attention_mask=window if form == "function" else "input")
    for w in model.weights:
        w.assign(rng.normal(0, 0.3, w.shape).astype("float32") + (1.0 if w.path.endswith("gamma") else 0.0))
    ids = rng.integers(2, 32, (1, 7)).astype("int32")
    if form == "input":
        n = ids.shape[1]
        user = (np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) <= 1)[None].astype("int32")
        model = functools.partial(lambda m, x: m([*x, np.repeat(user, len(x[0]), axis=0)]), model)
    d = dependence(model, ids)
    allowed = np.abs(np.arange(7)[:, None] - np.arange(7)[None, :]) <= 1  # written from the definition
    assert d[~allowed].max() <= 1e-6 and d[allowed].min() > 1e-4, d
