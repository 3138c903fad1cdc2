"""ELECTRA replaced-token detection and masked LM at positions (bert4k.pretraining), and the step-indexed batches of
pretrained/batches.py: checked against direct numpy computations on tiny models."""
import sys
from pathlib import Path

import keras
import numpy as np

from bert4k import build_transformer_model
from bert4k.pretraining import MaskedLMAtPositions, ReplacedTokenDetection, tie_embeddings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pretrained"))
import batches

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=32, type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def electra(seed=0):
    discriminator = build_transformer_model(dict(TINY))
    generator = build_transformer_model({**TINY, "hidden_size": 16, "embedding_size": 32, "num_attention_heads": 1,
                                         "intermediate_size": 32}, application="mlm", logits=True)
    tie_embeddings(generator, discriminator)
    return ReplacedTokenDetection(generator, discriminator, seed=seed), generator, discriminator


def toy_batch(rows=4, length=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, TINY["vocab_size"], (rows, length)).astype("int32")
    ids[:, 0], ids[1, 9:] = 2, 0
    positions = np.stack([rng.choice(np.arange(1, 8), k, replace=False) for _ in range(rows)]).astype("int32")
    labels = np.take_along_axis(ids, positions, 1).copy()
    labels[0, -1] = 0  # an unused slot
    masked = ids.copy()
    for r in range(rows):
        for p, y in zip(positions[r], labels[r]):
            if y:
                masked[r, p] = 4
    return masked, np.zeros_like(masked), positions, labels, ids


def test_tied_embeddings_are_one_variable_trained_once():
    model, generator, discriminator = electra()
    assert generator.token_embedding.embeddings is discriminator.token_embedding.embeddings
    assert generator.position_embedding.embeddings is discriminator.position_embedding.embeddings
    masked, segments, positions, labels, _ = toy_batch()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = np.array(discriminator.token_embedding.embeddings)
    model.train_on_batch((masked, segments, positions, labels))
    table = [v for v in model.trainable_variables if v is discriminator.token_embedding.embeddings]
    assert len(table) == 1 and not np.allclose(before, np.array(table[0]))
    assert not any(v is not table[0] and tuple(v.shape) == tuple(table[0].shape) for v in generator.trainable_variables)


def test_replaced_token_targets_and_losses_match_numpy():
    model, generator, _discriminator = electra(seed=3)
    masked, segments, positions, labels, original = toy_batch(seed=1)
    mlm_logits, logits, replaced, real = [np.asarray(t) for t in model((masked, segments, positions, labels))]
    # the generator's logits at the positions are its full MLM output there
    full = np.asarray(generator([masked, segments]))
    assert np.abs(np.take_along_axis(full, positions[..., None], 1) - mlm_logits).max() < 1e-4
    # targets: 1 exactly where the filled-in token differs from the original; the padding is not real
    assert np.array_equal(real, (masked != 0).astype("float32"))
    unchanged = np.ones_like(original, bool)
    for r in range(len(labels)):
        for p, y in zip(positions[r], labels[r]):
            if y:
                unchanged[r, p] = False
    assert not replaced[unchanged].any() and replaced.sum() > 0
    # losses: cross-entropy over the used slots + 50 × mean BCE over the real tokens
    x = (masked, segments, positions, labels)
    outputs = model(x)
    mlm_logits, logits, replaced, real = [np.asarray(t) for t in outputs]
    loss = float(model.compute_loss(x, None, outputs))
    used = labels > 0
    z = mlm_logits - mlm_logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    mlm = -np.take_along_axis(logp, labels[..., None], -1)[..., 0][used].mean()
    bce = np.logaddexp(0, logits) - logits * replaced
    expected = mlm + 50 * (bce * real).sum() / real.sum()
    assert abs(loss - expected) < 1e-3 * expected


def test_masked_lm_loss_matches_numpy():
    model = build_transformer_model(dict(TINY), application="mlm", logits=True)
    trainer = MaskedLMAtPositions(model)
    masked, segments, positions, labels, _ = toy_batch(seed=2)
    x = (masked, segments, positions, labels)
    logits = np.asarray(trainer(x))
    full = np.asarray(model([masked, segments]))
    at = np.take_along_axis(full, positions[..., None], 1)
    assert np.abs(at - logits).max() < 1e-4
    z = at - at.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    used = labels > 0
    expected = -np.take_along_axis(logp, labels[..., None], -1)[..., 0][used].mean()
    assert abs(float(trainer.compute_loss(x, None, trainer(x))) - expected) < 1e-4


