"""Plumbing shared by the task scripts: arguments, data paths, deterministic splits, which model to start from,
length-bucketed batches, training with bert4k.training, and the output files (predictions, metrics.json).

Importing this module puts the repository root on `sys.path`, so `python tasks/<script>.py` runs uninstalled.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from bert4k import build_transformer_model, training
from bert4k.tokenizers import Tokenizer

DATA = Path(os.environ.get("BERT4K_DATA", REPO.parent / "shared" / "data"))
FULL_VOCAB = ("bert-chinese-vocab", "vocab.txt")
# Our own small pretrained checkpoint (pretrained/README.md); scripts start from it when it is present.
PRETRAINED = REPO / "pretrained" / "bert4k-small-zh"
# From-scratch architectures: `small` matches our pretrained model, `tiny` is for smoke tests.
SMALL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
             max_position_embeddings=512, type_vocab_size=2)
# Fractions held out for evaluation where the data has no usable official split (by `held_out(key, fraction)`);
# pretrained/corpus.py leaves these texts out of pretraining.
SPLITS = {"chnsenticorp": 0.2, "csl-title": 0.2, "tang-poems": 0.05, "online-shopping": 0.2, "waimai": 0.2}
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=512, type_vocab_size=2)


# === arguments ===

# Settings that do not change what a run computes: a backup made under other values of these may be resumed.
_RESUME_NEUTRAL = ("out", "no_resume", "data_dir", "predict", "saved")


def task_parser(doc: str, *, out: str, epochs: int, batch_size: int, maxlen: int, lr: float,
                columns: str = "", file_format: str | None = None, dev: bool = True) -> argparse.ArgumentParser:
    """The arguments every task script takes; a script adds its own. `out` is the task's name (the default output
    folder is runs/<task>-<dataset>-<model>). A script that reads the user's files passes `columns` (the fields of
    its --train/--dev/--test/--predict files; `file_format` describes them when they are not TSV/JSONL records;
    `dev=False` for a script that evaluates only at the end)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(task_name=out)
    if columns:
        add_data_arguments(p, columns, file_format, dev=dev)
    g = p.add_argument_group("model")
    g.add_argument("--config", help="config json (or directory) of a checkpoint to start from")
    g.add_argument("--checkpoint", help="checkpoint (TF prefix, .safetensors/.bin, or directory) to start from")
    g.add_argument("--vocab", help="WordPiece vocab.txt (default: the checkpoint's, else the Chinese BERT vocab)")
    g.add_argument("--model", default="bert", help="model family passed to build_transformer_model (bert, "
                   "albert, albert_unshared, ...)")
    g.add_argument("--from-scratch", action="store_true",
                   help=f"random initialisation (default: start from {PRETRAINED.relative_to(REPO)} if present)")
    g.add_argument("--tiny", action="store_true", help="a tiny random model (smoke tests)")
    g = p.add_argument_group("training")
    g.add_argument("--out", help="output folder (default: runs/<task>-<dataset>-<model>)")
    g.add_argument("--epochs", type=int, default=epochs, help="default: %(default)s")
    g.add_argument("--batch-size", type=int, default=batch_size, help="default: %(default)s")
    g.add_argument("--maxlen", type=int, default=maxlen, help="max tokens per example (default: %(default)s)")
    g.add_argument("--lr", type=float, default=lr, help="peak learning rate (default: %(default)s)")
    g.add_argument("--warmup", type=float, default=0.1, help="warmup fraction of the steps (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decay, not on norms/biases")
    g.add_argument("--grad-accum", type=int, default=1, help="batches per optimizer update (default: %(default)s)")
    g.add_argument("--ema", action="store_true", help="keep an EMA of the weights and evaluate with it")
    g.add_argument("--bf16", action="store_true", help="mixed_bfloat16 precision")
    g.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    g.add_argument("--limit", type=int, default=0, help="use at most N training and N evaluation examples (0: all)")
    g.add_argument("--no-resume", action="store_true", help="do not resume from --out/backup")
    g.add_argument("--data-dir", default=str(DATA), help="the shared data folder (default: %(default)s)")
    return p


