"""T5's optional `padding_mask` inputs (keras-hub's convention) against Hugging Face's `attention_mask` /
`decoder_attention_mask` on the same weights: a mask that keeps pad-id tokens real, one that hides real-looking ids,
a decoder mask, and the absent mask falling back to the ids."""
import keras
import numpy as np
import pytest
import torch
import transformers

from bert4k import build_transformer_model
from tests.oracles.hf import max_diff, randomize, save_both, to_numpy

TOL = 1e-4
VOCAB = 50
CONFIG = dict(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
              relative_attention_num_buckets=8, relative_attention_max_distance=20, decoder_start_token_id=0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(0)
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**CONFIG))
    randomize(hf, seed=0)
    st_dir, _ = save_both(hf.eval(), str(tmp_path_factory.mktemp("t5_padding_mask")))
    ours = build_transformer_model(f"{st_dir}/config.json", st_dir, model="t5", logits=True, padding_mask=True)
    plain = build_transformer_model(f"{st_dir}/config.json", st_dir, model="t5", logits=True)
    return hf, ours, plain


def hf_run(hf, enc, dec, enc_mask, dec_mask=None):
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(enc, dtype=torch.long), attention_mask=torch.tensor(enc_mask, dtype=torch.long),
                 decoder_input_ids=torch.tensor(dec, dtype=torch.long),
                 decoder_attention_mask=None if dec_mask is None else torch.tensor(dec_mask, dtype=torch.long))
    return out.encoder_last_hidden_state.numpy(), out.logits.numpy()


def inputs(seed: int):
    rng = np.random.default_rng(seed)
    enc = rng.integers(1, VOCAB, (3, 11)).astype("int32")
    dec = rng.integers(1, VOCAB, (3, 6)).astype("int32")
    dec[:, 0] = 0
    return enc, dec


def test_pad_id_tokens_stay_real_under_an_all_ones_mask(pair):
    hf, ours, plain = pair
    enc, dec = inputs(1)
    enc[0, 3] = enc[1, 5] = enc[2, 0] = 0  # the pad id as data
    ones = np.ones_like(enc)
    _, expected = hf_run(hf, enc, dec, ones)
    assert max_diff(ours([enc, dec, ones, None]), expected) <= TOL
    assert max_diff(plain([enc, dec]), expected) > 1e-3  # from the ids, those tokens would be hidden
    encoded_ref, _ = hf_run(hf, enc, dec, ones)
    mask = ours.encoder_mask(enc, ones)
    assert max_diff(ours.encode(enc, attention_mask=mask), encoded_ref) <= TOL


def test_a_mask_hides_real_looking_ids_in_the_encoder(pair):
    hf, ours, _ = pair
    enc, dec = inputs(2)
    mask = np.ones_like(enc)
    mask[1, 7:] = mask[2, 4:] = 0  # right padding written with ordinary ids
    encoded_ref, expected = hf_run(hf, enc, dec, mask)
    assert max_diff(ours([enc, dec, mask, None]), expected) <= TOL
    real = mask.astype(bool)
    got = to_numpy(ours.encode(enc, attention_mask=ours.encoder_mask(enc, mask)))
    assert max_diff(got[real], encoded_ref[real]) <= TOL
    other = np.where(real, enc, 3).astype("int32")  # what the hidden slots hold no longer matters
    assert max_diff(ours([other, dec, mask, None]), expected) <= TOL


def test_decoder_padding_mask_matches_decoder_attention_mask(pair):
    hf, ours, _ = pair
    enc, dec = inputs(3)
    enc_mask = np.ones_like(enc)
    enc_mask[0, 9:] = 0
    dec_mask = np.ones_like(dec)
    dec_mask[1, 2] = 0  # a hidden key in the middle: later queries must not see it
    dec_mask[2, 4:] = 0
    _, expected = hf_run(hf, enc, dec, enc_mask, dec_mask)
    _, unmasked = hf_run(hf, enc, dec, enc_mask)
    got = to_numpy(ours([enc, dec, enc_mask, dec_mask]))
    real = dec_mask.astype(bool)
    assert max_diff(got[real], expected[real]) <= TOL
    assert max_diff(expected[1, 3:], unmasked[1, 3:]) > 1e-3  # the decoder mask changes HF's answer there


def test_absent_masks_fall_back_to_the_ids(pair):
    hf, ours, plain = pair
    enc, dec = inputs(4)
    enc[0, 8:] = enc[2, 5:] = 0  # padding by id
    _, expected = hf_run(hf, enc, dec, (enc != 0).astype("int32"))
    assert max_diff(ours([enc, dec, None, None]), expected) <= TOL
    assert max_diff(ours([enc, dec, None, None]), plain([enc, dec])) == 0
    assert ours.get_config()["padding_mask"] is True and plain.get_config()["padding_mask"] is False


def test_keras_round_trip_keeps_the_mask_inputs(pair, tmp_path):
    _, ours, _ = pair
    ours.save(tmp_path / "t5.keras")
    again = keras.saving.load_model(tmp_path / "t5.keras")
    enc, dec = inputs(5)
    mask = np.ones_like(enc)
    mask[1, 6:] = 0
    assert [t.name for t in again.inputs] == ["Encoder-Input-Token", "Decoder-Input-Token",
                                              "Encoder-Input-Padding-Mask", "Decoder-Input-Padding-Mask"]
    assert max_diff(again([enc, dec, mask, None]), ours([enc, dec, mask, None])) == 0
