"""bert4keras scripts run after renaming the import: a classification script and a UniLM seq2seq script,
written the way bert4keras' examples are (Google checkpoint, DataGenerator, Loss layer, AutoRegressiveDecoder)."""
import json

import numpy as np
import pytest
import torch
import transformers

from bert4k.checkpoints.writers import save_tf_checkpoint
from tests.oracles.hf import randomize
from tests.test_bert_parity import google_names

MAXLEN = 32


@pytest.fixture(scope="module")
def google_checkpoint(tmp_path_factory, vocab_path):
    """A tiny random BERT on the real Chinese vocab, stored the way Google's Chinese BERT ships."""
    config = dict(vocab_size=21128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu")
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(**config))
    randomize(model, seed=7, scale=0.05)
    folder = tmp_path_factory.mktemp("chinese_L-2_H-32_A-4")
    (folder / "bert_config.json").write_text(json.dumps(config))
    save_tf_checkpoint(google_names(model.state_dict()), folder / "bert_model.ckpt")
    return str(folder / "bert_config.json"), str(folder / "bert_model.ckpt"), str(vocab_path)


def load_reviews(path, limit):
    rows = []
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            label, text = line.rstrip("\n").split("\t", 1)
            rows.append((text, int(label)))
            if len(rows) == limit:
                break
    return rows


def test_bert4keras_classification_script(google_checkpoint, data_dir, tmp_path, monkeypatch):
    config_path, checkpoint_path, dict_path = google_checkpoint
    monkeypatch.chdir(tmp_path)
    # ---- from here on: a bert4keras script with `bert4keras` renamed to `bert4k` ----
    from keras.layers import Dense, Dropout

    from bert4k.backend import keras, set_gelu
    from bert4k.models import build_transformer_model
    from bert4k.optimizers import Adam, extend_with_piecewise_linear_lr
    from bert4k.snippets import DataGenerator, sequence_padding
    from bert4k.tokenizers import Tokenizer

    set_gelu("erf")
    tokenizer = Tokenizer(dict_path, do_lower_case=True)

    class data_generator(DataGenerator):
        def __iter__(self, random=False):
            batch_token_ids, batch_segment_ids, batch_labels = [], [], []
            for is_end, (text, label) in self.sample(random):
                token_ids, segment_ids = tokenizer.encode(text, maxlen=MAXLEN)
                batch_token_ids.append(token_ids)
                batch_segment_ids.append(segment_ids)
                batch_labels.append([label])
                if len(batch_token_ids) == self.batch_size or is_end:
                    batch_token_ids = sequence_padding(batch_token_ids)
                    batch_segment_ids = sequence_padding(batch_segment_ids)
                    batch_labels = sequence_padding(batch_labels)
                    yield [batch_token_ids, batch_segment_ids], batch_labels
                    batch_token_ids, batch_segment_ids, batch_labels = [], [], []

    bert = build_transformer_model(config_path=config_path, checkpoint_path=checkpoint_path, with_pool=True,
                                   return_keras_model=False)
    output = Dropout(rate=0.1)(bert.model.output)
    output = Dense(units=2, activation="softmax", kernel_initializer=bert.initializer)(output)
    model = keras.models.Model(bert.model.input, output)
    AdamLR = extend_with_piecewise_linear_lr(Adam, name="AdamLR")
    model.compile(loss="sparse_categorical_crossentropy", optimizer=AdamLR(learning_rate=1e-3, lr_schedule={4: 1}),
                  metrics=["accuracy"])
    train_generator = data_generator(load_reviews(data_dir / "chnsenticorp" / "train.tsv", 32), batch_size=8)
    history = model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=2, verbose=0)
    model.save_weights("best_model.weights")
    model.load_weights("best_model.weights")
    # ---- end of the script ----
    assert len(history.history["loss"]) == 2
    x, y = next(iter(train_generator))
    probs = model.predict(x, verbose=0)
    expected = -np.log(probs[np.arange(len(y)), y[:, 0]]).mean()
    assert np.isclose(model.evaluate(x, y, verbose=0)[0], expected, rtol=1e-5)