def add_data_arguments(p: argparse.ArgumentParser, columns: str, file_format: str | None = None, *, dev: bool = True,
                       test: bool = True, predict: bool = True, train_default: str | None = None) -> None:
    """`--train FILE`, `--dev FILE` and `--test FILE` (each unless False), and `--predict FILE --saved DIR`, for a
    script's own parser; `columns` and `file_format` document the files (default: TSV with a header row, or
    JSONL)."""
    g = p.add_argument_group("your data (default: the script's demo split of the shared data)", file_format or
                             f"TSV with a header row, or JSONL (one object a line), with the fields: {columns}")
    g.add_argument("--train", metavar="FILE", default=train_default,
                   help="training examples" + (" (default: %(default)s)" if train_default else ""))
    if dev:
        g.add_argument("--dev", metavar="FILE", help="examples evaluated during training (default: a held-out part "
                       "of --train, or --test)")
    if test:
        g.add_argument("--test", metavar="FILE", help="held-out examples scored at the end (default: a "
                       "deterministic part of --train)")
    if predict:
        g.add_argument("--predict", metavar="FILE", help="score FILE with the model saved in --saved (no training)")
        g.add_argument("--saved", metavar="DIR", help="a previous run's output folder (model.keras + vocab.txt)")


def model_tag(args: argparse.Namespace) -> str:
    """A short name of the starting model, for the default output folder."""
    if getattr(args, "tiny", False):
        return "tiny"
    given = getattr(args, "checkpoint", None) or getattr(args, "config", None)
    if given:
        path = Path(given)
        name = (path if path.is_dir() else path.parent).name or path.stem
        return f"{name}-scratch" if args.from_scratch else name
    if getattr(args, "from_scratch", False) or not pretrained_available():
        return "scratch"
    return PRETRAINED.name


def default_out(args: argparse.Namespace, model: str | None = None) -> Path:
    """runs/<task>-<dataset>-<model>; the dataset is --dataset, or the --train file's name, or the task's demo;
    the model is `model`, or `model_tag(args)`."""
    dataset = Path(args.train).stem if getattr(args, "train", None) else getattr(args, "dataset", None) or "demo"
    return REPO / "runs" / f"{args.task_name}-{dataset}-{model or model_tag(args)}"


def resume_settings(args: argparse.Namespace) -> dict:
    return {k: v for k, v in sorted(vars(args).items()) if k not in _RESUME_NEUTRAL}


def check_resume(out: Path, args: argparse.Namespace) -> None:
    """Keep the backups in `out` (`out/backup`, `out/<part>/backup`) only if they were made with the same settings;
    otherwise say what differs and start fresh. Writes the current settings to `out/settings.json`."""
    settings = json.loads(json.dumps(resume_settings(args), default=_json_default))
    path = out / "settings.json"
    backups = [b for b in (out / "backup", *out.glob("*/backup")) if b.is_dir() and any(b.iterdir())]
    if backups and not getattr(args, "no_resume", False):
        saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        if saved != settings:
            diffs = [] if saved is None else [f"{k}: {saved.get(k)!r} → {settings.get(k)!r}"
                                              for k in sorted(set(saved) | set(settings)) if saved.get(k) != settings.get(k)]
            changed = "no settings.json" if saved is None else ", ".join(diffs[:6]) + (", …" if len(diffs) > 6 else "")
            print(f"{out}: the interrupted run there used other settings ({changed}); starting fresh")
            for backup in backups:
                shutil.rmtree(backup)
        else:
            print(f"{out}: resuming the interrupted run with the same settings (--no-resume to start fresh)")
    write_json(path, settings)


def setup(args: argparse.Namespace, model: str | None = None) -> Path:
    """Seed, precision and the output folder (`output_folder(args, model)`: default `default_out`; a backup there
    is resumed only when its settings match); returns the output folder."""
    global DATA
    DATA = Path(args.data_dir)
    training.set_seed(args.seed)
    if args.bf16:
        training.use_mixed_precision("mixed_bfloat16")
    return output_folder(args, model)


def output_folder(args: argparse.Namespace, model: str | None = None) -> Path:
    """`--out` (default `default_out(args, model)`), created; outside `--predict`, a backup there is kept only
    when its settings match (`check_resume`)."""
    if args.out is None:
        args.out = str(default_out(args, model))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if getattr(args, "predict", None) is None:
        check_resume(out, args)
    return out


