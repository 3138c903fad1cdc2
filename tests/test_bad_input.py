"""Bad ids and over-long inputs fail with a message naming the input, the bad value and the limit, eagerly and in
`predict`, instead of wrapping to the last row (id −1) or a raw gather error."""
import numpy as np
import pytest

from bert4k import build_transformer_model

BERT = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=12, type_vocab_size=2)
T5 = dict(vocab_size=30, d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=2, feed_forward_proj="relu")


@pytest.fixture(scope="module")
def bert():
    return build_transformer_model(dict(BERT), model="bert")


def _ids(n=5, value=None):
    ids = np.full((2, n), 3, "int32")
    if value is not None:
        ids[1, 2] = value
    return ids


@pytest.mark.parametrize("how", ["call", "predict"])
@pytest.mark.parametrize(("which", "value", "message"), [
    ("token", -1, "'Input-Token' holds id -1, outside [0, 30) (vocab_size = 30)"),
    ("token", 30, "'Input-Token' holds id 30, outside [0, 30) (vocab_size = 30)"),
    ("segment", -1, "'Input-Segment' holds id -1, outside [0, 2) (type_vocab_size = 2)"),
    ("segment", 2, "'Input-Segment' holds id 2, outside [0, 2) (type_vocab_size = 2)"),
])
def test_bad_ids_are_named(bert, how, which, value, message):
    tokens = _ids(value=value if which == "token" else None)
    segments = np.zeros_like(tokens)
    if which == "segment":
        segments[0, 1] = value
    run = bert if how == "call" else (lambda x: bert.predict(x, verbose=0))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        run([tokens, segments])


@pytest.mark.parametrize("how", ["call", "predict"])
def test_input_longer_than_the_position_table_is_refused(bert, how):
    tokens = _ids(n=13)
    run = bert if how == "call" else (lambda x: bert.predict(x, verbose=0))
    with pytest.raises(ValueError, match="'Input-Token' has 13 positions, more than max_position_embeddings = 12"):
        run([tokens, np.zeros_like(tokens)])
    assert bert.predict([_ids(n=12), np.zeros_like(_ids(n=12))], verbose=0).shape == (2, 12, 16)


def test_roberta_position_offset_shortens_the_limit():
    roberta = build_transformer_model({**BERT, "model_type": "roberta", "pad_token_id": 1, "type_vocab_size": 1},
                                      model="roberta")
    assert roberta.config.position_offset == 2
    ok, long = _ids(n=10), _ids(n=11)  # positions pad+1 .. pad+n must stay below 12
    assert roberta.predict([ok, np.zeros_like(ok)], verbose=0).shape == (2, 10, 16)
    with pytest.raises(ValueError, match="has 11 positions, more than max_position_embeddings = 10"):
        roberta([long, np.zeros_like(long)])


def test_t5_ids_are_checked_on_both_inputs():
    t5 = build_transformer_model(dict(T5), model="t5")
    good = _ids()
    with pytest.raises(ValueError, match="'Decoder-Input-Token' holds id 30"):
        t5.predict([good, _ids(value=30)], verbose=0)
    with pytest.raises(ValueError, match="'Encoder-Input-Token' holds id -1"):
        t5([_ids(value=-1), good])
