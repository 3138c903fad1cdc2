"""Text classification: fine-tune and evaluate a Transformer encoder, beside the classic baselines.

Datasets (under the shared data folder):
  chnsenticorp  ChnSentiCorp reviews, positive/negative. The official dev/test are absent, so a deterministic
                20% of chnsenticorp/train.tsv (by MD5 of the text) is held out for evaluation.
  csl           CSL paper title -> one of 13 disciplines; csl-category/train.tsv vs csl-category/dev.tsv.
  online-shopping  e-commerce review -> one of 7 product categories; a deterministic 20% held out (MD5 of the text).
  waimai        food-delivery review, positive/negative; a deterministic 20% held out (MD5 of the text).

The model starts from our small pretrained checkpoint (pretrained/bert4k-small-zh) when present, or from a
checkpoint you name (--config/--checkpoint/--vocab), or from random weights (--from-scratch). The same run
reports the majority class and a TF-IDF (char 1-2-grams) + logistic regression (sentiment) / linear SVM
(categories) baseline trained and scored on the same split. Each dataset has its own default recipe (`RECIPES`:
epochs, learning rate, max length, class weighting, pooling, n-gram branch); flags override it.

Model: the encoder's sentence vector (`--pooling`) and, with `--ngram-dim` > 0, a fastText-style bag of the text's
character 1-2-grams (the evidence the TF-IDF baseline uses): their embeddings (a table over the training text's
n-grams seen ≥ `--ngram-min-count` times, the rest sharing `[UNK]`, learning `--ngram-lr-multiplier` times faster
than the encoder) averaged over the text and concatenated with the sentence vector before the classifier.

Dev: a deterministic `--dev-fraction` of the training part (MD5 of the text; default 10 % for the shared datasets,
none for --train files, where --dev names one) is left out of training, scored after each epoch and at the end, and
printed beside the held-out test score and the baselines' scores on both: choose settings by dev, not by test.

    python tasks/classification.py                       # ChnSentiCorp, from our pretrained model
    python tasks/classification.py --from-scratch        # the same architecture from random weights
    python tasks/classification.py --dataset csl --epochs 3
    python tasks/classification.py --config bert_config.json --checkpoint bert_model.ckpt --vocab vocab.txt

Your data: --train FILE [--dev FILE] [--test FILE], TSV with a header row or JSONL, fields `text` and `label`
(any strings; the classes are the labels of --train). Without --test, a deterministic 20% of --train (by MD5 of
the text) is held out; without --dev, the held-out set is evaluated after each epoch.

    python tasks/classification.py --train my_train.tsv --test my_test.tsv
    python tasks/classification.py --predict new.jsonl --saved runs/classification-my_train-bert4k-small-zh

Writes to --out: predictions.tsv, metrics.json, log.csv, learning_curve.png, model.keras + vocab.txt (+ ngrams.json,
the n-gram vocabulary, with --ngram-dim > 0).
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import common
import keras
import numpy as np

from bert4k import heads
from bert4k.metrics import accuracy
from bert4k.ngrams import NgramVocab

DATASETS = ("chnsenticorp", "csl", "online-shopping", "waimai")
HELD_OUT = common.SPLITS["chnsenticorp"]
SENTIMENT = ("chnsenticorp", "waimai")
DEV_FRACTION = 0.1  # of the training part of a shared dataset, the dev set (`dev_cut`)
NGRAMS_FILE = "ngrams.json"  # beside model.keras: the n-gram vocabulary of its Ngram-Ids input
NGRAM_ORDERS = (1, 2)  # the n-gram bag: characters and bigrams
NGRAM_MAX_CHARS = 1024
# Per-dataset defaults, chosen by dev accuracy where searched (README "Task recipes": the settings tried, dev/test).
NGRAM_BRANCH = dict(pooling="cls", ngram_dim=64, ngram_lr_multiplier=500.0, ngram_min_count=2)
RECIPES = {
    "chnsenticorp": dict(NGRAM_BRANCH, epochs=3, lr=2e-4, maxlen=160, class_weight="none"),
    "csl": dict(NGRAM_BRANCH, epochs=6, lr=3e-4, maxlen=64, class_weight="balanced", ngram_min_count=1),
    "online-shopping": dict(NGRAM_BRANCH, epochs=3, lr=2e-4, maxlen=96, class_weight="balanced"),
    "waimai": dict(NGRAM_BRANCH, epochs=3, lr=1e-4, maxlen=96, class_weight="none"),
}


def parse_args(argv=None):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--dataset", choices=DATASETS, default="chnsenticorp")
    recipe = RECIPES[pre.parse_known_args(argv)[0].dataset]
    p = common.task_parser(__doc__, out="classification", epochs=recipe["epochs"], batch_size=32,
                           maxlen=recipe["maxlen"], lr=recipe["lr"], columns="text, label")
    p.add_argument("--dataset", choices=DATASETS, default="chnsenticorp")
    p.add_argument("--class-weight", choices=("none", "balanced"), default=recipe["class_weight"],
                   help="weight the loss by inverse class frequency (default for this dataset: %(default)s)")
    p.add_argument("--pooling", choices=heads.POOLINGS, default=recipe["pooling"],
                   help="sentence vector (default for this dataset: %(default)s)")
    p.add_argument("--ngram-dim", type=int, default=recipe["ngram_dim"], help="width of the bag of character "
                   "1-2-gram embeddings beside the sentence vector, 0 = none (default for this dataset: %(default)s)")
    p.add_argument("--ngram-min-count", type=int, default=recipe["ngram_min_count"], help="n-grams seen fewer "
                   "times in the training data share the [UNK] row (default for this dataset: %(default)s)")
    p.add_argument("--ngram-lr-multiplier", type=float, default=recipe["ngram_lr_multiplier"], help="the n-gram "
                   "table learns this many times faster than the encoder (default for this dataset: %(default)s)")
    p.add_argument("--dev-fraction", type=float, default=None, help="the deterministic part of the training data "
                   f"held out as dev (default: {DEV_FRACTION} for the shared datasets, 0 for --train files)")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF baseline")
    args = p.parse_args(argv)
    if args.ngram_dim < 0 or args.ngram_min_count < 1 or args.ngram_lr_multiplier <= 0:
        p.error(f"--ngram-dim must be ≥ 0, --ngram-min-count ≥ 1 and --ngram-lr-multiplier > 0, got "
                f"{args.ngram_dim}, {args.ngram_min_count}, {args.ngram_lr_multiplier}")
    if args.dev_fraction is not None and not 0 <= args.dev_fraction < 1:
        p.error(f"--dev-fraction must be in [0, 1), got {args.dev_fraction}")
    return args


def ngram_text(text: str) -> str:
    """What the n-gram bag sees of a text: lower-cased, its first `NGRAM_MAX_CHARS` characters."""
    return text.lower()[:NGRAM_MAX_CHARS]


def dev_cut(texts: list[str], labels: np.ndarray, fraction: float):
    """`(train_texts, train_labels, (dev_texts, dev_labels))`: the dev set is `common.dev_split` of the texts."""
    rest, dev = common.dev_split(list(zip(texts, labels)), lambda pair: pair[0], fraction)

    def unzip(pairs):
        return [t for t, _ in pairs], np.array([y for _, y in pairs], dtype=labels.dtype).reshape(-1, *labels.shape[1:])

    return (*unzip(rest), unzip(dev))


def features(texts: Sequence[str], tokenizer, maxlen: int, ngrams: NgramVocab | None) -> list[list[list[int]]]:
    """The model's input columns: token ids, segment ids (and n-gram ids with `ngrams`)."""
    encoded = [tokenizer.encode(t, maxlen=maxlen) for t in texts]
    columns = [[ids for ids, _ in encoded], [seg for _, seg in encoded]]
    return columns + [[ngrams.bag_ids(ngram_text(t)) for t in texts]] if ngrams is not None else columns