def read_records(path: str | os.PathLike, fields: Sequence[str]) -> list[dict]:
    """Rows of a TSV (header row naming the columns) or JSONL file, each a dict with at least `fields`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        if path.suffix in (".jsonl", ".json"):
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not a JSON object ({e})") from None
                missing = [k for k in fields if k not in row]
                if missing:
                    raise ValueError(f"{path}:{n}: missing field(s) {missing}; expected {list(fields)}, got "
                                     f"{sorted(row)}")
                rows.append(row)
            return rows
        header = f.readline().rstrip("\n").split("\t")
        missing = [k for k in fields if k not in header]
        if missing:
            raise ValueError(f"{path}: header row {header} lacks column(s) {missing}; expected a TSV header "
                             f"naming {list(fields)} (or a .jsonl file)")
        for n, line in enumerate(f, 2):
            if not line.strip():
                continue
            values = line.rstrip("\n").split("\t")
            if len(values) != len(header):
                raise ValueError(f"{path}:{n}: {len(values)} tab-separated values, expected {len(header)} "
                                 f"({header})")
            rows.append(dict(zip(header, values)))
    return rows


def save_model(model, vocab: str | os.PathLike | Sequence[str], out: Path) -> Path:
    """Write `out/model.keras` and `out/vocab.txt` (a copy of the `vocab` file, or the given tokens in id order),
    each under a temporary name, then renamed."""
    path = out / "model.keras"
    tmp = out / f".model.tmp-{os.getpid()}.keras"
    model.save(tmp)
    os.replace(tmp, path)
    vocab_tmp = out / f".vocab.tmp-{os.getpid()}.txt"
    if isinstance(vocab, (str, os.PathLike)):
        shutil.copy(vocab, vocab_tmp)
    else:
        vocab_tmp.write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    os.replace(vocab_tmp, out / "vocab.txt")
    print(f"saved {path} (+ vocab.txt); score a file with it: --predict FILE --saved {out}")
    return path


def run_task(argv: Sequence[str] | None, parse_args: Callable, predict_file: Callable, run_training: Callable) -> dict:
    """A task script's `main`: parse `argv`, then score a file with a saved model (`--predict`), or
    `run_training(args, out, started)` in the run's output folder."""
    started = time.time()
    args = parse_args(argv)
    if prediction_run(args):
        setup(args)
        return predict_file(args)
    return run_training(args, setup(args), started)


def prediction_run(args: argparse.Namespace) -> bool:
    """True for `--predict FILE --saved DIR` (then `--out` defaults to DIR); checks the pair."""
    if not getattr(args, "predict", None):
        return False
    if not args.saved:
        raise SystemExit("--predict needs --saved DIR (the output folder of a finished run)")
    args.out = args.out or args.saved
    return True


def split_records(args: argparse.Namespace, fields: Sequence[str], key: str, fraction: float) -> tuple[list, list]:
    """`(train, test)` records of --train and --test; without --test, the records whose `key` field
    `held_out(…, fraction)` picks are the test set."""
    train = read_records(args.train, fields)
    if args.test:
        return train, read_records(args.test, fields)
    return ([r for r in train if not held_out(r[key], fraction)], [r for r in train if held_out(r[key], fraction)])


def load_saved(folder: str | os.PathLike):
    """`(model, tokenizer)` saved by `save_model` in a previous run's output folder (loaded for inference: the
    training loss is not restored)."""
    from bert4k.pretrained import load_model

    folder = Path(folder)
    for name in ("model.keras", "vocab.txt"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder / name} not found: --saved must be the output folder of a finished "
                                    "run of this script")
    return load_model(folder / "model.keras", compile=False), Tokenizer(str(folder / "vocab.txt"), do_lower_case=True)


