"""Whole bert4keras example scripts (our own, modelled on bert4keras' `examples/`), each with only the import
renamed, on tiny stand-in checkpoints in the original formats and real data; results checked against numpy.

Marked slow (python -m pytest tests -q -m slow). The NER (CRF), language-model and mT5 title scripts rely on the
Keras mask the model's outputs carry (bert4keras' `mask[1]`, the CRF's padding): their losses are checked against
numpy computations that skip `token_ids == 0` positions."""
import itertools
import json
import math

import numpy as np
import pytest

from bert4k.checkpoints.writers import save_tf_checkpoint
from tests.test_albert_parity import HF_CONFIG, hf_albert  # noqa: F401 - tiny ALBERT, Google format included
from tests.test_gpt2_parity import ML, gpt2_ml_reference, gpt2_ml_weights
from tests.test_migration import google_checkpoint, load_reviews  # noqa: F401 - the shared tiny Google BERT

pytestmark = pytest.mark.slow


def write_vocab(path, text: str, size: int) -> str:
    chars = list(dict.fromkeys(c for c in text if not c.isspace()))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars
    assert len(tokens) >= size
    path.write_text("\n".join(tokens[:size]) + "\n", encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------- basic_language_model_gpt2_ml


def test_gpt2_ml_article_completion_script(tmp_path, data_dir):
    corpus = (data_dir / "zh-plain-corpus" / "zh_corpus.txt").read_text(encoding="utf-8")[:5000]
    dict_path = write_vocab(tmp_path / "vocab.txt", "今天天气不错。" + corpus, ML["vocab_size"])
    weights = gpt2_ml_weights(seed=4)
    checkpoint_path = save_tf_checkpoint(weights, tmp_path / "model.ckpt-100000")
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(ML))
    # ---- a bert4keras script with `bert4keras` renamed to `bert4k` ----
    from bert4k.models import build_transformer_model
    from bert4k.snippets import AutoRegressiveDecoder, uniout  # noqa: F401
    from bert4k.tokenizers import Tokenizer

    tokenizer = Tokenizer(dict_path, token_start=None, token_end=None, do_lower_case=True)
    model = build_transformer_model(config_path=config_path, checkpoint_path=checkpoint_path, model="gpt2_ml")

    class ArticleCompletion(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            token_ids = np.concatenate([inputs[0], output_ids], 1)
            return self.last_token(model).predict(token_ids, verbose=0)

        def generate(self, text, n=1, topp=0.95):
            token_ids, _ = tokenizer.encode(text)
            results = self.random_sample([token_ids], n, topp=topp)
            return [text + tokenizer.decode(ids) for ids in results]

        def greedy(self, text):
            token_ids, _ = tokenizer.encode(text)
            return self.beam_search([token_ids], topk=1)

    end_id = tokenizer.token_to_id("。")
    article_completion = ArticleCompletion(start_id=None, end_id=end_id, maxlen=8, minlen=3)
    np.random.seed(0)
    samples = article_completion.generate("今天天气", n=2)
    best = article_completion.greedy("今天天气")
    # ---- end of the script ----
    assert len(samples) == 2 and all(s.startswith("今天天气") for s in samples)
    # Greedy continuation by the GPT2-ML numpy reference (end id banned before minlen = 3 tokens).
    sequence = tokenizer.encode("今天天气")[0]
    expected = []
    for step in range(8):
        logits = gpt2_ml_reference(weights, np.array([sequence]))[0, -1]
        if step < 2:
            logits[end_id] = -np.inf
        expected.append(int(logits.argmax()))
        sequence = sequence + [expected[-1]]
        if expected[-1] == end_id:
            break
    assert best.tolist() == expected


# ---------------------------------------------------------------------------- task_sequence_labeling_ner_crf


def load_msra(path, limit):
    sentences, chars, labels = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                if chars:
                    sentences.append(("".join(chars), labels))
                chars, labels = [], []
                if len(sentences) == limit:
                    break
                continue
            char, label = line.split("\t")
            chars.append(char)
            labels.append(label)
    return sentences


def numpy_crf_nll(emissions, trans, labels):
    """-log p(labels | emissions) of one sequence (forward algorithm in float64)."""
    emissions, trans = emissions.astype(np.float64), trans.astype(np.float64)
    alpha = emissions[0]
    for e in emissions[1:]:
        alpha = np.log(np.exp(alpha[:, None] + trans).sum(0)) + e
    log_z = np.log(np.exp(alpha).sum())
    score = emissions[np.arange(len(labels)), labels].sum() + trans[labels[:-1], labels[1:]].sum()
    return log_z - score


def brute_force_path(emissions, trans, starts, ends):
    best, best_score = None, -np.inf
    for path in itertools.product(range(len(trans)), repeat=len(emissions)):
        if path[0] not in starts or path[-1] not in ends:
            continue
        score = sum(emissions[t, p] for t, p in enumerate(path)) + sum(trans[a, b] for a, b in itertools.pairwise(path))
        if score > best_score:
            best, best_score = list(path), score
    return best


def test_ner_crf_script(google_checkpoint, data_dir, tmp_path, monkeypatch):  # noqa: F811
    config_path, checkpoint_path, dict_path = google_checkpoint
    monkeypatch.chdir(tmp_path)
    # cut to different lengths (4..13 characters) so that every batch has padding
    data = [(s[:4 + i % 10], y[:4 + i % 10]) for i, (s, y) in enumerate(load_msra(data_dir / "msra-ner" /
                                                                                   "train.txt", 16))]
    # ---- a bert4keras NER script with `bert4keras` renamed to `bert4k` ----
    from keras.layers import Dense

    from bert4k.backend import K, keras
    from bert4k.layers import ConditionalRandomField
    from bert4k.models import build_transformer_model
    from bert4k.optimizers import Adam
    from bert4k.snippets import DataGenerator, ViterbiDecoder, sequence_padding, to_array
    from bert4k.tokenizers import Tokenizer

    categories = ["LOC", "ORG", "PER"]
    id2label = ["O"] + [f"{p}-{c}" for c in categories for p in ("B", "I")]
    label2id = {label: i for i, label in enumerate(id2label)}
    tokenizer = Tokenizer(dict_path, do_lower_case=True)

    class data_generator(DataGenerator):
        def __iter__(self, random=False):
            batch_token_ids, batch_segment_ids, batch_labels = [], [], []
            for is_end, (text, tags) in self.sample(random):
                token_ids = [tokenizer._token_start_id] + tokenizer.tokens_to_ids(list(text.lower())) + [
                    tokenizer._token_end_id]
                labels = [0] + [label2id.get(t, 0) for t in tags] + [0]
                batch_token_ids.append(token_ids)
                batch_segment_ids.append([0] * len(token_ids))
                batch_labels.append(labels)
                if len(batch_token_ids) == self.batch_size or is_end:
                    yield [sequence_padding(batch_token_ids), sequence_padding(batch_segment_ids)], \
                        sequence_padding(batch_labels)
                    batch_token_ids, batch_segment_ids, batch_labels = [], [], []

    model = build_transformer_model(config_path, checkpoint_path)
    output = Dense(len(id2label))(model.output)
    CRF = ConditionalRandomField(lr_multiplier=10)
    output = CRF(output)
    model = keras.models.Model(model.input, output)
    model.compile(loss=CRF.sparse_loss, optimizer=Adam(1e-3), metrics=[CRF.sparse_accuracy])

    class Evaluator(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model.save_weights("./best_model.weights")

    train_generator = data_generator(data, batch_size=8)
    model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=1, callbacks=[Evaluator()],
              verbose=0)
    model.load_weights("./best_model.weights")
    NER = ViterbiDecoder(trans=K.eval(CRF.trans), starts=[0], ends=[0])
    text = data[0][0][:3]  # 5 positions with [CLS]/[SEP]: 7**5 paths for the brute force
    token_ids = [tokenizer._token_start_id] + tokenizer.tokens_to_ids(list(text)) + [tokenizer._token_end_id]
    nodes = model.predict(to_array([token_ids], [[0] * len(token_ids)]), verbose=0)[0]
    path = NER.decode(nodes)
    # ---- end of the script ----
    assert path.tolist() == brute_force_path(nodes, K.eval(CRF.trans), [0], [0])
    x, y = next(iter(train_generator))
    emissions, trans = model.predict(x, verbose=0), K.eval(CRF.trans)
    lengths = (x[0] != 0).sum(1)
    assert len(set(lengths)) > 1
    expected = np.mean([numpy_crf_nll(emissions[i, :n], trans, y[i, :n]) for i, n in enumerate(lengths)])
    assert math.isclose(model.evaluate(x, y, verbose=0)[0], expected, rel_tol=1e-4)


# ---------------------------------------------------------------------------- task_language_model


def test_language_model_script(google_checkpoint, data_dir):  # noqa: F811
    config_path, checkpoint_path, dict_path = google_checkpoint
    with open(data_dir / "tang-poems" / "tang_poems_train.jsonl", encoding="utf-8") as f:
        poems = ["".join(json.loads(line)["paragraphs"]) for line in itertools.islice(f, 16)]
    lines = [poem[:6 + 2 * i] for i, poem in enumerate(poems)]  # different lengths: every batch has padding
    # ---- a bert4keras LM script with `bert4keras` renamed to `bert4k` ----
    from bert4k.backend import K, keras
    from bert4k.layers import Loss
    from bert4k.models import build_transformer_model
    from bert4k.optimizers import Adam
    from bert4k.snippets import DataGenerator, sequence_padding
    from bert4k.tokenizers import Tokenizer, load_vocab

    token_dict, keep_tokens = load_vocab(dict_path=dict_path, simplified=True,
                                         startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tokenizer = Tokenizer(token_dict, do_lower_case=True)

    class data_generator(DataGenerator):
        def __iter__(self, random=False):
            batch_token_ids, batch_segment_ids = [], []
            for is_end, text in self.sample(random):
                token_ids, segment_ids = tokenizer.encode(text, maxlen=24)
                batch_token_ids.append(token_ids)
                batch_segment_ids.append(segment_ids)
                if len(batch_token_ids) == self.batch_size or is_end:
                    yield [sequence_padding(batch_token_ids), sequence_padding(batch_segment_ids)], None
                    batch_token_ids, batch_segment_ids = [], []

    class CrossEntropy(Loss):
        def compute_loss(self, inputs, mask=None):
            y_true, y_pred = inputs
            if mask[1] is None:
                y_mask = 1.0
            else:
                y_mask = K.cast(mask[1], K.floatx())[:, 1:]
            y_true = y_true[:, 1:]
            y_pred = y_pred[:, :-1]
            loss = K.sparse_categorical_crossentropy(y_true, y_pred)
            return K.sum(loss * y_mask) / K.sum(y_mask)

    model = build_transformer_model(config_path, checkpoint_path, application="lm", keep_tokens=keep_tokens)
    output = CrossEntropy(1)([model.inputs[0], model.outputs[0]])
    model = keras.models.Model(model.inputs, output)
    model.compile(optimizer=Adam(1e-5))
    train_generator = data_generator(lines, batch_size=8)
    model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=1, verbose=0)
    # ---- end of the script ----
    x, _ = next(iter(train_generator))
    probs = model.predict(x, verbose=0)
    ids = x[0]
    real = (ids[:, 1:] != 0)
    assert not real.all()  # bert4keras: the token embedding masks id 0, the loss skips padded targets
    picked = np.take_along_axis(probs[:, :-1], ids[:, 1:, None], -1)[..., 0]
    expected = -(np.log(picked) * real).sum() / real.sum()
    assert math.isclose(model.evaluate(x, verbose=0), expected, rel_tol=1e-4)


# ---------------------------------------------------------------------------- task_sentiment_albert


def test_sentiment_albert_script(hf_albert, data_dir, tmp_path, monkeypatch):  # noqa: F811
    reference, formats = hf_albert
    google_config, checkpoint_path = formats["google"]
    monkeypatch.chdir(tmp_path)
    from bert4k import config

    monkeypatch.setitem(config.ACTIVATIONS, "gelu", config.ACTIVATIONS["gelu"])  # the script's set_gelu is global
    rows = load_reviews(data_dir / "chnsenticorp" / "train.tsv", 24)
    dict_path = write_vocab(tmp_path / "vocab.txt", "".join(text for text, _ in rows), HF_CONFIG["vocab_size"])
    config_path = tmp_path / "albert_config.json"
    config_path.write_text(json.dumps(google_config))
    maxlen = 24
    # ---- a bert4keras script with `bert4keras` renamed to `bert4k` ----
    from keras.layers import Dense, Lambda

    from bert4k.backend import keras, set_gelu
    from bert4k.models import build_transformer_model
    from bert4k.optimizers import Adam, extend_with_piecewise_linear_lr
    from bert4k.snippets import DataGenerator, sequence_padding
    from bert4k.tokenizers import Tokenizer

    set_gelu("tanh")
    tokenizer = Tokenizer(dict_path, do_lower_case=True)

    class data_generator(DataGenerator):
        def __iter__(self, random=False):
            batch_token_ids, batch_segment_ids, batch_labels = [], [], []
            for is_end, (text, label) in self.sample(random):
                token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
                batch_token_ids.append(token_ids)
                batch_segment_ids.append(segment_ids)
                batch_labels.append([label])
                if len(batch_token_ids) == self.batch_size or is_end:
                    batch_token_ids = sequence_padding(batch_token_ids)
                    batch_segment_ids = sequence_padding(batch_segment_ids)
                    batch_labels = sequence_padding(batch_labels)
                    yield [batch_token_ids, batch_segment_ids], batch_labels
                    batch_token_ids, batch_segment_ids, batch_labels = [], [], []

    bert = build_transformer_model(config_path=config_path, checkpoint_path=checkpoint_path, model="albert",
                                   return_keras_model=False)
    output = Lambda(lambda x: x[:, 0], name="CLS-token")(bert.model.output)
    output = Dense(units=2, activation="softmax", kernel_initializer=bert.initializer)(output)
    model = keras.models.Model(bert.model.input, output)
    AdamLR = extend_with_piecewise_linear_lr(Adam, name="AdamLR")
    model.compile(loss="sparse_categorical_crossentropy", optimizer=AdamLR(learning_rate=1e-4,
                                                                           lr_schedule={3: 1, 6: 0.1}),
                  metrics=["accuracy"])
    train_generator = data_generator(rows, batch_size=8)
    x, y = next(iter(train_generator))
    cls_before = keras.models.Model(bert.model.input, model.get_layer("CLS-token").output).predict(x, verbose=0)

    class Evaluator(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best_val_acc = -1.0

        def on_epoch_end(self, epoch, logs=None):
            if logs["accuracy"] > self.best_val_acc:
                self.best_val_acc = logs["accuracy"]
                model.save_weights("best_model.weights")

    model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=2, callbacks=[Evaluator()],
              verbose=0)
    model.load_weights("best_model.weights")
    # ---- end of the script ----
    import torch

    with torch.no_grad():
        expected_cls = reference.albert(torch.tensor(x[0]), attention_mask=torch.tensor(x[0] != 0),
                                        token_type_ids=torch.tensor(x[1])).last_hidden_state[:, 0].numpy()
    assert float(np.max(np.abs(cls_before - expected_cls))) < 1e-4
    probs = model.predict(x, verbose=0)
    expected = -np.log(probs[np.arange(len(y)), y[:, 0]]).mean()
    assert math.isclose(model.evaluate(x, y, verbose=0)[0], expected, rel_tol=1e-5)


# ---------------------------------------------------------------------------- task_seq2seq_autotitle_csl_mt5


def test_mt5_title_script(tmp_path, data_dir):
    """mT5 on a mesh-TF checkpoint (the CN SentencePiece's own ids, so no 250k-row keep_tokens stand-in)."""
    import torch
    import transformers

    from tests.oracles.hf import randomize
    from tests.test_t5_parity import mesh_tf_names

    spm_path = str(data_dir / "spm-mt5-chinese" / "sentencepiece_cn.model")
    vocab = len(json.loads((data_dir / "spm-mt5-chinese" / "sentencepiece_cn_keep_tokens.json").read_text()))
    torch.manual_seed(0)
    reference = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=vocab, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, decoder_start_token_id=0))
    reference.lm_head.weight = torch.nn.Parameter(reference.shared.weight.detach().clone())
    randomize(reference, seed=2, scale=0.1)
    checkpoint_path = save_tf_checkpoint(mesh_tf_names(reference.state_dict(), "rms_norm"),
                                         tmp_path / "model.ckpt-1000000")
    config_path = tmp_path / "mt5_small_config.json"
    config_path.write_text(json.dumps({
        "vocab_size": vocab, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        "attention_head_size": 4, "intermediate_size": 24, "hidden_act": ["gelu", "linear"],
        "hidden_dropout_prob": 0.1, "attention_scale": False}))
    rows = []
    with open(data_dir / "csl-title" / "dev.tsv", encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                rows.append((parts[0][:2 + 3 * (len(rows) % 4)], parts[1]))  # titles of different lengths
            if len(rows) == 16:
                break
    max_c_len, max_t_len = 48, 12
    # ---- a bert4keras script with `bert4keras` renamed to `bert4k` ----
    from bert4k.backend import K
    from bert4k.layers import Loss
    from bert4k.models import build_transformer_model
    from bert4k.optimizers import Adam
    from bert4k.snippets import AutoRegressiveDecoder, DataGenerator, sequence_padding
    from bert4k.tokenizers import SpTokenizer

    tokenizer = SpTokenizer(spm_path, token_start=None, token_end="</s>")

    class data_generator(DataGenerator):
        def __iter__(self, random=False):
            batch_c_token_ids, batch_t_token_ids = [], []
            for is_end, (title, content) in self.sample(random):
                c_token_ids, _ = tokenizer.encode(content, maxlen=max_c_len)
                t_token_ids, _ = tokenizer.encode(title, maxlen=max_t_len)
                batch_c_token_ids.append(c_token_ids)
                batch_t_token_ids.append([0] + t_token_ids)
                if len(batch_c_token_ids) == self.batch_size or is_end:
                    yield [sequence_padding(batch_c_token_ids), sequence_padding(batch_t_token_ids)], None
                    batch_c_token_ids, batch_t_token_ids = [], []

    class CrossEntropy(Loss):
        def compute_loss(self, inputs, mask=None):
            y_true, y_pred = inputs
            y_true = y_true[:, 1:]
            y_mask = K.cast(mask[1], K.floatx())[:, 1:]
            y_pred = y_pred[:, :-1]
            loss = K.sparse_categorical_crossentropy(y_true, y_pred)
            return K.sum(loss * y_mask) / K.sum(y_mask)

    t5 = build_transformer_model(config_path=config_path, checkpoint_path=checkpoint_path, model="mt5.1.1",
                                 return_keras_model=False, name="T5")
    encoder, decoder, model = t5.encoder, t5.decoder, t5.model
    output = CrossEntropy(1)([model.inputs[1], model.outputs[0]])
    from keras.models import Model

    model = Model(model.inputs, output)
    model.compile(optimizer=Adam(2e-4))

    class AutoTitle(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            c_encoded = inputs[0]
            return self.last_token(decoder).predict([c_encoded, output_ids], verbose=0)

        def generate(self, text, topk=1):
            c_token_ids, _ = tokenizer.encode(text, maxlen=max_c_len)
            c_encoded = encoder.predict(np.array([c_token_ids]), verbose=0)[0]
            output_ids = self.beam_search([c_encoded], topk=topk)
            return tokenizer.decode([int(i) for i in output_ids])

    autotitle = AutoTitle(start_id=0, end_id=tokenizer._token_end_id, maxlen=max_t_len)
    train_generator = data_generator(rows, batch_size=8)
    model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=1, verbose=0)
    title = autotitle.generate(rows[0][1])
    # ---- end of the script ----
    assert isinstance(title, str)
    (c_ids, t_ids), _ = next(iter(train_generator))
    probs = model.predict([c_ids, t_ids], verbose=0)
    picked = np.take_along_axis(probs[:, :-1], t_ids[:, 1:, None], -1)[..., 0]
    real = t_ids[:, 1:] != 0
    assert not real.all()
    expected = -(np.log(picked) * real).sum() / real.sum()
    assert math.isclose(model.evaluate([c_ids, t_ids], verbose=0), expected, rel_tol=1e-4)


# ---------------------------------------------------------------------------- task_relation_extraction


def synthetic_spo_corpus() -> list[dict]:
    """Sentences of different lengths, each with its (subject, predicate, object) facts."""
    people, places, spouses = ["张三", "李四", "王小明", "赵六"], ["北京", "上海", "南京市", "广州"], ["小红", "小芳"]
    rows = []
    for i, person in enumerate(people * 2):
        place, spouse = places[(i + 1) % 4], spouses[i % 2]
        if i % 2:
            rows.append({"text": f"{person}出生于{place}", "spo_list": [(person, "出生地", place)]})
        else:
            rows.append({"text": f"{person}的妻子是{spouse}，{person}生于{place}。",
                         "spo_list": [(person, "妻子", spouse), (person, "出生地", place)]})
    return rows


def numpy_binary_crossentropy(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_relation_extraction_script(google_checkpoint):  # noqa: F811
    """Subject pointers, then object pointers per predicate with the subject fed in by a conditional LayerNorm; the
    loss masks padding through `mask[4]`, the Keras mask of the BERT output. The object branch starts, as in
    bert4keras, from `bert.model.layers[-2].get_output_at(-1)`: the last block's sum before its LayerNorm, which the
    conditional LayerNorm replaces (values: tests/test_migration_views.py)."""
    config_path, checkpoint_path, dict_path = google_checkpoint
    train_data = synthetic_spo_corpus()
    # ---- a bert4keras relation-extraction script with `bert4keras` renamed to `bert4k` ----
    from keras.layers import Dense, Input, Lambda, Reshape
    from keras.models import Model

    from bert4k.backend import K, batch_gather
    from bert4k.layers import LayerNormalization, Loss
    from bert4k.models import build_transformer_model
    from bert4k.optimizers import Adam, extend_with_exponential_moving_average
    from bert4k.snippets import DataGenerator, sequence_padding, to_array
    from bert4k.tokenizers import Tokenizer

    maxlen = 32
    predicate2id = {"出生地": 0, "妻子": 1}
    id2predicate = {i: p for p, i in predicate2id.items()}
    tokenizer = Tokenizer(dict_path, do_lower_case=True)

    def search(pattern, sequence):
        n = len(pattern)
        for i in range(len(sequence)):
            if sequence[i:i + n] == pattern:
                return i
        return -1

    class data_generator(DataGenerator):
        def __iter__(self, random=False):
            batch_token_ids, batch_segment_ids = [], []
            batch_subject_labels, batch_subject_ids, batch_object_labels = [], [], []
            for is_end, d in self.sample(random):
                token_ids, segment_ids = tokenizer.encode(d["text"], maxlen=maxlen)
                spoes = {}
                for s, p, o in d["spo_list"]:
                    s, o = tokenizer.encode(s)[0][1:-1], tokenizer.encode(o)[0][1:-1]
                    s_idx, o_idx = search(s, token_ids), search(o, token_ids)
                    if s_idx != -1 and o_idx != -1:
                        s = (s_idx, s_idx + len(s) - 1)
                        spoes.setdefault(s, []).append((o_idx, o_idx + len(o) - 1, predicate2id[p]))
                subject_labels = np.zeros((len(token_ids), 2))
                for s in spoes:
                    subject_labels[s[0], 0] = subject_labels[s[1], 1] = 1
                subject_ids = min(spoes)
                object_labels = np.zeros((len(token_ids), len(predicate2id), 2))
                for o in spoes[subject_ids]:
                    object_labels[o[0], o[2], 0] = object_labels[o[1], o[2], 1] = 1
                batch_token_ids.append(token_ids)
                batch_segment_ids.append(segment_ids)
                batch_subject_labels.append(subject_labels)
                batch_subject_ids.append(subject_ids)
                batch_object_labels.append(object_labels)
                if len(batch_token_ids) == self.batch_size or is_end:
                    yield [sequence_padding(batch_token_ids), sequence_padding(batch_segment_ids),
                           sequence_padding(batch_subject_labels), np.array(batch_subject_ids),
                           sequence_padding(batch_object_labels)], None
                    batch_token_ids, batch_segment_ids = [], []
                    batch_subject_labels, batch_subject_ids, batch_object_labels = [], [], []

    def extract_subject(inputs):
        output, subject_ids = inputs
        start = batch_gather(output, subject_ids[:, :1])
        end = batch_gather(output, subject_ids[:, 1:])
        return K.concatenate([start, end], 2)[:, 0]

    subject_labels = Input(shape=(None, 2), name="Subject-Labels")
    subject_ids = Input(shape=(2,), name="Subject-Ids")
    object_labels = Input(shape=(None, len(predicate2id), 2), name="Object-Labels")
    bert = build_transformer_model(config_path=config_path, checkpoint_path=checkpoint_path,
                                   return_keras_model=False)
    output = Dense(units=2, activation="sigmoid", kernel_initializer=bert.initializer)(bert.model.output)
    subject_preds = Lambda(lambda x: x ** 2)(output)
    subject_model = Model(bert.model.inputs, subject_preds)
    output = bert.model.layers[-2].get_output_at(-1)
    subject = Lambda(extract_subject)([output, subject_ids])
    output = LayerNormalization(conditional=True)([output, subject])
    output = Dense(units=len(predicate2id) * 2, activation="sigmoid", kernel_initializer=bert.initializer)(output)
    output = Lambda(lambda x: x ** 4)(output)
    object_preds = Reshape((-1, len(predicate2id), 2))(output)
    object_model = Model(bert.model.inputs + [subject_ids], object_preds)

    class TotalLoss(Loss):
        def compute_loss(self, inputs, mask=None):
            subject_labels, object_labels = inputs[:2]
            subject_preds, object_preds, _ = inputs[2:]
            mask = 1.0 if mask[4] is None else K.cast(mask[4], K.floatx())
            subject_loss = K.mean(K.binary_crossentropy(subject_labels, subject_preds), 2)
            subject_loss = K.sum(subject_loss * mask) / K.sum(mask)
            object_loss = K.sum(K.mean(K.binary_crossentropy(object_labels, object_preds), 3), 2)
            object_loss = K.sum(object_loss * mask) / K.sum(mask)
            return subject_loss + object_loss

    subject_preds, object_preds = TotalLoss([2, 3])([subject_labels, object_labels, subject_preds, object_preds,
                                                     bert.model.output])
    train_model = Model(bert.model.inputs + [subject_labels, subject_ids, object_labels],
                        [subject_preds, object_preds])
    AdamEMA = extend_with_exponential_moving_average(Adam, name="AdamEMA")
    train_model.compile(optimizer=AdamEMA(learning_rate=1e-3))

    def extract_spoes(text):
        tokens = tokenizer.tokenize(text, maxlen=maxlen)
        mapping = tokenizer.rematch(text, tokens)
        token_ids, segment_ids = to_array(*[[x] for x in tokenizer.encode(text, maxlen=maxlen)])
        subject_preds = subject_model.predict([token_ids, segment_ids], verbose=0)
        subject_preds[:, [0, -1]] *= 0
        start, end = np.where(subject_preds[0, :, 0] > 0.6)[0], np.where(subject_preds[0, :, 1] > 0.5)[0]
        subjects = [(i, end[end >= i][0]) for i in start if (end >= i).any()]
        spoes = []
        if subjects:
            subjects = np.array(subjects)
            object_preds = object_model.predict([np.repeat(token_ids, len(subjects), 0),
                                                 np.repeat(segment_ids, len(subjects), 0), subjects], verbose=0)
            object_preds[:, [0, -1]] *= 0
            for subject, object_pred in zip(subjects, object_preds):
                for _start, predicate1 in zip(*np.where(object_pred[:, :, 0] > 0.6)):
                    for _end, predicate2 in zip(*np.where(object_pred[:, :, 1] > 0.5)):
                        if _start <= _end and predicate1 == predicate2:
                            spoes.append(((mapping[subject[0]][0], mapping[subject[1]][-1]), predicate1,
                                          (mapping[_start][0], mapping[_end][-1])))
                            break
        return [(text[s[0]:s[1] + 1], id2predicate[p], text[o[0]:o[1] + 1]) for s, p, o in spoes]

    train_generator = data_generator(train_data, batch_size=4)
    train_model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=1, verbose=0)
    spoes = extract_spoes(train_data[0]["text"])
    # ---- end of the script ----
    assert isinstance(spoes, list) and all(p in predicate2id for _, p, _ in spoes)
    x, _ = next(iter(train_generator))
    token_ids, _, y_subject, _, y_object = x
    real = (token_ids != 0).astype("float64")
    assert not real.all()  # the batch has padding, which the loss must skip
    p_subject, p_object = train_model.predict(x, verbose=0)
    subject_loss = (numpy_binary_crossentropy(y_subject, p_subject).mean(2) * real).sum() / real.sum()
    object_loss = (numpy_binary_crossentropy(y_object, p_object).mean(3).sum(2) * real).sum() / real.sum()
    assert math.isclose(train_model.evaluate(x, verbose=0), subject_loss + object_loss, rel_tol=1e-4)
