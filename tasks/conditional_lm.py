"""Class-conditioned generation: ChnSentiCorp label → review, through conditional LayerNorm.

A small GPT-style model (`application="lm"`) is conditioned on the sentiment label by a label embedding that feeds
every LayerNorm (bert4keras' `layer_norm_cond=<tensor>`); the same model without the condition is the baseline.
A TF-IDF (char 1–2-gram) + logistic-regression classifier, trained in the same run on real labelled reviews and
checked on held-out ones, scores the generated texts: how often does a sample carry the sentiment it was asked for?

    python tasks/conditional_lm.py                                       # from scratch, a few minutes on 2 cores
    python tasks/conditional_lm.py --config C --checkpoint K --vocab V   # start from a pretrained checkpoint
    python tasks/conditional_lm.py --train mine.tsv [--test mine_test.jsonl]
    python tasks/conditional_lm.py --predict labels.tsv --saved runs/conditional_lm-mine-scratch

Your data: --train FILE [--test FILE], TSV with a header row or JSONL, fields `text` and `label` (any strings; the
conditions are the labels of --train). Without --test, a random --heldout fraction of --train is held out.
`--predict FILE --saved DIR` writes one sampled text per row of FILE (field `label`) with the conditioned model
saved in DIR.

Writes to `--out` (default runs/conditional_lm-<dataset>-<model>): samples.tsv, metrics.json, loss.csv,
learning_curve.png, and the conditioned model (model.keras + its compact vocab.txt).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tasks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import common
import keras
import numpy as np
from keras import ops

from bert4k import TransformerConfig, build_transformer_model
from bert4k.generation import generate
from bert4k.tokenizers import Tokenizer

DATA = REPO.parent / "shared" / "data"
LABELS = ("negative", "positive")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(task_name="conditional_lm")
    common.add_data_arguments(p, "text, label", dev=False)
    p.add_argument("--vocab", default=str(DATA / "bert-chinese-vocab" / "vocab.txt"), help="WordPiece vocab")
    p.add_argument("--out", help="output folder (default: runs/conditional_lm-<dataset>-<model>)")
    p.add_argument("--config", help="model config (json/dir); default: a small GPT-style model from scratch")
    p.add_argument("--checkpoint", help="checkpoint to start from (needs --config and its --vocab)")
    p.add_argument("--model", default="bert", help="model family of --config/--checkpoint")
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--cond-size", type=int, default=64, help="size of the label embedding")
    p.add_argument("--maxlen", type=int, default=48, help="tokens per review, [CLS] and [SEP] included")
    p.add_argument("--min-count", type=int, default=3, help="keep tokens seen at least this often in training")
    p.add_argument("--steps", type=int, default=500, help="training steps per model")
    p.add_argument("--eval-every", type=int, default=100, help="steps between held-out loss evaluations")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--samples", type=int, default=100, help="samples per label (and as many for the baseline)")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--heldout", type=float, default=0.1, help="fraction of reviews held out")
    p.add_argument("--limit", type=int, default=0, help="use only the first N reviews (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eager", action="store_true", help="train without graph tracing (quick smoke runs)")
    return p.parse_args(argv)


# === data ===

def read_labelled(path: str, limit: int = 0) -> tuple[list[str], list[str]]:
    """`(texts, labels)` of a TSV/JSONL file with the fields text and label."""
    rows = common.limited(common.read_records(path, ("text", "label")), limit)
    return [r["text"] for r in rows], [str(r["label"]) for r in rows]


def read_reviews(path: str, limit: int = 0) -> tuple[list[str], np.ndarray]:
    """ChnSentiCorp `label<TAB>text_a` rows (header skipped)."""
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if n == 0 and parts[0] == "label":
                continue
            if len(parts) != 2 or parts[0] not in ("0", "1"):
                raise ValueError(f"{path}:{n + 1}: expected 'label<TAB>text' with label 0/1, got {line[:60]!r}")
            labels.append(int(parts[0]))
            texts.append(parts[1])
            if limit and len(texts) == limit:
                break
    return texts, np.array(labels, "int32")


class Vocab:
    """The tokens seen in training (plus specials): compact ids for a small LM, and the way back to text. Without
    `texts`, every token of `tokenizer` is kept (a compact vocabulary saved by an earlier run)."""

    SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")

    def __init__(self, tokenizer: Tokenizer, texts: list[str] | None, maxlen: int, min_count: int = 1):
        self.tokenizer, self.maxlen = tokenizer, maxlen
        specials = tokenizer.tokens_to_ids(list(self.SPECIALS))
        if texts is None:
            if specials != [0, 1, 2, 3]:
                raise ValueError(f"a compact vocabulary starts with {self.SPECIALS}, got ids {specials}")
            self.keep_tokens = list(range(tokenizer.vocab_size))
        else:
            counts = Counter(i for t in texts for i in tokenizer.encode(t, maxlen=maxlen)[0])
            self.keep_tokens = specials + sorted(i for i, c in counts.items() if c >= min_count and i not in specials)
        self.remap = np.full(tokenizer.vocab_size, 1, "int32")  # unseen → [UNK] (new id 1)
        self.remap[self.keep_tokens] = np.arange(len(self.keep_tokens))
        self.pad, self.unk, self.start, self.end = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.keep_tokens)

    def tokens(self) -> list[str]:
        """The compact vocabulary, in id order (a vocab.txt for `Vocab(Tokenizer(it), None, ...)`)."""
        return self.tokenizer.ids_to_tokens(self.keep_tokens)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        return [self.remap[self.tokenizer.encode(t, maxlen=self.maxlen)[0]] for t in texts]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        ids = ids[:ids.index(self.end)] if self.end in ids else ids
        original = [self.keep_tokens[i] for i in ids if i not in (self.pad, self.start)]
        return self.tokenizer.decode(original)


class Batches(keras.utils.PyDataset):
    """LM batches `([ids[:-1], (segments,) (label)], ids[1:])`, padded to a multiple of 16 (few traced shapes);
    random with `shuffle`, else in order."""

    def __init__(self, rows: list[np.ndarray], labels: np.ndarray, batch_size: int, steps: int, model,
                 seed: int, shuffle: bool = True):
        super().__init__()
        self.rows, self.labels, self.batch_size, self.steps = rows, labels, batch_size, steps
        self.segments, self.conditioned = model.use_segments, model.layer_norm_cond is not None
        self.shuffle, self.seed = shuffle, seed

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        if self.shuffle:
            pick = np.random.default_rng((self.seed, index)).integers(0, len(self.rows), self.batch_size)
        else:
            pick = np.arange(index * self.batch_size, min((index + 1) * self.batch_size, len(self.rows)))
        length = max(len(self.rows[i]) for i in pick)
        ids = np.zeros((len(pick), -(-length // 16) * 16 + 1), "int32")
        for row, i in enumerate(pick):
            ids[row, :len(self.rows[i])] = self.rows[i]
        x = [ids[:, :-1]] + [np.zeros_like(ids[:, :-1])] * self.segments
        x += [self.labels[pick][:, None]] * self.conditioned
        return tuple(x) if len(x) > 1 else x[0], ids[:, 1:]


def masked_lm_loss(y_true, y_pred):
    """Mean next-token cross-entropy over the real (non-padding) targets."""
    ce = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    weight = ops.cast(ops.not_equal(y_true, 0), ce.dtype)
    return ops.sum(ce * weight) / ops.maximum(ops.sum(weight), 1.0)


# === models ===

def build_lm(args, vocab: Vocab, conditioned: bool, num_labels: int = len(LABELS)):
    """The GPT-style LM; with `conditioned`, a label embedding conditions every LayerNorm."""
    kwargs = dict(application="lm", logits=True)
    if conditioned:
        label = keras.Input(shape=(1,), dtype="int32", name="Input-Label")
        embedding = keras.layers.Embedding(num_labels, args.cond_size, name="Label-Embedding")(label)
        kwargs["layer_norm_cond"] = keras.layers.Reshape((args.cond_size,))(embedding)
    if args.config:
        return build_transformer_model(args.config, args.checkpoint, model=args.model, keep_tokens=vocab.keep_tokens,
                                       dropout_rate=args.dropout, **kwargs)
    config = TransformerConfig(
        vocab_size=len(vocab), hidden_size=args.hidden_size, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=4 * args.hidden_size, hidden_act="gelu_tanh",
        max_position_embeddings=args.maxlen + args.max_new_tokens, type_vocab_size=0,
        hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout, layer_norm_eps=1e-5,
        norm_position="pre", embedding_norm=False, final_norm=True, lm_head="tied")
    return build_transformer_model(config, **kwargs)


def copy_shared_weights(source, target) -> None:
    """Start `target` (conditioned) from `source`'s (baseline) weights, so only the condition tells them apart."""
    by_path = {w.path: w for w in target.weights}
    missing = [w.path for w in source.weights if w.path not in by_path]
    if missing:
        raise ValueError(f"conditioned model lacks baseline weights {missing[:5]}")
    for weight in source.weights:
        by_path[weight.path].assign(weight)