def data_path(*parts: str) -> Path:
    """A file under the shared data folder, with an error naming it when absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path} (set --data-dir or BERT4K_DATA)")
    return path


def held_out(key: str, fraction: float) -> bool:
    """Deterministic split: True for about `fraction` of keys, decided by the MD5 of the key alone (so the
    split does not depend on file order, --limit or the seed)."""
    digest = hashlib.md5(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


def dev_split(items: list, key: Callable, fraction: float) -> tuple[list, list]:
    """`(rest, dev)`: the items whose salted key MD5 (`held_out("dev\t" + key(item))`, independent of the test
    split) falls in `fraction`."""
    dev = [held_out("dev\t" + key(item), fraction) for item in items]
    return [x for x, d in zip(items, dev) if not d], [x for x, d in zip(items, dev) if d]


def limited(items: list, limit: int) -> list:
    return items[:limit] if limit else items


# === which model to start from ===

@dataclasses.dataclass
class ModelSource:
    """Where the weights come from: `config` (path or dict), `checkpoint` (None = random init), `vocab`."""

    name: str
    config: str | dict
    checkpoint: str | None
    vocab: str

    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.vocab, do_lower_case=True)

    def build(self, model: str = "bert", application: str = "encoder", keep_tokens=None, **kwargs):
        config = self.config
        if isinstance(config, dict) and "vocab_size" not in config:
            config = {**config, "vocab_size": len(keep_tokens) if keep_tokens is not None else _vocab_size(self.vocab)}
        return build_transformer_model(config, self.checkpoint, model=model, application=application,
                                       keep_tokens=keep_tokens, **kwargs)


def _vocab_size(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def pretrained_available() -> bool:
    return all((PRETRAINED / name).exists() for name in ("config.json", "vocab.txt", "model.safetensors"))


def model_source(args: argparse.Namespace) -> ModelSource:
    """`--config/--checkpoint/--vocab` if given; else `--tiny`; else our pretrained checkpoint unless
    `--from-scratch`; else a small random model of the pretrained model's shape and vocabulary."""
    full_vocab = str(data_path(*FULL_VOCAB))
    if args.config or args.checkpoint:
        checkpoint = args.checkpoint
        config = args.config or checkpoint
        if not os.path.isdir(config) and not str(config).endswith(".json"):
            raise ValueError(f"--config must be a json file or a checkpoint directory, got {config!r}")
        vocab = args.vocab
        if vocab is None:
            folder = config if os.path.isdir(config) else os.path.dirname(config)
            vocab = os.path.join(folder, "vocab.txt") if os.path.exists(os.path.join(folder, "vocab.txt")) else None
        if vocab is None:
            raise ValueError("--vocab is required: no vocab.txt beside --config")
        if args.from_scratch:
            checkpoint = None
        return ModelSource(f"checkpoint:{checkpoint}" if checkpoint else f"scratch:{config}", config, checkpoint, vocab)
    have_pretrained = pretrained_available()
    vocab = args.vocab or (str(PRETRAINED / "vocab.txt") if have_pretrained else full_vocab)
    if args.tiny:
        return ModelSource("scratch:tiny", dict(TINY), None, vocab)
    if have_pretrained and not args.from_scratch:
        return ModelSource(f"pretrained:{PRETRAINED.name}", str(PRETRAINED / "config.json"),
                           str(PRETRAINED / "model.safetensors"), vocab)
    config = str(PRETRAINED / "config.json") if have_pretrained else dict(SMALL)
    return ModelSource("scratch:small", config, None, vocab)


# === batches ===

def _feature_shape(rows: Sequence) -> tuple:
    """The per-position shape of float feature rows (`[length, features]` arrays); `()` for id rows."""
    first = rows[0]
    return first.shape[1:] if isinstance(first, np.ndarray) and first.ndim > 1 else ()