@pytest.mark.slow
def test_bert4keras_unilm_seq2seq_script(google_checkpoint, data_dir):
    config_path, checkpoint_path, dict_path = google_checkpoint
    # ---- a bert4keras UniLM title-generation script with `bert4keras` renamed to `bert4k` ----
    from bert4k.backend import K, keras
    from bert4k.layers import Loss
    from bert4k.models import build_transformer_model
    from bert4k.optimizers import Adam
    from bert4k.snippets import AutoRegressiveDecoder, DataGenerator, sequence_padding
    from bert4k.tokenizers import Tokenizer, load_vocab

    token_dict, keep_tokens = load_vocab(dict_path=dict_path, simplified=True,
                                         startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tokenizer = Tokenizer(token_dict, do_lower_case=True)

    class data_generator(DataGenerator):
        def __iter__(self, random=False):
            batch_token_ids, batch_segment_ids = [], []
            for is_end, (title, content) in self.sample(random):
                token_ids, segment_ids = tokenizer.encode(content, title, maxlen=MAXLEN)
                batch_token_ids.append(token_ids)
                batch_segment_ids.append(segment_ids)
                if len(batch_token_ids) == self.batch_size or is_end:
                    batch_token_ids = sequence_padding(batch_token_ids)
                    batch_segment_ids = sequence_padding(batch_segment_ids)
                    yield [batch_token_ids, batch_segment_ids], None
                    batch_token_ids, batch_segment_ids = [], []

    class CrossEntropy(Loss):
        """Cross-entropy on the target segment only."""

        def compute_loss(self, inputs, mask=None):
            y_true, y_mask, y_pred = inputs
            y_true = y_true[:, 1:]
            y_mask = y_mask[:, 1:]
            y_pred = y_pred[:, :-1]
            loss = K.sparse_categorical_crossentropy(y_true, y_pred)
            return K.sum(loss * y_mask) / K.sum(y_mask)

    model = build_transformer_model(config_path, checkpoint_path, application="unilm", keep_tokens=keep_tokens)
    output = CrossEntropy(2)(model.inputs + model.outputs)
    model = keras.models.Model(model.inputs, output)
    model.compile(optimizer=Adam(1e-3))

    class AutoTitle(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            token_ids, segment_ids = inputs
            token_ids = np.concatenate([token_ids, output_ids], 1)
            segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
            return self.last_token(model).predict([token_ids, segment_ids], verbose=0)

        def generate(self, text, topk=1):
            token_ids, segment_ids = tokenizer.encode(text, maxlen=MAXLEN)
            output_ids = self.beam_search([token_ids, segment_ids], topk=topk)
            return tokenizer.decode(output_ids)

    autotitle = AutoTitle(start_id=None, end_id=tokenizer._token_end_id, maxlen=6)
    rows = []
    with open(data_dir / "csl-title" / "dev.tsv", encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                rows.append((parts[0], parts[1]))
            if len(rows) == 16:
                break
    train_generator = data_generator(rows, batch_size=8)
    history = model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=2, verbose=0)
    title = autotitle.generate(rows[0][1], topk=2)
    # ---- end of the script ----
    assert len(history.history["loss"]) == 2 and isinstance(title, str)
    assert len(keep_tokens) == model.get_layer("Embedding-Token").input_dim
    # The loss is the cross-entropy over the title (segment 1) tokens only, as numpy computes it.
    (token_ids, segment_ids), _ = next(iter(train_generator))
    probs = model.predict([token_ids, segment_ids], verbose=0)
    picked = np.take_along_axis(probs[:, :-1], token_ids[:, 1:, None], -1)[..., 0]
    target = segment_ids[:, 1:]
    expected = -(np.log(picked) * target).sum() / target.sum()
    assert np.isclose(model.evaluate([token_ids, segment_ids], verbose=0), expected, rtol=1e-5)
    # Greedy decoding (topk=1) picks the argmax of a full forward pass at every step.
    token_ids, segment_ids = tokenizer.encode(rows[0][1], maxlen=MAXLEN)
    output = []
    for _ in range(6):
        ids = np.array([token_ids + output])
        segments = np.array([segment_ids + [1] * len(output)])
        output.append(int(model.predict([ids, segments], verbose=0)[0, -1].argmax()))
        if output[-1] == tokenizer._token_end_id:
            break
    assert autotitle.beam_search([token_ids, segment_ids], topk=1).tolist() == output