def load(dataset: str, limit: int = 0):
    """`(train_texts, train_labels, eval_texts, eval_labels, label_names)`."""
    if dataset == "chnsenticorp":
        rows = []
        path = common.data_path("chnsenticorp", "train.tsv")
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
            if header != ["label", "text_a"]:
                raise ValueError(f"{path}: expected header 'label<TAB>text_a', got {header}")
            for n, line in enumerate(f, 2):
                label, _, text = line.rstrip("\n").partition("\t")
                if label not in ("0", "1") or not text:
                    raise ValueError(f"{path}:{n}: expected '0|1<TAB>text', got {line[:60]!r}")
                rows.append((text, int(label)))
        train = [r for r in rows if not common.held_out(r[0], HELD_OUT)]
        test = [r for r in rows if common.held_out(r[0], HELD_OUT)]
        names = ["negative", "positive"]
    elif dataset in ("online-shopping", "waimai"):
        train, test, names = _reviews(dataset)
    else:
        def read(name):
            path = common.data_path("csl-category", name)
            with open(path, encoding="utf-8") as f:
                parts = [line.rstrip("\n").split("\t") for line in f if line.strip()]
            bad = [p for p in parts if len(p) != 3]
            if bad:
                raise ValueError(f"{path}: expected 3 tab-separated columns, got {bad[0]}")
            return [(p[1], p[2]) for p in parts]

        train, test = read("train.tsv"), read("dev.tsv")
        names = sorted({label for _, label in train})
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted({label for _, label in test} - set(index))
        if unknown:
            raise ValueError(f"csl-category/dev.tsv has labels not in train: {unknown}")
        train = [(t, index[label]) for t, label in train]
        test = [(t, index[label]) for t, label in test]
    train, test = common.limited(train, limit), common.limited(test, limit)
    return ([t for t, _ in train], np.array([y for _, y in train], "int32"),
            [t for t, _ in test], np.array([y for _, y in test], "int32"), names)


