"""Learning to rank on LightGBM's lambdarank example (../shared/data/lambdarank): a set Transformer over the
documents of each query vs LightGBM `lambdarank` (LambdaMART) and a per-document MLP, NDCG@k and MRR on the test
file; plus a synthetic set whose relevance depends on the other documents of the list.

    python tasks/rank.py                       # full run (~30 min on one busy shared core)
    python tasks/rank.py --tiny --epochs 2     # smoke test
    python tasks/rank.py --train my.train --test my.test [--dev my.dev]

Your data: LIBSVM ranking files as LightGBM reads them, one document a line (`relevance index:value ...`), with
the list sizes in FILE.query beside each FILE (one query's document count a line, in file order). Without --dev,
the dev queries are cut from --train as below.

A dev split (queries chosen by MD5 of their index, `--dev-fraction`) is cut from the training file: each neural model
picks its number of epochs by dev NDCG@10 when trained on the rest, then is retrained on all training queries for
that many epochs (LightGBM trains on all training queries with its example settings); the test file is scored once.
`set_transformer_lightgbm_rank` is SetRank's re-ranking setting: it also embeds each document's rank under
LightGBM (out of fold on the training queries).
The synthetic set: each list has its own random offset on feature 0, and relevance is graded by how close a
document's feature 0 is to the list's mean, so no function of one document alone can rank it.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

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
            "set_transformer_lightgbm_rank": dict(block="self", max_initial_rank=32)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(task_name="rank")
    common.add_data_arguments(p, "relevance, features", FILE_FORMAT, predict=False)
    p.add_argument("--out", help="output folder (default: runs/rank-<dataset>-<model>)")
    p.add_argument("--data-dir", default=str(common.DATA), help="the shared data folder (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=20, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=16, help="lists per batch (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="default: %(default)s")
    p.add_argument("--weight-decay", type=float, default=0.01, help="default: %(default)s")
    p.add_argument("--hidden", type=int, default=64, help="hidden size (default: %(default)s)")
    p.add_argument("--layers", type=int, default=2, help="set-attention blocks (default: %(default)s)")
    p.add_argument("--heads", type=int, default=4, help="default: %(default)s")
    p.add_argument("--dropout", type=float, default=0.3, help="default: %(default)s")
    p.add_argument("--inducing-points", type=int, default=8, help="ISAB inducing points (default: %(default)s)")
    p.add_argument("--loss", choices=sorted(LOSSES), default="softmax", help="default: %(default)s")
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


class Standardizer:
    """Feature-wise (x − mean) / std from the training documents."""

    def __init__(self, lists: list[RankingList]):
        x = np.concatenate([r.features for r in lists])
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6

    def __call__(self, lists: list[RankingList]) -> list[RankingList]:
        return [RankingList((r.features - self.mean) / self.std, r.labels, r.initial_rank) for r in lists]


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


def with_lightgbm_ranks(train: list[RankingList], test: list[RankingList], seed: int, folds: int = 5):
    """SetRank's input: each document's rank under LightGBM — out of fold for the training queries (a query's own
    labels never shape its ranks), from LightGBM on all training queries for the test queries."""
    fold = np.arange(len(train)) % folds
    ranked = list(train)
    for f in range(folds):
        scorer = train_lightgbm([r for r, g in zip(train, fold) if g != f], seed)
        held = [i for i in range(len(train)) if fold[i] == f]
        for i, s in zip(held, scorer([train[i] for i in held])):
            ranked[i] = RankingList(train[i].features, train[i].labels, ranks_of(s))
    scorer = train_lightgbm(train, seed)
    return ranked, [RankingList(r.features, r.labels, ranks_of(s)) for r, s in zip(test, scorer(test))]


def model_inputs(lists, length: int, use_rank: bool):
    features, labels, mask = pad_lists(lists, length)
    inputs = [features, mask, pad_initial_ranks(lists, length)] if use_rank else [features, mask]
    return inputs, labels


def train_neural(args, train, length: int, seed: int, dev=None, epochs: int | None = None, **model_kwargs):
    """Train one set ranker for `epochs`, or with `dev` up to `args.epochs` keeping the epoch of the best dev
    NDCG@10. Returns (score fn, per-epoch log, epochs trained / best epoch)."""
    keras.utils.set_random_seed(seed)
    use_rank = model_kwargs.get("max_initial_rank") is not None
    model = build_set_ranker(train[0].features.shape[1], hidden_size=args.hidden, heads=args.heads,
                             dropout=args.dropout, inducing_points=args.inducing_points, **model_kwargs)
    model.compile(optimizer=keras.optimizers.AdamW(args.lr, weight_decay=args.weight_decay), loss=LOSSES[args.loss])
    inputs, labels = model_inputs(train, length, use_rank)

    def score(lists):
        return unpad(keras.ops.convert_to_numpy(model(model_inputs(lists, length, use_rank)[0], training=False)), lists)

    best, best_weights, best_epoch, log = -1.0, None, epochs, []
    for epoch in range(epochs or args.epochs):
        history = model.fit(inputs, labels, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=True)
        entry = {"epoch": epoch + 1, "loss": float(history.history["loss"][0])}
        if dev is not None:
            entry["dev_ndcg@10"] = mean_ndcg([r.labels for r in dev], score(dev), 10)
            if entry["dev_ndcg@10"] > best:
                best, best_weights, best_epoch = entry["dev_ndcg@10"], [w.numpy() for w in model.weights], epoch + 1
        log.append(entry)
    if best_weights is not None:
        model.set_weights(best_weights)
    return score, log, best_epoch


def ensemble(fns, lists):
    runs = [fn(lists) for fn in fns]
    return [np.mean([run[i] for run in runs], axis=0) for i in range(len(lists))]



def run_neural(args, train, dev, test, length, variants, refit: bool) -> tuple[dict, dict]:
    """Per variant and seed: pick the epoch count on `dev`; with `refit`, retrain on train + dev for that many
    epochs. Test scores are the mean over seeds."""
    results, logs = {}, {}
    for name, kwargs in variants.items():
        kwargs = {"num_layers": args.layers, **kwargs}
        fns, logs[name], epochs = [], [], []
        started = time.time()
        for s in range(args.seeds):
            fn, log, best_epoch = train_neural(args, train, length, args.seed + s, dev=dev, **kwargs)
            logs[name].append(log)
            epochs.append(best_epoch)
            if refit:
                fn, _, _ = train_neural(args, train + dev, length, args.seed + s, epochs=best_epoch, **kwargs)
            fns.append(fn)
        results[name] = {"test": evaluate(test, ensemble(fns, test)), "best_epochs": epochs,
                         "train_seconds": round(time.time() - started, 1)}
        if not refit:
            results[name]["dev"] = evaluate(dev, ensemble(fns, dev))
        print(name, {k: round(v, 4) for k, v in results[name]["test"].items()}, flush=True)
    return results, logs


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.data_dir = str(Path(args.data_dir))
    out = common.setup(args, "tiny" if args.tiny else f"h{args.hidden}-l{args.layers}")
    started = time.time()
    if args.tiny:
        args.hidden, args.layers, args.heads, args.seeds, args.synthetic_lists = 16, 1, 2, 1, 60
    raw_train, dev, test = read_split(args)
    train, dev = split_dev(raw_train, args.dev_fraction) if dev is None else (raw_train, dev)
    if args.tiny:
        train, dev, test = train[:24], dev[:8], test[:8]
    length = max(len(r.labels) for r in raw_train + dev + test)
    rng = np.random.default_rng(args.seed)
    metrics = {"train_queries": len(train), "dev_queries": len(dev), "test_queries": len(test),
               "random": evaluate(test, [rng.random(len(r.labels)) for r in test])}
    metrics["lightgbm_lambdarank"] = {"test": evaluate(test, train_lightgbm(train + dev, args.seed)(test))}
    print("lightgbm", {k: round(v, 4) for k, v in metrics["lightgbm_lambdarank"]["test"].items()}, flush=True)
    scale = Standardizer(train + dev)
    ranked, test = with_lightgbm_ranks(scale(train + dev), scale(test), args.seed)
    train, dev = ranked[:len(train)], ranked[len(train):]
    results, logs = run_neural(args, train, dev, test, length, {k: VARIANTS[k] for k in args.variants}, refit=True)
    metrics.update(results)

    syn = synthetic_lists(args.synthetic_lists + 2 * (args.synthetic_lists // 4), rng)
    quarter = args.synthetic_lists // 4
    syn_train, syn_dev, syn_test = syn[:args.synthetic_lists], syn[-2 * quarter:-quarter], syn[-quarter:]
    syn_args = argparse.Namespace(**{**vars(args), "dropout": 0.0, "seeds": 1})
    syn_results, syn_logs = run_neural(syn_args, syn_train, syn_dev, syn_test, 20,
                                       {k: VARIANTS[k] for k in ("set_transformer", "per_document_mlp")}, refit=False)
    metrics["synthetic"] = {"lists": [len(syn_train), len(syn_dev), len(syn_test)], **syn_results,
                            "random": evaluate(syn_test, [rng.random(len(r.labels)) for r in syn_test])}
    common.write_json(out / "training_log.json", {"lambdarank": logs, "synthetic": syn_logs})
    summary = {"test_ndcg@10": {name: metrics[name]["test"]["ndcg@10"] for name in
                                ("lightgbm_lambdarank", *args.variants)},
               "synthetic_test_ndcg@10": {name: syn_results[name]["test"]["ndcg@10"] for name in syn_results}}
    metrics["summary"] = summary
    common.finish(out, metrics, args, started, None)
    return metrics


if __name__ == "__main__":
    main()