def _pad(rows: Sequence[Sequence[int]] | Sequence[np.ndarray], value: int = 0) -> np.ndarray:
    """Id rows → int32 `[rows, longest]`; float feature rows `[length, features]` → float32
    `[rows, longest, features]`; padded with `value`."""
    trailing = _feature_shape(rows)
    dtype = "float32" if trailing else "int32"
    out = np.full((len(rows), max(len(r) for r in rows), *trailing), value, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _take(y, index: np.ndarray):
    if y is None:
        return None
    if isinstance(y, tuple):
        return tuple(_take(v, index) for v in y)
    if isinstance(y, np.ndarray):
        return y[index]
    return _pad([y[i] for i in index])  # a column of sequences (token labels)


def batch_order(lengths: Sequence[int], batch_size: int, shuffle: bool, rng: np.random.Generator | None,
                window: int = 64) -> list[np.ndarray]:
    """Batches of indices. Shuffled: random order, then examples sorted by length inside windows of
    `window` batches (little padding), then the batches shuffled. Not shuffled: sorted by length."""
    lengths = np.asarray(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    order = rng.permutation(len(lengths))
    chunk = batch_size * window
    order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in np.split(order, range(chunk,
                            len(order), chunk))]) if len(order) else order
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def dataset(columns: Sequence[Sequence[Sequence[int]]], y=None, batch_size: int = 32, shuffle: bool = False,
            seed: int = 0):
    """A `tf.data.Dataset` of `(x, y)` batches (or `x` alone): `x` is the tuple of `columns` (lists of id
    sequences: token ids, segment ids, ...; or of float `[length, features]` arrays) padded with 0 to the longest
    row of the batch; `y` is None, an array
    indexed per example, a tuple of arrays, or a list of id sequences (padded). Shuffled datasets draw a new
    length-bucketed order on every pass (seeded by `seed` and the pass number); `fit` makes the pass number the
    epoch (`data.epoch_order`), so a resumed run repeats the uninterrupted run's order."""
    import tensorflow as tf

    def make_batch(index):
        x = tuple(_pad([col[i] for i in index]) for col in columns)
        return x if y is None else (x, _take(y, index))

    ids = tf.TensorSpec([None, None], tf.int32)

    x_spec = tuple(tf.TensorSpec([None, None, *_feature_shape(col)], tf.float32) if _feature_shape(col) else ids
                   for col in columns)

    def spec_of(v):
        if isinstance(v, tuple):
            return tuple(spec_of(u) for u in v)
        if isinstance(v, np.ndarray):
            return tf.TensorSpec([None, *v.shape[1:]], tf.as_dtype(v.dtype))
        return ids

    signature = x_spec if y is None else (x_spec, spec_of(y))
    return batched_dataset([len(r) for r in columns[0]], batch_size, make_batch, signature, shuffle, seed)


