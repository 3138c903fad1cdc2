"""Chinese named-entity recognition on MSRA NER (PER / LOC / ORG, IOB2): a Transformer encoder with three heads
(per-token softmax, CRF, GlobalPointer; `--heads egp` adds EfficientGlobalPointer) beside the classic baseline, a linear-chain CRF on character-window
features (sklearn-crfsuite: characters at ±2, the bigrams among them), all trained and scored on the same split.

Data: msra-ner/train.txt (one `char<TAB>tag` per line, a blank line between sentences). It has no official dev or
test set, so a deterministic 10% of the sentences (by MD5 of the text) is held out for testing and 5% of the rest
is the dev set.

Your data: --train FILE [--dev FILE] [--test FILE], each either IOB2 lines (`char<TAB>tag`, a blank line between
sentences, like msra-ner/train.txt) or JSONL (`.jsonl`) with the fields `text` and `entities`, a list of
`[type, start, end]` (character offsets, `end` inclusive; an optional 4th item, the entity's text, is checked).
Without --test / --dev, the held-out parts above are cut from --train. Every head's model is saved in
--out/<head>/ (model.keras + vocab.txt), and `--predict FILE --saved DIR` tags FILE (the same formats; JSONL
without `entities` for unlabelled text) with each head saved there, scoring it when FILE is labelled.

Metric: entity-level micro precision / recall / F1, an entity counting only with exact span and type.

Features: beside the encoder output, each character gets embeddings of the character bigrams around it
(`--bigram-dim`, `--bigram-offsets`: a table over the training text's bigrams seen ≥ `--bigram-min-count` times,
the rarer and unseen ones sharing `[UNK]`; `bert4k.layers.NgramEmbedding`), the lexical evidence the baseline's
bigram features have, learnt fast by a table where the encoder would need many steps. The tagging heads learn
BIOES tags by default (`--scheme`; E and S mark an entity's end and single-character entities) and decode the
best sequence the scheme allows.

Heads: the softmax and CRF emission layers start with the log tag frequencies of the training data as their bias
(with a zero bias the encoder learns the mostly-`O` prior itself, by making all token vectors alike, and the
softmax head collapses to all-`O`). The softmax head decodes the best valid tag sequence (Viterbi over its
log-probabilities), the CRF head its Viterbi path under the same rules. The head's own layer (emissions,
GlobalPointer projections, the bigram table) learns `--head-lr-multiplier` times faster than the encoder (its
weights stored divided by it and scaled back; the bigram table at `--bigram-lr-multiplier` if given):
a GlobalPointer at the encoder's rate had not scored one span above 0 after 150 MSRA steps.

Long sentences: the encoder sees windows of `--maxlen - 2` characters (`[CLS] chars [SEP]`); every window of a
sentence is labelled and the entities mapped back to sentence offsets, so nothing is dropped (an entity crossing
a window boundary is split there). Empty sentences (blank-line runs, JSONL records with an empty text) are skipped
when reading, except that --predict keeps empty JSONL texts (no entities) so that output row i is record i. A tag
that is not `O` / `B-T` / `I-T`, or (with `--test`) of a type the training data lacks, is an error naming the file
and line; so are overlapping or nested JSONL entities (record and entities named: tags cannot express them).

    python tasks/ner.py                                   # from our pretrained model, all three heads
    python tasks/ner.py --heads crf --scheme BIO --bigram-dim 0   # the encoder alone, IOB2 tags
    python tasks/ner.py --train-limit 5000 --limit 2000   # a subset: 5000 training, 2000 dev/test sentences
    python tasks/ner.py --train mine.txt --test mine_test.jsonl --heads crf
    python tasks/ner.py --predict new.jsonl --saved runs/ner-mine-bert4k-small-zh

Writes to --out: metrics.json, predictions.jsonl and, per head, a folder with log.csv, learning_curve.png,
model.keras, vocab.txt and (with bigrams) bigrams.json, the bigram vocabulary.
"""
from __future__ import annotations

import dataclasses
import json
import resource
import time
from pathlib import Path

import common
import keras
import numpy as np
from keras import ops