def train(model, args, train_data, heldout_data, name: str) -> list[dict]:
    """Fit for `args.steps` steps; returns the loss curve (training and held-out, per `eval_every` steps)."""
    model.compile(optimizer=keras.optimizers.AdamW(args.lr, weight_decay=0.01, clipnorm=1.0), loss=masked_lm_loss,
                  run_eagerly=args.eager)
    rounds = max(1, args.steps // args.eval_every)
    per_round = max(1, args.steps // rounds)
    batches = Batches(*train_data, args.batch_size, per_round * rounds, model, args.seed)
    heldout = Batches(*heldout_data, 64, -(-len(heldout_data[0]) // 64), model, args.seed, shuffle=False)
    history = model.fit(batches, steps_per_epoch=per_round, epochs=rounds, validation_data=heldout, verbose=0)
    return [{"model": name, "step": (r + 1) * per_round, "train_loss": history.history["loss"][r],
             "heldout_loss": history.history["val_loss"][r]} for r in range(rounds)]


def sample_texts(model, vocab: Vocab, labels: np.ndarray | None, args, count: int = 0) -> list[str]:
    """One sampled review per row, starting from [CLS]; `labels` is the condition (None: `count` unconditioned
    samples)."""
    prompts = np.full((len(labels) if labels is not None else count, 1), vocab.start, "int32")
    inputs = {"token_ids": prompts, "cond": labels[:, None]} if labels is not None else prompts
    out = generate(model, inputs, args.max_new_tokens, method="sample", top_p=args.top_p, stop_ids=vocab.end,
                   seed=args.seed)
    return [vocab.decode(row) for row in np.asarray(out)]


# === scoring ===

def train_classifier(texts: list[str], labels: np.ndarray, seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    classifier = make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                               LogisticRegression(C=4.0, max_iter=2000, random_state=seed))
    return classifier.fit(texts, labels)


def plot_curve(curve: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, color in (("conditioned", "tab:blue"), ("baseline", "tab:orange")):
        rows = [r for r in curve if r["model"] == name]
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["train_loss"] for r in rows], color=color, alpha=0.5, label=f"{name} train")
        ax.plot(steps, [r["heldout_loss"] for r in rows], color=color, marker="o", label=f"{name} held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("next-token cross-entropy")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_data(args) -> tuple[list[str], np.ndarray, list[str], np.ndarray, list[str]]:
    """`(train_texts, train_labels, test_texts, test_labels, names)`: --train/--test (or ChnSentiCorp); without
    --test a random `--heldout` fraction of the training texts."""
    if args.train:
        texts, raw = read_labelled(args.train, args.limit)
        names = sorted(set(raw))
        if len(names) < 2:
            raise ValueError(f"{args.train}: one label {names}; a conditional LM needs at least two")
        labels = np.array([names.index(y) for y in raw], "int32")
    else:
        texts, labels = read_reviews(str(common.data_path("chnsenticorp", "train.tsv")), args.limit)
        names = list(LABELS)
    if args.test:
        test_texts, raw = read_labelled(args.test, args.limit)
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ValueError(f"{args.test}: labels {unknown} do not occur in --train {args.train} ({names})")
        return texts, labels, test_texts, np.array([names.index(y) for y in raw], "int32"), names
    order = np.random.default_rng(args.seed).permutation(len(texts))
    n_heldout = max(2, int(len(texts) * args.heldout))
    test_idx, train_idx = order[:n_heldout], order[n_heldout:]
    return ([texts[i] for i in train_idx], labels[train_idx], [texts[i] for i in test_idx], labels[test_idx], names)


def predict_file(args) -> dict:
    """One sample per row of --predict FILE (field `label`) from the conditioned model saved in --saved."""
    model, tokenizer = common.load_saved(args.saved)
    saved = json.loads((Path(args.saved) / "metrics.json").read_text(encoding="utf-8"))
    names, settings = saved["labels"], saved["args"]
    rows = common.read_records(args.predict, ("label",))
    unknown = sorted({str(r["label"]) for r in rows} - set(names))
    if unknown:
        raise ValueError(f"{args.predict}: labels {unknown} are not conditions of the saved model ({names})")
    vocab = Vocab(tokenizer, None, settings["maxlen"])
    requested = np.array([names.index(str(r["label"])) for r in rows], "int32")
    texts = sample_texts(model, vocab, requested, argparse.Namespace(**{**settings, "seed": args.seed}))
    out = Path(args.out)
    with open(out / "samples.tsv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["requested", "text"])
        writer.writerows((names[k], t) for k, t in zip(requested, texts))
    result = {"predicted": len(texts), "file": args.predict, "saved": args.saved}
    print(json.dumps(result, ensure_ascii=False))
    print(f"wrote {out / 'samples.tsv'}")
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.checkpoint and not args.config:
        raise SystemExit("--checkpoint needs --config")
    if common.prediction_run(args):
        Path(args.out).mkdir(parents=True, exist_ok=True)
        return predict_file(args)
    given = args.checkpoint or args.config
    out = common.output_folder(args, Path(given).stem if given else "scratch")
    keras.utils.set_random_seed(args.seed)
    started = time.time()

    train_texts, train_labels, test_texts, test_labels, names = load_data(args)
    classifier = train_classifier(train_texts, train_labels, args.seed)
    classifier_accuracy = float(np.mean(classifier.predict(test_texts) == test_labels))

    vocab = Vocab(Tokenizer(args.vocab, do_lower_case=True), train_texts, args.maxlen, args.min_count)
    train_data = (vocab.encode(train_texts), train_labels)
    heldout_data = (vocab.encode(test_texts), test_labels)

    requested = np.repeat(np.arange(len(names), dtype="int32"), args.samples)
    curve, samples, results = [], [], {}
    models = {"baseline": build_lm(args, vocab, conditioned=False),
              "conditioned": build_lm(args, vocab, conditioned=True, num_labels=len(names))}
    copy_shared_weights(models["baseline"], models["conditioned"])
    for name in ("conditioned", "baseline"):
        conditioned, model = name == "conditioned", models[name]
        keras.utils.set_random_seed(args.seed)
        curve += train(model, args, train_data, heldout_data, name)
        print(f"{name}: {args.steps} steps, held-out loss {curve[-1]['heldout_loss']:.3f} "
              f"({time.time() - started:.0f}s)", flush=True)
        generated = sample_texts(model, vocab, requested if conditioned else None, args, len(requested))
        predicted = classifier.predict(generated)
        probability = classifier.predict_proba(generated)
        samples += [(name, names[r] if conditioned else "-", names[p], f"{q[-1]:.3f}", t)
                    for r, p, q, t in zip(requested, predicted, probability, generated)]
        results[name] = {
            "heldout_loss": curve[-1]["heldout_loss"],
            "empty_samples": int(sum(not t for t in generated)),
        }
        if len(names) == 2:  # the share classified as the second label (ChnSentiCorp: positive)
            results[name].update(positive_fraction=float(np.mean(predicted == 1)),
                                 mean_positive_probability=float(np.mean(probability[:, 1])))
        if conditioned:
            results[name]["label_accuracy"] = float(np.mean(predicted == requested))
            for k, label in enumerate(names):
                results[name][f"accuracy_when_asked_{label}"] = float(np.mean(predicted[requested == k] == k))
        else:  # the same requested labels, which this model cannot see: its accuracy is chance by construction
            results[name]["label_accuracy"] = float(np.mean(predicted == requested))

    common.save_model(models["conditioned"], vocab.tokens(), out)
    metrics = {
        "task": f"{args.train or 'ChnSentiCorp'} label → text, conditional LayerNorm", "labels": names,
        "train_reviews": len(train_texts), "heldout_reviews": len(test_texts), "vocab_size": len(vocab),
        "classifier": "TF-IDF char 1-2-gram + logistic regression",
        "classifier_heldout_accuracy": classifier_accuracy,
        "chance_accuracy": 1 / len(names),
        "samples_per_model": len(requested),
        **results,
        "args": vars(args),
        "seconds": round(time.time() - started, 1),
    }
    with open(out / "samples.tsv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["model", "requested", "classified", f"p_{names[-1]}", "text"])
        writer.writerows(samples)
    with open(out / "loss.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["model", "step", "train_loss", "heldout_loss"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(curve)
    (out / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    plot_curve(curve, out / "learning_curve.png", f"{args.train or 'ChnSentiCorp'}: label → text LM")
    print(json.dumps({k: v for k, v in metrics.items() if k != "args"}, ensure_ascii=False, indent=2))
    return metrics


if __name__ == "__main__":
    main()