def batched_dataset(lengths: Sequence[int], batch_size: int, make_batch: Callable, signature, shuffle: bool = True,
                    seed: int = 0):
    """The `tf.data.Dataset` behind every task's training data: `make_batch(indices)` for each batch of the
    length-bucketed `batch_order` (a new seeded order per pass when shuffled), with `signature` as its
    `output_signature` and `.epoch_order` so that `fit` makes the pass number the epoch (exact resume)."""
    import tensorflow as tf

    passes = [0]

    def generate():
        rng = np.random.default_rng([seed, passes[0]])
        passes[0] += 1
        for index in batch_order(lengths, batch_size, shuffle, rng):
            yield make_batch(index)

    data = tf.data.Dataset.from_generator(generate, output_signature=signature)
    n_batches = -(-len(lengths) // batch_size)
    data = data.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(2)
    data.epoch_order = EpochOrder(passes)
    return data


class EpochOrder(keras.callbacks.Callback):
    """Makes every random choice of an epoch a function of the epoch number: the shuffled `dataset`'s order, and
    the states of the model's random seed generators (dropout), which BackupAndRestore does not save. A run
    resumed at epoch k then repeats what the uninterrupted run did in epoch k."""

    STEP = 1 << 20  # seed-generator draws an epoch may make before two epochs' streams overlap

    def __init__(self, passes: list[int]):
        super().__init__()
        self.passes = passes
        self.initial: list[tuple] = []

    def on_train_begin(self, logs=None):
        self.initial = [(sg.state, np.asarray(sg.state.numpy())) for layer in self.model._flatten_layers()
                        for sg in layer._seed_generators]

    def on_epoch_begin(self, epoch, logs=None):
        self.passes[0] = epoch
        for state, start in self.initial:
            state.assign((start + np.array([0, epoch * self.STEP])).astype(start.dtype))


def predict_in_order(model, columns: Sequence[Sequence[Sequence[int]]], batch_size: int = 64):
    """`model.predict` over length-sorted batches, returned in the original order (array or list of arrays)."""
    order = np.argsort([len(r) for r in columns[0]], kind="stable")
    outputs = None
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        x = tuple(_pad([col[i] for i in index]) for col in columns)
        y = model.predict_on_batch(x)
        y = [np.asarray(v) for v in y] if isinstance(y, (list, tuple)) else [np.asarray(y)]
        if outputs is None:
            outputs = [[] for _ in y]
        for acc, v in zip(outputs, y):
            acc.extend(list(v))
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    result = [[acc[i] for i in inverse] for acc in outputs]
    result = [np.stack(r) if all(np.shape(v) == np.shape(r[0]) for v in r) else r for r in result]
    return result[0] if len(result) == 1 else result


# === training ===

def fit(model, args: argparse.Namespace, out: Path, train_data, n_train: int, loss, metrics=None, val_data=None,
        before: Sequence[keras.callbacks.Callback] = (), title: str | None = None,
        baselines: dict[str, float] | None = None):
    """Compile with `bert4k.training.create_optimizer` (AdamW, warmup + linear decay, decay exclusions, optional
    accumulation and EMA) and fit with resume, CSV log and learning-curve callbacks (`baselines`, `{label: value}`
    on the metric's scale, are drawn as horizontal lines). Returns the History."""
    steps = training.steps_per_epoch(n_train, args.batch_size) * args.epochs
    optimizer = training.create_optimizer(model, args.lr, total_steps=steps, warmup=args.warmup,
                                          weight_decay=args.weight_decay, grad_accum_steps=args.grad_accum,
                                          use_ema=args.ema)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    order = [train_data.epoch_order] if hasattr(train_data, "epoch_order") else []
    callbacks = training.training_callbacks(str(out), resume=not args.no_resume, swap_ema=args.ema and val_data
                                            is not None, title=title, before=[*order, *before], baselines=baselines)
    verbose = 1 if sys.stdout.isatty() else 2
    return model.fit(train_data, validation_data=val_data, epochs=args.epochs, callbacks=callbacks, verbose=verbose,
                     shuffle=False)


class CompactVocab:
    """The tokens a corpus uses (plus specials), as `keep_tokens` for `build_transformer_model`, and the id maps
    between the full vocabulary and the compact one (unseen tokens → `[UNK]`)."""

    SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

    def __init__(self, tokenizer: Tokenizer, id_rows: Sequence[Sequence[int]], min_count: int = 1):
        counts = Counter(i for row in id_rows for i in row)
        specials = tokenizer.tokens_to_ids(self.SPECIALS)
        self.keep_tokens = specials + sorted(i for i, c in counts.items() if c >= min_count and i not in specials)
        self.to_compact = np.full(tokenizer.vocab_size, self.SPECIALS.index("[UNK]"), dtype="int32")
        self.to_compact[self.keep_tokens] = np.arange(len(self.keep_tokens))
        self.to_full = np.asarray(self.keep_tokens, dtype="int32")

    def __len__(self) -> int:
        return len(self.keep_tokens)


# === outputs ===

def write_json(path: Path, value) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=2, default=_json_default)
        f.write("\n")


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finish(out: Path, metrics: dict, args: argparse.Namespace, started: float, source: ModelSource | None) -> dict:
    """Write `metrics.json` (metrics + settings + model source + wall time) and print a summary line."""
    record = {**metrics, "model_source": source.name if source else None, "settings": vars(args),
              "wall_seconds": round(time.time() - started, 1)}
    write_json(out / "metrics.json", record)
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()
             if isinstance(v, (int, float, str))}
    print(json.dumps(shown, ensure_ascii=False))
    print(f"wrote {out / 'metrics.json'} ({record['wall_seconds']} s)")
    print(score_line(metrics))
    return record


SCORES = ("accuracy", "f1", "rouge_l", "perplexity", "ndcg@10", "ndcg", "em")


def _flat_baselines(baselines: dict, key: str) -> dict[str, float]:
    """`{name: value}` of the baselines for score `key` (entries may be numbers or dicts of scores)."""
    flat = {}
    for name, value in baselines.items():
        if isinstance(value, dict) and isinstance(value.get(key), (int, float)):
            flat[name] = value[key]
        elif isinstance(value, (int, float)) and not name.endswith("_seconds"):
            flat[name] = value
    return flat


def score_line(metrics: dict) -> str:
    """`model <score> <value> | baselines: <name> <value>, ...` — the run's result in one line."""
    key = next((k for k in SCORES if isinstance(metrics.get(k), (int, float))), None)
    if key is None:
        return "model: no score"
    baselines = _flat_baselines(metrics.get("baselines") or {}, key)
    shown = ", ".join(f"{name} {value:.4g}" for name, value in baselines.items())
    return f"model {key} {metrics[key]:.4g}" + (f" | baselines: {shown}" if shown else " | no baselines run")


def timed(fn: Callable, *args, **kwargs):
    """`(fn(*args, **kwargs), seconds)`."""
    start = time.time()
    value = fn(*args, **kwargs)
    return value, round(time.time() - start, 1)