from bert4k import tagging, training
from bert4k.layers import ConditionalRandomField, EfficientGlobalPointer, GlobalPointer, NgramEmbedding
from bert4k.layers.global_pointer import decode_spans, global_pointer_crossentropy
from bert4k.layers.initializers import truncated_normal

HEADS = ("softmax", "crf", "gp", "egp")
DEFAULT_HEADS = ("softmax", "crf", "gp")
SPAN_HEADS = {"gp": GlobalPointer, "egp": EfficientGlobalPointer}  # span heads: logits [types, n, n]
GP_THRESHOLDS = (-3.0, -2.0, -1.5, -1.0, -0.5, 0.0)
TEST_FRACTION = 0.1
DEV_FRACTION = 0.05
BIGRAMS_FILE = "bigrams.json"  # beside a head's model.keras: the bigram vocabulary of its Bigram-Ids input
FILE_FORMAT = ("IOB2 (`char<TAB>tag` lines, a blank line between sentences) or JSONL (.jsonl) with the fields "
               "text and entities ([type, start, end] character offsets, end inclusive)")


def parse_args(argv=None):
    p = common.task_parser(__doc__, out="ner", epochs=3, batch_size=16, maxlen=128, lr=3e-4, columns="text, entities",
                           file_format=FILE_FORMAT)
    p.add_argument("--heads", default=",".join(DEFAULT_HEADS), help=f"comma-separated subset of {','.join(HEADS)} "
                   "(egp: EfficientGlobalPointer; default: %(default)s)")
    p.add_argument("--train-limit", type=int, default=0, help="at most N training sentences (overrides --limit)")
    p.add_argument("--crf-lr-multiplier", type=float, default=100.0, help="default: %(default)s")
    p.add_argument("--head-lr-multiplier", type=float, default=10.0, help="the head's layer (softmax / CRF emissions, "
                   "GlobalPointer projections) learns this many times faster than the encoder (default: %(default)s)")
    p.add_argument("--gp-head-size", type=int, default=64, help="default: %(default)s")
    p.add_argument("--gp-threshold", type=float, help="GlobalPointer span threshold (default: the best on the dev "
                   f"set of {GP_THRESHOLDS})")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--scheme", choices=list(tagging.SCHEMES), default="BIOES", help="the tags the softmax and CRF "
                   "heads learn (the data files stay IOB2; default: %(default)s)")
    p.add_argument("--bigram-dim", type=int, default=64, help="character-bigram embeddings of this size (each "
                   "character's bigrams at --bigram-offsets) concatenated with the encoder output before the head; "
                   "0 = none (default: %(default)s)")
    p.add_argument("--bigram-offsets", default="-2,-1,0,1", help="the bigrams of character i: offset k is the bigram "
                   "of characters i+k and i+k+1 (default: %(default)s, every bigram within ±2, as the baseline's)")
    p.add_argument("--bigram-lr-multiplier", type=float, help="the bigram table learns this many times faster than "
                   "the encoder (default: --head-lr-multiplier)")
    p.add_argument("--bigram-min-count", type=int, default=2, help="bigrams seen fewer times in the training data "
                   "share the [UNK] row (default: %(default)s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the sklearn-crfsuite baseline")
    p.add_argument("--baseline-iterations", type=int, default=100, help="L-BFGS iterations (default: %(default)s)")
    args = p.parse_args(argv)
    for name in ("head_lr_multiplier", "crf_lr_multiplier", "bigram_lr_multiplier"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0, got {value}")
    return args


# === data ===

@dataclasses.dataclass
class Sentence:
    chars: list[str]
    spans: list[tagging.Entity]

    @property
    def text(self) -> str:
        return "".join(self.chars)


def read_iob(path: Path) -> list[Sentence]:
    """Sentences of a `char<TAB>tag` file; blank lines separate sentences (runs of them are one separator)."""
    sentences, chars, tags, first_line = [], [], [], 1
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                if chars:
                    sentences.append(_sentence(chars, tags, f"{path}:{first_line}"))
                chars, tags = [], []
                continue
            char, sep, tag = line.rpartition("\t")
            if not sep or len(char) != 1:
                raise ValueError(f"{path}:{n}: expected 'char<TAB>tag', got {line[:40]!r}")
            if not chars:
                first_line = n
            chars.append(char)
            tags.append(tag.strip())
    if chars:
        sentences.append(_sentence(chars, tags, f"{path}:{first_line}"))
    return sentences


def read_sentences(path: str | Path, labelled: bool = True, keep_empty: bool = False) -> list[Sentence]:
    """Sentences of an IOB2 file (`read_iob`) or of a JSONL file (`.jsonl`: `text`, and `entities` unless
    `labelled=False`). JSONL records with an empty text are skipped unless `keep_empty` (then sentence i is
    record i); overlapping or nested entities raise (tags, and so the tagging heads and the baseline, cannot
    express them)."""
    path = Path(path)
    if path.suffix != ".jsonl":
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {path}")
        return read_iob(path)
    sentences = []
    for n, row in enumerate(common.read_records(path, ("text", "entities") if labelled else ("text",)), 1):
        text, spans = row["text"], []
        for entity in row.get("entities") or []:
            ok = isinstance(entity, list) and len(entity) in (3, 4) and isinstance(entity[0], str) and all(
                isinstance(i, int) and 0 <= i < len(text) for i in entity[1:3]) and entity[1] <= entity[2]
            if ok and len(entity) == 4 and entity[3] != text[entity[1]:entity[2] + 1]:
                raise ValueError(f"{path}: record {n}: entity {entity} says {entity[3]!r} but the text there is "
                                 f"{text[entity[1]:entity[2] + 1]!r}")
            if not ok:
                raise ValueError(f"{path}: record {n}: expected entities as [type, start, end] with 0 ≤ start ≤ end "
                                 f"< {len(text)} (the text's length), got {entity!r}")
            spans.append((entity[0], entity[1], entity[2]))
        spans = sorted(set(spans), key=lambda e: (e[1], e[2], e[0]))
        try:
            tagging.spans_to_tags(spans, len(text))
        except ValueError as e:
            raise ValueError(f"{path}: record {n}: {e}") from None
        if text or keep_empty:
            sentences.append(Sentence(list(text), spans))
    return sentences


def _sentence(chars, tags, where) -> Sentence:
    try:
        return Sentence(chars, tagging.tags_to_spans(tags))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def split(args) -> tuple[list[Sentence], list[Sentence], list[Sentence], str]:
    """`(train, dev, test, test_name)`: --train (default msra-ner/train.txt) less the held-out test part (unless
    --test) and the dev part (unless --dev)."""
    sentences = read_sentences(args.train) if args.train else read_iob(common.data_path("msra-ner", "train.txt"))
    if args.test:
        rest, test, name = sentences, read_sentences(args.test), str(args.test)
    else:
        rest = [s for s in sentences if not common.held_out(s.text, TEST_FRACTION)]
        test = [s for s in sentences if common.held_out(s.text, TEST_FRACTION)]
        name = f"{Path(args.train).name if args.train else 'msra-ner'} held-out {TEST_FRACTION:.0%}"
    if args.dev:
        train, dev = rest, read_sentences(args.dev)
    else:
        train = [s for s in rest if not common.held_out("dev:" + s.text, DEV_FRACTION)]
        dev = [s for s in rest if common.held_out("dev:" + s.text, DEV_FRACTION)]
    train = common.limited(train, args.train_limit or args.limit)
    return train, common.limited(dev, args.limit), common.limited(test, args.limit), name


def entity_types(train: list[Sentence], test: list[Sentence], test_name: str) -> list[str]:
    types = sorted({k for s in train for k, _, _ in s.spans})
    unknown = sorted({k for s in test for k, _, _ in s.spans} - set(types))
    if unknown:
        raise ValueError(f"{test_name}: entity types {unknown} do not occur in the training data (types {types})")
    return types


@dataclasses.dataclass
class Piece:
    """One encoder window of a sentence: token ids `[CLS] chars [SEP]`, the window's entities in window char
    positions, and its offset in the sentence."""

    sentence: int
    offset: int
    token_ids: list[int]
    spans: list[tagging.Entity]
    bigram_ids: list[int] | None = None  # aligned with token_ids (`BigramVocab.window_ids`)


def featurize(sentences: list[Sentence], tokenizer, maxlen: int,
              bigrams: tagging.BigramVocab | None = None) -> list[Piece]:
    """The encoder windows of `sentences` (with their bigram ids when `bigrams` is given)."""
    if maxlen < 3:
        raise ValueError(f"--maxlen must be ≥ 3 ([CLS], one char, [SEP]), got {maxlen}")
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    pieces = []
    for i, s in enumerate(sentences):
        for start, end in tagging.windows(len(s.chars), maxlen - 2):
            ids = [cls, *tokenizer.tokens_to_ids([c.lower() for c in s.chars[start:end]]), sep]
            grams = None if bigrams is None else bigrams.window_ids(s.chars, start, end)
            pieces.append(Piece(i, start, ids, tagging.clip_spans(s.spans, start, end), grams))
    return pieces


def model_inputs(pieces: list[Piece], pad_to: int = 1) -> tuple[np.ndarray, ...]:
    """`(token_ids, segment_ids[, bigram_ids])` of a batch, padded with 0 to a multiple of `pad_to`."""
    ids = common._pad([p.token_ids for p in pieces])
    ids = np.pad(ids, ((0, 0), (0, -ids.shape[1] % pad_to)))
    if pieces[0].bigram_ids is None:
        return ids, np.zeros_like(ids)
    grams = np.zeros_like(ids)
    for row, p in zip(grams, pieces):
        row[:len(p.bigram_ids)] = p.bigram_ids
    return ids, np.zeros_like(ids), grams


def tag_labels(piece: Piece, tagset: tagging.TagSet) -> list[int]:
    """Tag id + 1 per token (0 is padding); `[CLS]` and `[SEP]` are `O`."""
    tags = tagset.tags_of(piece.spans, len(piece.token_ids) - 2)
    return [1, *(i + 1 for i in tagset.encode(tags)), 1]


def span_targets(pieces: list[Piece], types: list[str], length: int) -> np.ndarray:
    """GlobalPointer targets `[batch, types, length, length]` (token positions: char i is token i + 1)."""
    y = np.zeros((len(pieces), len(types), length, length), dtype="float32")
    index = {k: i for i, k in enumerate(types)}
    for b, p in enumerate(pieces):
        for kind, s, e in p.spans:
            y[b, index[kind], s + 1, e + 1] = 1.0
    return y


def gp_dataset(pieces: list[Piece], types: list[str], batch_size: int, seed: int):
    import tensorflow as tf

    def make_batch(index):
        batch = [pieces[i] for i in index]
        x = model_inputs(batch)
        return x, span_targets(batch, types, x[0].shape[1])

    ids = tf.TensorSpec([None, None], tf.int32)
    inputs = (ids,) * (2 if pieces[0].bigram_ids is None else 3)
    signature = (inputs, tf.TensorSpec([None, len(types), None, None], tf.float32))
    return common.batched_dataset([len(p.token_ids) for p in pieces], batch_size, make_batch, signature, seed=seed)


# === models ===

def masked_token_crossentropy(y_true, logits):
    """Softmax cross-entropy per token `[batch, seq]`, 0 where the label (tag id + 1) is 0 (padding); Keras
    averages it (over the real tokens when the encoder output carries a Keras mask)."""
    y_true = ops.cast(y_true, "int32")
    keep = ops.cast(ops.greater(y_true, 0), "float32")
    ce = keras.losses.sparse_categorical_crossentropy(ops.maximum(y_true - 1, 0), logits, from_logits=True)
    return ce * keep


@keras.saving.register_keras_serializable("bert4k_tasks")
def real_tokens(token_ids):
    """True on the tokens that are not padding (id 0)."""
    return ops.not_equal(token_ids, 0)


def head_dense(x, units: int, bias, lr_multiplier: float, initializer, name: str):
    """`Dense(units)(x)` whose weights learn `lr_multiplier` times faster under Adam-type optimisers: stored divided
    by it and scaled back by a `Rescaling` layer after (the same initial outputs; `bias` is the initial bias)."""
    dense = keras.layers.Dense(units, kernel_initializer=initializer, bias_initializer=keras.initializers.Constant(
        np.asarray(bias, "float32") / lr_multiplier), dtype="float32", name=name)
    y = dense(x)
    if lr_multiplier == 1:
        return y
    dense.kernel.assign(dense.kernel / lr_multiplier)
    return keras.layers.Rescaling(lr_multiplier, dtype="float32", name=f"{name}-LR-Scale")(y)


def bigram_offsets(args) -> list[int]:
    try:
        offsets = [int(k) for k in args.bigram_offsets.split(",") if k.strip()]
    except ValueError:
        offsets = []
    if not offsets or len(set(offsets)) != len(offsets):
        raise ValueError(f"--bigram-offsets: expected distinct comma-separated integers, got {args.bigram_offsets!r}")
    return offsets


def build(head: str, source: common.ModelSource, args, tagset: tagging.TagSet, prior=None,
          bigrams: tagging.BigramVocab | None = None):
    """`(model, loss, crf or None)`. `prior`: the initial bias of the softmax / CRF emission layer (the log tag
    frequencies, `tagging.log_prior`; zeros if None). With `bigrams` (and `--bigram-dim` > 0) the model takes a
    third input, the bigram ids, whose embeddings join the encoder output before the head."""
    encoder = source.build(args.model)
    prior = np.zeros(len(tagset), "float32") if prior is None else np.asarray(prior, "float32")
    initializer = truncated_normal(float(getattr(encoder.config, "initializer_range", 0.02)))
    m = args.head_lr_multiplier
    inputs, features = list(encoder.inputs), encoder.output
    if args.bigram_dim and bigrams is not None:
        bigram_ids = keras.Input(shape=(None,), dtype="int32", name="Bigram-Ids")
        grams = NgramEmbedding(len(bigrams), args.bigram_dim, bigram_offsets(args),
                               lr_multiplier=args.bigram_lr_multiplier or m,
                               embeddings_initializer=truncated_normal(0.1), name="Bigram-Embedding")(bigram_ids)
        features = keras.layers.Concatenate(name="Encoder-And-Bigrams")([features, grams])
        inputs.append(bigram_ids)
    if head == "softmax":
        x = keras.layers.Dropout(args.dropout, name="Token-Classifier-Dropout")(features)
        logits = head_dense(x, len(tagset), prior, m, initializer, "Token-Classifier-Dense")
        return keras.Model(inputs, logits, name="ner_softmax"), masked_token_crossentropy, None
    real = keras.layers.Lambda(real_tokens, name="Real-Tokens")(inputs[0])
    x = keras.layers.Dropout(args.dropout, name="Head-Dropout")(features)
    if head == "crf":
        x = head_dense(x, len(tagset), prior, m, initializer, "Emissions")
        crf = ConditionalRandomField(lr_multiplier=args.crf_lr_multiplier, name="CRF")
        out = crf(x, mask=real)

        def crf_loss(y_true, y_pred):
            return crf.sparse_loss(ops.maximum(ops.cast(y_true, "int32") - 1, 0), y_pred)

        return keras.Model(inputs, out, name="ner_crf"), crf_loss, crf
    layer = SPAN_HEADS[head]
    pointer = layer(len(tagset.types), args.gp_head_size, lr_multiplier=m, name=layer.__name__)
    return keras.Model(inputs, pointer(x, mask=real), name=f"ner_{head}"), global_pointer_crossentropy, None


def predict(model, head: str, crf, pieces: list[Piece], tagset: tagging.TagSet, n_sentences: int,
            batch_size: int, threshold: float = 0.0) -> list[set]:
    """Entities per sentence (sentence char offsets); `threshold`: the GlobalPointer logit a span must exceed."""
    return entities(head, crf, model_outputs(model, pieces, batch_size), pieces, tagset, n_sentences, threshold)


def model_outputs(model, pieces: list[Piece], batch_size: int) -> list[np.ndarray]:
    """The model's output per piece, cut to its real tokens (length-sorted batches)."""
    outputs = [None] * len(pieces)
    order = np.argsort([len(p.token_ids) for p in pieces], kind="stable")
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        out = np.asarray(model.predict_on_batch(model_inputs([pieces[i] for i in index], 16)))  # 16: few retraces
        for i, row in zip(index, out):
            n = len(pieces[i].token_ids)
            outputs[i] = row[:, :n, :n] if row.ndim == 3 else row[:n]
    return outputs


def entities(head: str, crf, outputs: list[np.ndarray], pieces: list[Piece], tagset: tagging.TagSet,
             n_sentences: int, threshold: float = 0.0) -> list[set]:
    """Decode `model_outputs` into entities per sentence (sentence char offsets)."""
    found = [set() for _ in range(n_sentences)]
    decoder = tagging.constrained_decoder(tagset, keras.ops.convert_to_numpy(crf.trans) if head == "crf" else None)
    for p, row in zip(pieces, outputs):
        n = len(p.token_ids) - 2
        if head in SPAN_HEADS:
            flat = decode_spans(row[:, 1:n + 1, 1:n + 1], threshold, nested=False)  # MSRA entities do not nest
            spans = [(tagset.types[h], s, e) for h, s, e, _ in flat]
        else:
            # Viterbi over the real positions ([CLS] chars [SEP], trained as O) under the scheme's rules: CRF
            # scores and transitions, or softmax log-probabilities
            scores = row if head == "crf" else row - logsumexp(row)
            labels = decoder.decode(scores)[1:n + 1]
            spans = tagset.spans_of(tagset.decode(labels))
        found[p.sentence].update((k, s + p.offset, e + p.offset) for k, s, e in spans)
    return found


def choose_threshold(head: str, outputs, pieces, sentences: list[Sentence], tagset, given: float | None) -> float:
    """The GlobalPointer threshold: `given`, else the one of `GP_THRESHOLDS` with the best F1 on `sentences` (the
    dev set: a span head trained for a few hundred steps is under-confident, its best cut is below 0)."""
    if head not in SPAN_HEADS:
        return 0.0
    if given is not None:
        return given

    def f1(threshold):
        found = entities(head, None, outputs, pieces, tagset, len(sentences), threshold)
        return tagging.entity_scores([s.spans for s in sentences], found)["f1"]

    return max(GP_THRESHOLDS, key=lambda t: (f1(t), t))


def dev_scores(dev: list[Sentence], found: list) -> dict:
    """`dev_precision`, `dev_recall`, `dev_f1` of the entities found in the dev sentences."""
    scores = tagging.entity_scores([s.spans for s in dev], found)
    return {f"dev_{k}": scores[k] for k in ("precision", "recall", "f1")}


def logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(-1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(-1, keepdims=True))


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_head(head, source, args, out, tagset, train_pieces, dev, dev_pieces, test, test_pieces,
             bigrams: tagging.BigramVocab | None = None) -> dict:
    labels = [tag_labels(p, tagset) for p in train_pieces]
    prior = tagging.log_prior(([t - 1 for t in row] for row in labels), len(tagset))
    model, loss, crf = build(head, source, args, tagset, prior, bigrams)
    if head in SPAN_HEADS:
        data = gp_dataset(train_pieces, tagset.types, args.batch_size, args.seed)
    else:
        columns = [[p.token_ids for p in train_pieces], [[0] * len(p.token_ids) for p in train_pieces]]
        columns += [[p.bigram_ids for p in train_pieces]] if bigrams is not None else []
        data = common.dataset(columns, labels, args.batch_size, shuffle=True, seed=args.seed)
    folder = out / head
    folder.mkdir(parents=True, exist_ok=True)
    evaluating = [0.0, 0.0]  # wall and CPU seconds of the per-epoch dev scoring, not counted as training

    def dev_f1() -> dict:
        wall, cpu = time.time(), time.process_time()
        found = predict(model, head, crf, dev_pieces, tagset, len(dev), 2 * args.batch_size)
        evaluating[0] += time.time() - wall
        evaluating[1] += time.process_time() - cpu
        return {"dev_f1": tagging.entity_scores([s.spans for s in dev], found)["f1"]}

    cpu_started = time.process_time()
    _, train_seconds = common.timed(common.fit, model, args, folder, data, len(train_pieces), loss=loss,
                                    before=[training.EpochEvaluation(dev_f1)],
                                    title=f"MSRA NER, {head} head ({source.name})")
    train_seconds = round(train_seconds - evaluating[0], 1)
    train_cpu_seconds = time.process_time() - cpu_started - evaluating[1]
    common.save_model(model, source.vocab, folder)
    if bigrams is not None:
        bigrams.save(folder / BIGRAMS_FILE)
    dev_outputs = model_outputs(model, dev_pieces, 2 * args.batch_size)
    threshold = choose_threshold(head, dev_outputs, dev_pieces, dev, tagset, args.gp_threshold)
    dev_found = entities(head, crf, dev_outputs, dev_pieces, tagset, len(dev), threshold)
    started = time.time()
    test_found = predict(model, head, crf, test_pieces, tagset, len(test), 2 * args.batch_size, threshold)
    predict_seconds = time.time() - started
    scores = tagging.entity_scores([s.spans for s in test], test_found)
    return {**scores, **dev_scores(dev, dev_found),
            **({"threshold": threshold} if head in SPAN_HEADS else {}),
            "train_seconds": train_seconds,
            "train_sentences_per_s": round(args.epochs * len(train_pieces) / max(train_seconds, 1e-9), 1),
            "train_cpu_seconds": round(train_cpu_seconds, 1),
            "train_sentences_per_cpu_s": round(args.epochs * len(train_pieces) / max(train_cpu_seconds, 1e-9), 1),
            "predict_sentences_per_s": round(len(test) / max(predict_seconds, 1e-9), 1),
            "peak_rss_mb": peak_rss_mb(), "parameters": model.count_params(),
            "_found": test_found}


# === baseline ===

def char_features(chars: list[str], i: int) -> dict:
    """Characters at offsets -2..2 and the bigrams of adjacent ones in that window."""
    def at(j):
        return chars[j] if 0 <= j < len(chars) else ("<s>" if j < 0 else "</s>")

    f = {"bias": 1.0}
    for d in range(-2, 3):
        f[f"c[{d}]"] = at(i + d)
    for d in range(-2, 2):
        f[f"c[{d}:{d + 1}]"] = at(i + d) + at(i + d + 1)
    return f


def crfsuite_baseline(train: list[Sentence], dev, test: list[Sentence], iterations: int) -> dict:
    import sklearn_crfsuite

    def features(s):
        return [char_features(s.chars, i) for i in range(len(s.chars))]

    model = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.1, c2=0.1, max_iterations=iterations)
    started = time.time()
    # generators: CRFsuite copies each sentence in, so the feature dicts of the whole corpus (GBs) never coexist
    model.fit((features(s) for s in train), (tagging.spans_to_tags(s.spans, len(s.chars)) for s in train))
    train_seconds = time.time() - started
    started = time.time()
    test_tags = [model.predict_single(features(s)) for s in test]
    predict_seconds = time.time() - started
    dev_tags = [model.predict_single(features(s)) for s in dev]
    found = [set(tagging.tags_to_spans(t)) for t in test_tags]
    scores = tagging.entity_scores([s.spans for s in test], found)
    return {**scores, **dev_scores(dev, [tagging.tags_to_spans(t) for t in dev_tags]),
            "train_seconds": round(train_seconds, 1),
            "predict_sentences_per_s": round(len(test) / max(predict_seconds, 1e-9), 1),
            "peak_rss_mb": peak_rss_mb(), "_found": found}