def step_batches(seed=0, **kw):
    rng = np.random.default_rng(7)
    rows = [rng.integers(5, 50, rng.integers(10, 30)).astype("int32") for _ in range(9)]
    words = [np.repeat(np.arange(len(r)), 2)[:len(r)] for r in rows]  # two-token words
    return batches.StepBatches(rows, words, batch_size=4, maxlen=32, k=7, vocab_size=50, cls_id=2, sep_id=3,
                               mask_id=4, first_normal_id=5, seed=seed, **kw), rows


def test_step_batches_are_a_function_of_seed_and_step():
    a, _rows = step_batches()
    b, _ = step_batches()
    for step in (0, 5, 2, 11):
        for x, y in zip(a.batch(step), b.batch(step)):
            assert np.array_equal(x, y)
    assert not np.array_equal(a.batch(0)[0], a.batch(1)[0])
    # one pass over the 9 rows = 2.25 batches: every row appears once in the first 9 examples
    seen = [a._row_index(i) for i in range(9)]
    assert sorted(seen) == list(range(9))


def test_step_batches_mask_whole_words_and_keep_labels():
    source, rows = step_batches(mask_prob=1.0, random_prob=0.0)
    ids, _segments, positions, labels = source.batch(3)
    for j in range(4):
        row = rows[source._row_index(3 * 4 + j)]
        n = len(row)
        assert ids[j, 0] == 2 and ids[j, n + 1] == 3 and not ids[j, n + 2:].any()
        used = positions[j][labels[j] > 0]
        assert np.array_equal(labels[j][labels[j] > 0], row[used - 1])  # labels are the original tokens
        assert (ids[j, used] == 4).all()  # all [MASK] with mask_prob 1
        words = set((used - 1) // 2)
        for w in words:  # whole words: both tokens of a chosen word are masked (unless cut by the row end / k)
            pair = [t for t in (2 * w, 2 * w + 1) if t < n]
            assert all(t + 1 in used for t in pair) or len(used) == 7
        assert 1 <= len(used) <= 7


def test_electra_export_loads_in_transformers(tmp_path):
    """train_small_bert.export_electra: the discriminator (with its replaced-token head) as HF ElectraForPreTraining,
    the generator as ElectraForMaskedLM and the body as BertForMaskedLM give our outputs in transformers."""
    import torch
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pretrained"))
    import train_small_bert

    model, generator, discriminator = electra(seed=1)
    masked, segments, _, _, _ = toy_batch(seed=4)
    config = {**TINY, "model_type": "bert", "hidden_act": "gelu", "initializer_range": 0.02, "layer_norm_eps": 1e-12,
              "pad_token_id": 0}
    model((masked, segments, *toy_batch(seed=4)[2:4]))  # build the head
    train_small_bert.export_electra(model, discriminator, generator, config, tmp_path)
    ids = torch.tensor(masked, dtype=torch.long)
    kwargs = dict(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=(ids != 0).long())
    real = masked != 0
    with torch.no_grad():
        rtd = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "electra").eval()(**kwargs).logits.numpy()
        gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "electra_generator").eval()(**kwargs).logits
        (tmp_path / "config.json").write_text(__import__("json").dumps({**config, "architectures": ["BertForMaskedLM"]}))
        body = transformers.BertModel.from_pretrained(tmp_path).eval()(**kwargs).last_hidden_state.numpy()
    assert np.abs(rtd - np.asarray(model.detector_logits(masked, segments)))[real].max() < 1e-4
    assert np.abs(gen.numpy() - np.asarray(generator([masked, segments])))[real].max() < 1e-4
    assert np.abs(body - np.asarray(discriminator([masked, segments])))[real].max() < 1e-4


def test_exported_position_table_keeps_the_trained_rows(tmp_path):
    """train_small_bert.keep_trained_positions: the cut checkpoint loads in transformers with the shorter table and
    gives the uncut model's logits on inputs that fit; a longer input is refused."""
    import json

    import pytest
    import torch
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pretrained"))
    import train_small_bert

    config = transformers.BertConfig(**TINY)
    torch.manual_seed(0)
    full = transformers.BertForMaskedLM(config).eval()
    full.save_pretrained(tmp_path, safe_serialization=True)
    train_small_bert.keep_trained_positions(tmp_path, 12)
    assert json.loads((tmp_path / "config.json").read_text())["max_position_embeddings"] == 12
    cut = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
    assert tuple(cut.bert.embeddings.position_embeddings.weight.shape) == (12, TINY["hidden_size"])
    ids = torch.tensor(toy_batch()[0], dtype=torch.long)  # 12 tokens
    with torch.no_grad():
        assert torch.abs(cut(input_ids=ids).logits - full(input_ids=ids).logits).max() < 1e-5
    with pytest.raises(ValueError, match="max_position_embeddings|positions|12"):
        build_transformer_model(tmp_path / "config.json", tmp_path / "model.safetensors")(
            [np.ones((1, 13), "int32"), np.zeros((1, 13), "int32")])


