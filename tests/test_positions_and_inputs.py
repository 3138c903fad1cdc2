"""RoBERTa positions mean one thing everywhere (first token at `position_offset = pad + 1`), and a tuple given to
`generate` binds its inputs by position, never by a guess."""
import json

import numpy as np
import pytest
import torch
import transformers

from bert4k import TransformerConfig, build_transformer_model, generate
from tests.oracles.hf import max_diff, random_ids, randomize

ROBERTA = dict(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
               max_position_embeddings=40, type_vocab_size=1, hidden_act="gelu")


def test_roberta_config_without_pad_id_uses_the_hf_default(tmp_path):
    """Before: no `pad_token_id` in the file gave position_offset 2 (from HF's default pad 1) but pad 0, so the
    positions started at 1 and id 1 was attended as a token; HF uses pad 1 and positions from 2."""
    torch.manual_seed(0)
    hf = transformers.RobertaModel(transformers.RobertaConfig(**ROBERTA, pad_token_id=1), add_pooling_layer=False)
    randomize(hf, seed=1)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("pad_token_id", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    ours = build_transformer_model(tmp_path, model="roberta")
    assert (ours.config.pad_token_id, ours.config.position_offset) == (1, 2)
    ids = random_ids(3, 10, ROBERTA["vocab_size"], seed=2, pad_id=1, low=3)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(ids != 1)).last_hidden_state
    keep = ids != 1
    assert max_diff(ours.predict([ids, np.zeros_like(ids)], verbose=0)[keep], ref.numpy()[keep]) <= 1e-4


def test_position_offset_must_follow_the_padding_id():
    with pytest.raises(ValueError, match=r"position_offset 2 must be pad_token_id \+ 1 \(1\)"):
        TransformerConfig(**ROBERTA, position_offset=2, pad_token_id=0)


def test_cached_decoding_uses_the_same_positions_as_the_forward_pass():
    """The decoding adapter adds `position_offset` to 0-based positions; the model's PositionIds must agree."""
    config = TransformerConfig(**{**ROBERTA, "type_vocab_size": 0}, position_offset=2, pad_token_id=1)
    model = build_transformer_model(config, model="roberta", application="lm", logits=True)
    prompt = np.array([[5, 9, 3, 7]], "int32")
    ids = prompt
    for _ in range(5):
        next_id = np.argmax(np.asarray(model(ids))[:, -1], axis=-1).astype("int32")
        ids = np.concatenate([ids, next_id[:, None]], axis=1)
    np.testing.assert_array_equal(generate(model, prompt, 5), ids[:, 4:])


def test_tuple_inputs_bind_by_position():
    """Before: `(token_ids, segment_ids)` for a model with segments and a condition bound the segments as the
    condition (the tuple was one short, so segment_ids was assumed left out)."""
    config = TransformerConfig(**{**ROBERTA, "type_vocab_size": 2})
    model = build_transformer_model(config, application="unilm", layer_norm_cond=4)
    ids, segments = np.array([[5, 9, 3]], "int32"), np.array([[0, 0, 0]], "int32")
    with pytest.raises(ValueError, match=r"tuple of 2 inputs; this model takes \['token_ids', 'segment_ids', 'cond'\]"):
        generate(model, (ids, segments), 3)
    cond = np.ones((1, 4), "float32")
    assert generate(model, (ids, None, cond), 3).shape == (1, 3)
    assert np.array_equal(generate(model, (ids, None, cond), 3), generate(model, (ids, segments, cond), 3))