def write_predictions(path: Path, test: list[Sentence], found: dict[str, list[set]], gold: bool = True) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i, s in enumerate(test):
            row = {"text": s.text, **({"gold": [[k, a, b, s.text[a:b + 1]] for k, a, b in s.spans]} if gold else {})}
            for name, rows in found.items():
                row[name] = [[k, a, b, s.text[a:b + 1]] for k, a, b in sorted(rows[i], key=lambda e: e[1])]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def predict_file(args) -> dict:
    """Tag --predict FILE with every head saved in --saved; write predictions.jsonl (and F1 per head when FILE
    has entities)."""
    saved = json.loads((Path(args.saved) / "metrics.json").read_text(encoding="utf-8"))
    heads_saved = [h for h in HEADS if (Path(args.saved) / h / "model.keras").exists()]
    if not heads_saved:
        raise FileNotFoundError(f"{args.saved}: no saved head (expected <head>/model.keras for a head of {HEADS})")
    labelled = Path(args.predict).suffix != ".jsonl" or all(
        "entities" in r for r in common.read_records(args.predict, ("text",)))
    sentences = read_sentences(args.predict, labelled=labelled, keep_empty=True)  # row i of the output: record i
    tagset = tagging.TagSet(saved["types"], saved["settings"].get("scheme", "BIO"))
    result, found = {"predicted": len(sentences), "file": args.predict, "saved": args.saved}, {}
    for head in heads_saved:
        model, tokenizer = common.load_saved(Path(args.saved) / head)
        crf = model.get_layer("CRF") if head == "crf" else None
        bigrams_file = Path(args.saved) / head / BIGRAMS_FILE
        bigrams = tagging.BigramVocab.load(bigrams_file) if len(model.inputs) == 3 else None
        pieces = featurize(sentences, tokenizer, saved["settings"]["maxlen"], bigrams)
        threshold = saved["results"].get(head, {}).get("threshold", 0.0)
        found[head] = predict(model, head, crf, pieces, tagset, len(sentences), 2 * args.batch_size, threshold)
        if labelled:
            result[f"f1_{head}"] = tagging.entity_scores([s.spans for s in sentences], found[head])["f1"]
    out = Path(args.out)
    write_predictions(out / "predictions.jsonl", sentences, found, gold=labelled)
    print(json.dumps(result, ensure_ascii=False))
    print(f"wrote {out / 'predictions.jsonl'}")
    return result