def _layer0_attention(model, token_ids):
    """Layer-0 attention probabilities [heads, seq, seq], computed in numpy from the model's weights."""
    embedded = keras.Model(model.inputs, model.get_layer("Embedding-Norm").output)
    x = np.asarray(embedded([token_ids, np.zeros_like(token_ids)]))[0]
    attention = model.blocks[0].attention
    q = x @ attention.query.kernel.numpy() + attention.query.bias.numpy()
    k = x @ attention.key.kernel.numpy() + attention.key.bias.numpy()
    heads = model.config.num_attention_heads
    size = q.shape[1] // heads
    scores = np.stack([q[:, h * size:(h + 1) * size] @ k[:, h * size:(h + 1) * size].T for h in range(heads)])
    scores = scores / np.sqrt(size)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True)


def test_neighbour_init_points_each_head_at_its_neighbour():
    """train_small_bert.neighbour_attention_init: head 0 attends to i − 1, head 1 to i + 1 (mass ≫ 1/seq), which a
    random initialisation does not."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pretrained"))
    import train_small_bert

    config = {**TINY, "hidden_size": 128, "intermediate_size": 128, "num_hidden_layers": 1,
              "max_position_embeddings": 64, "vocab_size": 500}
    keras.utils.set_random_seed(0)
    model = build_transformer_model(config, application="mlm")
    ids = np.random.default_rng(0).integers(5, 500, (1, 64)).astype("int32")
    inside = np.arange(3, 61)

    def mass(probs, head, offset):
        return probs[head, inside, inside + offset].mean()

    before = _layer0_attention(model, ids)
    assert max(mass(before, h, d) for h in (0, 1) for d in (-1, 1)) < 0.05
    train_small_bert.neighbour_attention_init(model, alpha=1.7, std=0.02)
    after = _layer0_attention(model, ids)
    assert mass(after, 0, -1) > 0.3 and mass(after, 1, 1) > 0.3
    assert mass(after, 0, 1) < 0.05 and mass(after, 1, -1) < 0.05


def test_unigram_bias_starts_the_output_at_the_token_frequencies():
    """train_small_bert.start_at_unigram: softmax of the MLM bias = the add-one token frequencies of the rows."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pretrained"))
    import train_small_bert

    model = build_transformer_model(dict(TINY), application="mlm", logits=True)
    rows = [np.array([5, 5, 7, 9]), np.array([5, 9])]
    train_small_bert.start_at_unigram(model, rows, TINY["vocab_size"])
    bias = next(v for v in model.weights if v.path == "MLM-Bias/bias").numpy()
    expected = np.ones(TINY["vocab_size"])
    for token, count in ((5, 3), (7, 1), (9, 2)):
        expected[token] += count
    np.testing.assert_allclose(np.exp(bias) / np.exp(bias).sum(), expected / expected.sum(), rtol=1e-5)


def test_context_order_gain_separates_order_blind_from_order_aware_predictors():
    """pretrained/context_order.py: shuffling keeps the row's tokens, the masked slots, the ends and the padding;
    a predictor of the bag of tokens scores the same shuffled, one that reads the left neighbour does not."""
    import context_order

    rng = np.random.default_rng(0)
    vocab, rows, length = 40, 8, 20
    token_ids = rng.integers(5, vocab, (rows, length)).astype("int32")
    token_ids[:, 0], token_ids[:, -1], token_ids[3, 15:] = 2, 3, 0
    token_ids[3, 14] = 3
    positions = np.stack([rng.choice(np.arange(2, 12, 2), 3, replace=False) for _ in range(rows)]).astype("int32")
    labels = np.take_along_axis(token_ids, positions - 1, 1)  # the target: the (never masked) left neighbour
    masked = token_ids.copy()
    np.put_along_axis(masked, positions, 4, 1)
    shuffled = context_order.shuffle_context(masked, positions, labels)
    for before, after, where in zip(masked, shuffled, positions):
        assert sorted(before) == sorted(after)
        assert (after[where] == 4).all() and after[0] == 2
        assert (after[before == 0] == 0).all() and after[(before != 0).sum() - 1] == 3
    assert (shuffled != masked).any()

    def bag(inputs):
        counts = np.stack([np.bincount(row, minlength=vocab) for row in inputs[0]])
        return np.repeat(np.log1p(counts)[:, None], length, 1)

    def left_neighbour(inputs):
        return 5.0 * np.eye(vocab)[np.roll(inputs[0], 1, axis=1)]

    batch = [(masked, np.zeros_like(masked), positions, labels)]
    blind, aware = context_order.context_order_gain(bag, batch), context_order.context_order_gain(left_neighbour, batch)
    assert blind["order_gain"] == 0.0
    assert aware["accuracy"] == 1.0 and aware["order_gain"] > 1.0