def _reviews(dataset: str):
    """online-shopping (category) or waimai (sentiment) reviews, split by `common.held_out` of the text."""
    path = common.data_path(dataset, "train.tsv")
    expected = ["category", "label", "review"] if dataset == "online-shopping" else ["label", "review"]
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != expected:
            raise ValueError(f"{path}: expected header {'<TAB>'.join(expected)!r}, got {header}")
        for n, line in enumerate(f, 2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != len(expected) or not parts[-1]:
                raise ValueError(f"{path}:{n}: expected {len(expected)} tab-separated columns, got {line[:60]!r}")
            rows.append((parts[-1], parts[0]))
    names = sorted({label for _, label in rows}) if dataset == "online-shopping" else ["negative", "positive"]
    index = {name: i for i, name in enumerate(names)} if dataset == "online-shopping" else {"0": 0, "1": 1}
    fraction = common.SPLITS[dataset]
    train = [(t, index[y]) for t, y in rows if not common.held_out(t, fraction)]
    test = [(t, index[y]) for t, y in rows if common.held_out(t, fraction)]
    return train, test, names


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights `n / (k · count)`, mean 1 over the training examples (absent classes: 1)."""
    counts = np.bincount(labels, minlength=num_classes).astype("float64")
    return np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 1.0).astype("float32")


@keras.saving.register_keras_serializable("bert4k_tasks")
class WeightedCrossEntropy(keras.losses.Loss):
    """Sparse softmax cross-entropy on logits, each example weighted by `class_weights[label]`."""

    def __init__(self, class_weights: list[float], name: str = "weighted_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = [float(w) for w in class_weights]

    def call(self, y_true, logits):
        y_true = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        ce = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
        return ce * keras.ops.take(keras.ops.convert_to_tensor(self.class_weights), y_true)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights}
def load_files(args):
    """`(train_texts, train_labels, dev, test_texts, test_labels, label_names)` from --train/--dev/--test; `dev` is
    `(texts, labels)` or None."""
    train, test = common.split_records(args, ("text", "label"), "text", HELD_OUT)
    dev = common.read_records(args.dev, ("text", "label")) if args.dev else None
    names = sorted({str(r["label"]) for r in train})
    index = {name: i for i, name in enumerate(names)}
    for path, rows in ((args.test or args.train, test), (args.dev, dev or [])):
        unknown = sorted({str(r["label"]) for r in rows} - set(index))
        if unknown:
            raise ValueError(f"{path}: labels {unknown} do not occur in --train {args.train} (classes: {names})")

    def split(rows):
        rows = common.limited(rows, args.limit)
        return [r["text"] for r in rows], np.array([index[str(r["label"])] for r in rows], "int32")

    return (*split(train), split(dev) if dev is not None else None, *split(test), names)


def predict_file(args) -> dict:
    """Score --predict FILE with the model saved in --saved; write predictions.tsv (and accuracy when labelled)."""
    model, tokenizer = common.load_saved(args.saved)
    saved = json.loads((Path(args.saved) / "metrics.json").read_text(encoding="utf-8"))
    names, maxlen = saved["labels"], saved["settings"]["maxlen"]
    rows = common.read_records(args.predict, ("text",))
    texts = [r["text"] for r in rows]
    ngrams_file = Path(args.saved) / NGRAMS_FILE
    ngrams = NgramVocab.load(ngrams_file) if len(model.inputs) == 3 else None
    logits = common.predict_in_order(model, features(texts, tokenizer, maxlen, ngrams), 2 * args.batch_size)
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    predicted = logits.argmax(-1)
    out = Path(args.out)
    with open(out / "predictions.tsv", "w", encoding="utf-8") as f:
        f.write("predicted\tconfidence\ttext\n")
        f.writelines(f"{names[k]}\t{p[k]:.4f}\t{t}\n" for t, k, p in zip(texts, predicted, probs))
    result = {"predicted": len(texts), "file": args.predict, "saved": args.saved}
    if all("label" in r for r in rows):
        result["accuracy"] = accuracy(np.array([names.index(str(r["label"])) for r in rows]), predicted)
    print(json.dumps(result, ensure_ascii=False))
    print(f"wrote {out / 'predictions.tsv'}")
    return result


def baselines(dataset: str, train_texts, train_labels, test_texts, test_labels, dev=None) -> dict:
    """Majority class and TF-IDF over char 1-2-grams + logistic regression / linear SVM (scikit-learn), scored on
    the test set (and, given `dev=(texts, labels)`, on it: the same scores under "dev")."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    majority = int(np.bincount(train_labels).argmax())
    result = {"majority": accuracy(test_labels, np.full_like(test_labels, majority))}
    if dev is not None:
        result["dev"] = {"majority": accuracy(dev[1], np.full_like(dev[1], majority))}
    if len(set(train_labels.tolist())) < 2:
        return result
    start = time.time()
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train, x_test = vectorizer.fit_transform(train_texts), vectorizer.transform(test_texts)
    if dataset in SENTIMENT:
        name, clf = "tfidf_logreg", LogisticRegression(C=10.0, max_iter=2000)
    else:
        name, clf = "tfidf_linear_svm", LinearSVC(C=1.0)
    clf.fit(x_train, train_labels)
    result[name] = accuracy(test_labels, clf.predict(x_test))
    if dev is not None:
        result["dev"][name] = accuracy(dev[1], clf.predict(vectorizer.transform(dev[0])))
    result[f"{name}_seconds"] = round(time.time() - start, 1)
    return result


def main(argv=None) -> dict:
    return common.run_task(argv, parse_args, predict_file, run_training)


def run_training(args: argparse.Namespace, out: Path, started: float) -> dict:
    """Train on the run's training data (less its dev cut), score dev and the held-out part and save the model
    into `out`."""
    dev = None
    if args.train:
        args.dataset = None
        train_texts, train_labels, dev, test_texts, test_labels, names = load_files(args)
    else:
        train_texts, train_labels, test_texts, test_labels, names = load(args.dataset)
    fraction = args.dev_fraction if args.dev_fraction is not None else 0.0 if args.train else DEV_FRACTION
    if dev is None and fraction > 0:
        train_texts, train_labels, dev = dev_cut(train_texts, train_labels, fraction)
    if not args.train:
        train_texts, train_labels = common.limited(train_texts, args.limit), train_labels[:args.limit or None]
        test_texts, test_labels = common.limited(test_texts, args.limit), test_labels[:args.limit or None]
        dev = None if dev is None else (common.limited(dev[0], args.limit), dev[1][:args.limit or None])
    print(f"{args.dataset or args.train}: {len(train_texts)} train, {len(dev[0]) if dev else 0} dev, "
          f"{len(test_texts)} held-out, {len(names)} classes")
    metrics = {"task": "classification", "dataset": args.dataset, "train_examples": len(train_texts),
               "dev_examples": len(dev[0]) if dev else 0, "eval_examples": len(test_texts)}
    if not args.no_baseline:
        metrics["baselines"] = baselines(args.dataset or "csl", train_texts, train_labels, test_texts, test_labels,
                                         dev)
        if dev is not None:
            metrics["dev_baselines"] = metrics["baselines"].pop("dev")
        print("baselines:", {k: round(v, 4) for k, v in metrics["baselines"].items()})

    source = common.model_source(args)
    tokenizer = source.tokenizer()
    ngrams = NgramVocab.from_texts(map(ngram_text, train_texts), NGRAM_ORDERS,
                                    args.ngram_min_count) if args.ngram_dim else None
    train_cols = features(train_texts, tokenizer, args.maxlen, ngrams)
    test_cols = features(test_texts, tokenizer, args.maxlen, ngrams)

    encoder = source.build(args.model, with_pool=args.pooling == "pooled")
    model = heads.build_sequence_classifier(encoder, len(names), pooling=args.pooling, dropout=args.dropout,
                                            ngram_vocab_size=len(ngrams) if ngrams else 0, ngram_dim=args.ngram_dim,
                                            ngram_lr_multiplier=args.ngram_lr_multiplier)
    print(f"model: {source.name}, {model.count_params():,} parameters"
          + (f" ({len(ngrams):,} n-grams × {args.ngram_dim})" if ngrams else ""))
    train_data = common.dataset(train_cols, train_labels, args.batch_size, shuffle=True, seed=args.seed)
    val_texts, val_labels = dev if dev is not None else (test_texts, test_labels)
    val_cols = features(val_texts, tokenizer, args.maxlen, ngrams)
    val_data = common.dataset(val_cols, val_labels, 2 * args.batch_size)
    _, train_seconds = common.timed(
        common.fit, model, args, out, train_data, len(train_labels),
        loss=(WeightedCrossEntropy(class_weights(train_labels, len(names)).tolist())
              if args.class_weight == "balanced" else keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")], val_data=val_data,
        title=f"{args.dataset or args.train} ({source.name})",
        baselines={k: v for k, v in metrics.get("baselines", {}).items() if not k.endswith("_seconds")})
    common.save_model(model, source.vocab, out)
    if ngrams is not None:
        ngrams.save(out / NGRAMS_FILE)
    elif (out / NGRAMS_FILE).exists():
        (out / NGRAMS_FILE).unlink()

    logits = common.predict_in_order(model, test_cols, 2 * args.batch_size)
    predicted = logits.argmax(-1)
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    with open(out / "predictions.tsv", "w", encoding="utf-8") as f:
        f.write("gold\tpredicted\tconfidence\ttext\n")
        rows = zip(test_texts, test_labels, predicted, probs)
        f.writelines(f"{names[gold]}\t{names[pred]}\t{p[pred]:.4f}\t{text}\n" for text, gold, pred, p in rows)
    from sklearn.metrics import f1_score

    metrics.update(accuracy=accuracy(test_labels, predicted), train_seconds=train_seconds,
                   macro_f1=float(f1_score(test_labels, predicted, average="macro")),
                   predicted_classes=len(set(predicted.tolist())),
                   parameters=model.count_params(), labels=names)
    if dev is not None:
        dev_logits = common.predict_in_order(model, val_cols, 2 * args.batch_size)
        metrics["dev_accuracy"] = accuracy(dev[1], dev_logits.argmax(-1))
    print(comparison(metrics))
    return common.finish(out, metrics, args, started, source)


def comparison(metrics: dict) -> str:
    """Model and baselines, on dev and test, as a small table."""
    test = {k: v for k, v in metrics.get("baselines", {}).items() if not k.endswith("_seconds")}
    rows = [("dev", metrics["dev_examples"], metrics.get("dev_accuracy"), metrics.get("dev_baselines", {})),
            ("test", metrics["eval_examples"], metrics["accuracy"], test)]
    names = list(test)
    lines = ["split   n      model   " + "  ".join(f"{n:>16}" for n in names)]
    for split, n, model, base in rows:
        if model is None:
            continue
        lines.append(f"{split:<6}{n:>6}  {model:7.2%}   " + "  ".join(
            f"{base[k]:16.2%}" if k in base else f"{'':>16}" for k in names))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