def main(argv=None) -> dict:
    started = time.time()
    args = parse_args(argv)
    if common.prediction_run(args):
        common.setup(args)
        return predict_file(args)
    chosen = [h.strip() for h in args.heads.split(",") if h.strip()]
    unknown = sorted(set(chosen) - set(HEADS))
    if unknown or not chosen:
        raise ValueError(f"--heads: unknown head(s) {unknown}; choose from {HEADS}")
    out = common.setup(args)
    train, dev, test, test_name = split(args)
    types = entity_types(train, test, test_name)
    entity_types(train, dev, args.dev or "the dev split")
    tagset = tagging.TagSet(types, args.scheme)
    bigrams = tagging.BigramVocab.from_texts((s.chars for s in train), args.bigram_min_count) if args.bigram_dim else None
    print(f"train {len(train)}, dev {len(dev)}, test {len(test)} sentences ({test_name}); types {types}", flush=True)

    results, found = {}, {}
    if not args.no_baseline:
        baseline = crfsuite_baseline(train, dev, test, args.baseline_iterations)
        found["crfsuite"] = baseline.pop("_found")
        results["crfsuite"] = baseline
        print(f"crfsuite baseline: F1 {baseline['f1']:.4f}", flush=True)
        common.write_json(out / "metrics.partial.json", results)
    source = common.model_source(args)
    tokenizer = source.tokenizer()
    pieces = {name: featurize(part, tokenizer, args.maxlen, bigrams) for name, part in (("train", train), ("dev", dev),
                                                                                          ("test", test))}
    for head in chosen:
        keras.backend.clear_session()
        result = run_head(head, source, args, out, tagset, pieces["train"], dev, pieces["dev"], test,
                          pieces["test"], bigrams)
        found[head] = result.pop("_found")
        results[head] = result
        print(f"{head}: F1 {result['f1']:.4f}", flush=True)
        common.write_json(out / "metrics.partial.json", results)  # what is done so far, if the run is cut short
    write_predictions(out / "predictions.jsonl", test, found)
    metrics = {"task": "ner", "dataset": args.train or "msra-ner", "test_set": test_name, "types": types,
               **({"bigram_vocab": len(bigrams)} if bigrams is not None else {}),
               "train_sentences": len(train), "dev_sentences": len(dev), "test_sentences": len(test),
               "train_windows": len(pieces["train"]), "test_windows": len(pieces["test"]),
               **{f"f1_{name}": r["f1"] for name, r in results.items()}, "results": results}
    return common.finish(out, metrics, args, started, source)


if __name__ == "__main__":
    main()
