"""Learning to rank on LightGBM's lambdarank example (../shared/data/lambdarank): a set Transformer over the
documents of each query vs LightGBM `lambdarank` (LambdaMART) and a per-document MLP, NDCG@k and MRR on the test
file; plus a synthetic set whose relevance depends on the other documents of the list.

    python tasks/rank.py                       # full run (24 min on one core shared with ~10 processes)
    python tasks/rank.py --tiny --epochs 2     # smoke test
    python tasks/rank.py --train my.train --test my.test [--dev my.dev]

Your data: LIBSVM ranking files as LightGBM reads them, one document a line (`relevance index:value ...`), with
the list sizes in FILE.query beside each FILE (one query's document count a line, in file order). Without --dev,
the dev queries are cut from --train as below.

A dev split (queries chosen by MD5 of their index, `--dev-fraction`) is cut from the training file: each neural
variant trains `--seeds` models on the rest, and the epoch count at which the seeds' averaged scores reach the best
dev NDCG@10 (training stops `--patience` epochs after it) is kept; the seeds are then retrained on all training
queries for that many epochs and their scores averaged on the test file, which is scored once. LightGBM trains on
all training queries with its example settings. The defaults (features, lr, weight decay, noise, loss, size) were
chosen on the dev split only.
Features: constant columns dropped, a quantile transform to a normal distribution fit on the training documents,
and (`--list-norm`) each feature standardised within its list appended. `set_transformer_lightgbm` is SetRank's
re-ranking setting: it also gets each document's rank (an embedding) and list-standardised score under LightGBM,
out of fold on the training queries.
The synthetic set: each list has its own random offset on feature 0, and relevance is graded by how close a
document's feature 0 is to the list's mean, so no function of one document alone can rank it.
The PyTorch backend is the default here (`KERAS_BACKEND` overrides it): the run builds dozens of small models, and
eager PyTorch saves TensorFlow's graph trace of each (about 20 s per model on this task).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

if __name__ == "__main__":  # only a script run picks the backend; importing this module changes nothing
    os.environ.setdefault("KERAS_BACKEND", "torch")

import common
import keras
import numpy as np

from bert4k.ranking import (
    RankingList,
    approx_ndcg_loss,
    build_set_ranker,
    lambda_loss,
    mean_ndcg,
    mean_reciprocal_rank,
    pad_initial_ranks,
    pad_lists,
    read_libsvm_ranking,
    softmax_loss,
)

LOSSES = {"softmax": softmax_loss, "approx_ndcg": approx_ndcg_loss, "lambda": lambda_loss}
CUTOFFS = (1, 3, 5, 10)
# LightGBM's examples/lambdarank/train.conf
LGBM_PARAMS = dict(objective="lambdarank", metric="ndcg", num_leaves=31, learning_rate=0.1, min_data_in_leaf=50,
                   min_sum_hessian_in_leaf=5.0, bagging_freq=1, bagging_fraction=0.9, feature_fraction=1.0,
                   max_bin=255, verbose=-1, num_threads=1)
LGBM_ROUNDS = 100
FILE_FORMAT = ("LIBSVM ranking lines (`relevance index:value ...`, one document a line) with FILE.query beside "
               "FILE (the document count of each query, one a line)")
VARIANTS = {"set_transformer": dict(block="self"), "set_transformer_isab": dict(block="induced"),
            "per_document_mlp": dict(num_layers=0),
            "set_transformer_lightgbm": dict(block="self", max_initial_rank=32)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(task_name="rank")
    common.add_data_arguments(p, "relevance, features", FILE_FORMAT, predict=False)
    p.add_argument("--out", help="output folder (default: runs/rank-<dataset>-<model>)")
    p.add_argument("--data-dir", default=str(common.DATA), help="the shared data folder (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=30, help="most epochs on the dev split (default: %(default)s)")
    p.add_argument("--patience", type=int, default=8,
                   help="stop after this many epochs without a better dev NDCG@10 (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="lists per batch (default: %(default)s)")
    p.add_argument("--lr", type=float, default=5e-4, help="default: %(default)s")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=64, help="hidden size (default: %(default)s)")
    p.add_argument("--layers", type=int, default=2, help="set-attention blocks (default: %(default)s)")
    p.add_argument("--heads", type=int, default=4, help="default: %(default)s")
    p.add_argument("--dropout", type=float, default=0.3, help="default: %(default)s")
    p.add_argument("--input-noise", type=float, default=0.3,
                   help="std of Gaussian noise on the (transformed) features in training (default: %(default)s)")
    p.add_argument("--inducing-points", type=int, default=8, help="ISAB inducing points (default: %(default)s)")
    p.add_argument("--loss", choices=sorted(LOSSES), default="softmax", help="default: %(default)s")
    p.add_argument("--features", choices=("quantile", "standard"), default="quantile",
                   help="per-feature transform fit on the training documents (default: %(default)s)")
    p.add_argument("--list-norm", action=argparse.BooleanOptionalAction, default=True,
                   help="append each feature standardised within its list (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="models per variant, scores averaged (default: %(default)s)")
    p.add_argument("--dev-fraction", type=float, default=0.2, help="default: %(default)s")
    p.add_argument("--synthetic-lists", type=int, default=600, help="synthetic training lists (default: %(default)s)")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS),
                   help="neural models on the real data (default: all)")
    p.add_argument("--tiny", action="store_true", help="small models, few lists (smoke test)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# === data ===

def read_split(args) -> tuple[list[RankingList], list[RankingList] | None, list[RankingList]]:
    """`(train, dev or None, test)` lists of --train/--dev/--test (default: the lambdarank example's files); the
    dev and test files are read with the training file's feature width."""
    if (args.train is None) != (args.test is None):
        raise SystemExit("give both --train and --test (LIBSVM ranking files), or neither for the lambdarank example")
    folder = None if args.train else common.data_path("lambdarank")
    train_path, test_path = (args.train, args.test) if args.train else (folder / "rank.train", folder / "rank.test")
    train = read_libsvm_ranking(train_path)
    width = train[0].features.shape[1]
    dev = read_libsvm_ranking(args.dev, num_features=width) if args.dev else None
    return train, dev, read_libsvm_ranking(test_path, num_features=width)


def split_dev(lists: list[RankingList], fraction: float) -> tuple[list[RankingList], list[RankingList]]:
    """(train, dev): dev queries chosen by the MD5 of their index in the training file."""
    dev = [common.held_out(f"lambdarank-train-{i}", fraction) for i in range(len(lists))]
    return [r for r, d in zip(lists, dev) if not d], [r for r, d in zip(lists, dev) if d]


class FeatureTransform:
    """Fit on training documents: drop constant columns, then `quantile` (to a standard normal, scikit-learn's
    `QuantileTransformer`) or `standard` ((x − mean) / std); `list_norm` appends each transformed feature
    standardised within its list (a query-level normalisation: it uses the list's features, never labels)."""

    def __init__(self, lists: list[RankingList], kind: str = "quantile", list_norm: bool = True):
        from sklearn.preprocessing import QuantileTransformer

        x = np.concatenate([r.features for r in lists])
        self.keep, self.list_norm = x.std(0) > 0, list_norm
        x = x[:, self.keep]
        if kind == "quantile":
            quantiles = QuantileTransformer(n_quantiles=min(200, len(x)), output_distribution="normal",
                                            random_state=0).fit(x)
            self.transform = quantiles.transform
        else:
            mean, std = x.mean(0), x.std(0)
            self.transform = lambda v: (v - mean) / std

    def __call__(self, lists: list[RankingList]) -> list[RankingList]:
        return [RankingList(self.features(r.features), r.labels, r.initial_rank) for r in lists]

    def features(self, x: np.ndarray) -> np.ndarray:
        x = self.transform(x[:, self.keep]).astype(np.float32)
        if not self.list_norm:
            return x
        within = (x - x.mean(0)) / (x.std(0) + 1e-3)
        return np.concatenate([x, within], 1)


def synthetic_lists(count: int, rng: np.random.Generator, num_features: int = 4) -> list[RankingList]:
    """Lists of 8–20 documents; feature 0 = list offset + noise; grade 3/2/1/0 for the 1/2/3/rest documents
    closest to the list mean of feature 0. Other features are noise."""
    out = []
    for _ in range(count):
        n = int(rng.integers(8, 21))
        x = rng.normal(size=(n, num_features)).astype(np.float32)
        x[:, 0] += rng.uniform(-5, 5)
        order = np.argsort(np.abs(x[:, 0] - x[:, 0].mean()))
        labels = np.zeros(n, np.int32)
        labels[order[:1]], labels[order[1:3]], labels[order[3:6]] = 3, 2, 1
        out.append(RankingList(x, labels))
    return out


# === evaluation ===

def evaluate(lists: list[RankingList], scores: list[np.ndarray]) -> dict:
    labels = [r.labels for r in lists]
    metrics = {f"ndcg@{k}": mean_ndcg(labels, scores, k) for k in CUTOFFS}
    metrics["mrr"] = mean_reciprocal_rank(labels, scores)
    return metrics


def unpad(padded: np.ndarray, lists: list[RankingList]) -> list[np.ndarray]:
    return [padded[i, :len(r.labels)] for i, r in enumerate(lists)]


# === models ===

def train_lightgbm(train: list[RankingList], seed: int):
    import lightgbm

    data = lightgbm.Dataset(np.concatenate([r.features for r in train]), np.concatenate([r.labels for r in train]),
                            group=[len(r.labels) for r in train])
    booster = lightgbm.train({**LGBM_PARAMS, "seed": seed}, data, num_boost_round=LGBM_ROUNDS)
    return lambda lists: [booster.predict(r.features) for r in lists]


def ranks_of(scores: np.ndarray) -> np.ndarray:
    """0-based rank of each document by decreasing score."""
    ranks = np.empty(len(scores), np.int32)
    ranks[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
    return ranks


def lightgbm_scores(train: list[RankingList], test: list[RankingList], seed: int, folds: int = 5):
    """LightGBM scores out of fold for the training queries (a query's own labels never shape its scores) and from
    LightGBM on all training queries for the test queries."""
    fold = np.arange(len(train)) % folds
    train_scores = [None] * len(train)
    for f in range(folds):
        scorer = train_lightgbm([r for r, g in zip(train, fold) if g != f], seed)
        held = [i for i in range(len(train)) if fold[i] == f]
        for i, s in zip(held, scorer([train[i] for i in held])):
            train_scores[i] = s
    return train_scores, train_lightgbm(train, seed)(test)


def with_base_ranker(lists: list[RankingList], scores: list[np.ndarray]) -> list[RankingList]:
    """SetRank's input: each document's rank under the base ranker as `initial_rank`, and its score standardised
    within the list as one more feature."""
    out = []
    for r, s in zip(lists, scores, strict=True):
        within = ((s - s.mean()) / (s.std() + 1e-3)).astype(np.float32)[:, None]
        out.append(RankingList(np.concatenate([r.features, within], 1), r.labels, ranks_of(s)))
    return out


def model_inputs(lists, length: int, use_rank: bool):
    features, labels, mask = pad_lists(lists, length)
    inputs = [features, mask, pad_initial_ranks(lists, length)] if use_rank else [features, mask]
    return inputs, labels


def new_model(args, num_features: int, seed: int, **model_kwargs) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = build_set_ranker(num_features, hidden_size=args.hidden, heads=args.heads, dropout=args.dropout,
                             input_noise=args.input_noise, inducing_points=args.inducing_points, **model_kwargs)
    model.compile(optimizer=keras.optimizers.AdamW(args.lr, weight_decay=args.weight_decay), loss=LOSSES[args.loss])
    return model


def ensemble_scores(models, lists, length: int) -> list[np.ndarray]:
    """Each list's scores averaged over `models`."""
    use_rank = len(models[0].inputs) == 3
    inputs = model_inputs(lists, length, use_rank)[0]
    mean = np.mean([keras.ops.convert_to_numpy(m(inputs, training=False)) for m in models], axis=0)
    return unpad(mean, lists)


def one_epoch(models, train, length: int, batch_size: int) -> float:
    """One epoch for each model; the mean training loss."""
    inputs, labels = model_inputs(train, length, len(models[0].inputs) == 3)
    return float(np.mean([m.fit(inputs, labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=True)
                          .history["loss"][0] for m in models]))


def select_epochs(args, train, dev, length: int, **model_kwargs) -> tuple[list, int, list[dict]]:
    """Train `args.seeds` models side by side on `train`, scoring their average on `dev` after every epoch, until
    `args.patience` epochs pass without a better dev NDCG@10 (at most `args.epochs`). Returns the models with their
    weights of the best epoch, that epoch and the per-epoch log."""
    models = [new_model(args, train[0].features.shape[1], args.seed + s, **model_kwargs) for s in range(args.seeds)]
    best, best_epoch, best_weights, log = -1.0, 0, None, []
    for epoch in range(1, args.epochs + 1):
        loss = one_epoch(models, train, length, args.batch_size)
        dev_ndcg = mean_ndcg([r.labels for r in dev], ensemble_scores(models, dev, length), 10)
        log.append({"epoch": epoch, "loss": loss, "dev_ndcg@10": dev_ndcg})
        if dev_ndcg > best:
            best, best_epoch, best_weights = dev_ndcg, epoch, [m.get_weights() for m in models]
        elif epoch - best_epoch >= args.patience:
            break
    for m, w in zip(models, best_weights):
        m.set_weights(w)
    return models, best_epoch, log


def run_neural(args, splits: dict[str, tuple[list, list, list]], length: int, refit: bool) -> tuple[dict, dict]:
    """Per variant (`splits`: name → its (train, dev, test) lists): pick the epoch count on dev (`select_epochs`);
    with `refit`, retrain the seeds on train + dev for that many epochs. Test scores are the mean over seeds."""
    results, logs = {}, {}
    for name, (train, dev, test) in splits.items():
        kwargs = {"num_layers": args.layers, **VARIANTS[name]}
        started = time.time()
        models, best_epoch, logs[name] = select_epochs(args, train, dev, length, **kwargs)
        results[name] = {"best_epoch": best_epoch, "dev_ndcg@10": max(e["dev_ndcg@10"] for e in logs[name])}
        if refit:
            every = train + dev
            models = [new_model(args, every[0].features.shape[1], args.seed + s, **kwargs) for s in range(args.seeds)]
            for _ in range(best_epoch):
                one_epoch(models, every, length, args.batch_size)
        results[name]["test"] = evaluate(test, ensemble_scores(models, test, length))
        results[name]["train_seconds"] = round(time.time() - started, 1)
        print(name, {k: round(v, 4) for k, v in results[name]["test"].items()}, f"epochs {best_epoch}",
              f"({results[name]['train_seconds']} s)", flush=True)
    return results, logs


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.data_dir = str(Path(args.data_dir))
    out = common.setup(args, "tiny" if args.tiny else f"h{args.hidden}-l{args.layers}")
    started = time.time()
    if args.tiny:
        args.hidden, args.layers, args.heads, args.seeds, args.synthetic_lists = 16, 1, 2, 1, 60
    raw_train, dev, raw_test = read_split(args)
    train, dev = split_dev(raw_train, args.dev_fraction) if dev is None else (raw_train, dev)
    if args.tiny:
        train, dev, raw_test = train[:24], dev[:8], raw_test[:8]
    length = max(len(r.labels) for r in train + dev + raw_test)
    rng = np.random.default_rng(args.seed)
    metrics = {"train_queries": len(train), "dev_queries": len(dev), "test_queries": len(raw_test),
               "random": evaluate(raw_test, [rng.random(len(r.labels)) for r in raw_test])}
    lightgbm_started = time.time()
    lightgbm_test = train_lightgbm(train + dev, args.seed)(raw_test)
    metrics["lightgbm_lambdarank"] = {"test": evaluate(raw_test, lightgbm_test),
                                      "train_seconds": round(time.time() - lightgbm_started, 1)}
    print("lightgbm", {k: round(v, 4) for k, v in metrics["lightgbm_lambdarank"]["test"].items()}, flush=True)
    transform = FeatureTransform(train + dev, args.features, args.list_norm)
    plain = transform(train), transform(dev), transform(raw_test)
    base_train, base_test = lightgbm_scores(train + dev, raw_test, args.seed)
    based = tuple(with_base_ranker(lists, scores) for lists, scores in
                  zip(plain, (base_train[:len(train)], base_train[len(train):], base_test)))
    splits = {name: based if VARIANTS[name].get("max_initial_rank") else plain for name in args.variants}
    results, logs = run_neural(args, splits, length, refit=True)
    metrics.update(results)

    syn = synthetic_lists(args.synthetic_lists + 2 * (args.synthetic_lists // 4), rng)
    quarter = args.synthetic_lists // 4
    syn_train, syn_dev, syn_test = syn[:args.synthetic_lists], syn[-2 * quarter:-quarter], syn[-quarter:]
    syn_args = argparse.Namespace(**{**vars(args), "dropout": 0.0, "input_noise": 0.0, "seeds": 1, "lr": 1e-3,
                                     "weight_decay": 0.01})
    syn_results, syn_logs = run_neural(syn_args, {k: (syn_train, syn_dev, syn_test) for k in
                                                  ("set_transformer", "per_document_mlp")}, 20, refit=False)
    metrics["synthetic"] = {"lists": [len(syn_train), len(syn_dev), len(syn_test)], **syn_results,
                            "random": evaluate(syn_test, [rng.random(len(r.labels)) for r in syn_test])}
    common.write_json(out / "training_log.json", {"lambdarank": logs, "synthetic": syn_logs})
    summary = {"test_ndcg@10": {name: metrics[name]["test"]["ndcg@10"] for name in
                                ("lightgbm_lambdarank", *args.variants)},
               "synthetic_test_ndcg@10": {name: syn_results[name]["test"]["ndcg@10"] for name in syn_results}}
    metrics["summary"] = summary
    if "set_transformer" in results:  # the closing score line: the set Transformer beside the baselines
        metrics["ndcg@10"] = results["set_transformer"]["test"]["ndcg@10"]
        metrics["baselines"] = {name: metrics[name]["test"]["ndcg@10"] if "test" in metrics[name] else
                                metrics[name]["ndcg@10"] for name in ("lightgbm_lambdarank", "random")}
    common.finish(out, metrics, args, started, None)
    return metrics


if __name__ == "__main__":
    main()
