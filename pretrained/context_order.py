"""Does a pre-trained MLM use word order? Held-out MLM loss with the context in order and with it shuffled.

A model that predicts masked tokens from the bag of context tokens only (the "unigram / bag-of-words plateau"
of early MLM training: attention spread evenly over the row) scores the same on both; a model that reads
its neighbours loses much of its accuracy when the unmasked tokens of each row are permuted (masked slots and
`[CLS]`/`[SEP]` stay in place).

    python pretrained/context_order.py runs/pt_mlm            # an exported folder (config.json, model.safetensors)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import batches

from bert4k import build_transformer_model


def shuffle_context(token_ids: np.ndarray, positions: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """`token_ids` with each row's unmasked real tokens permuted among themselves (first and last real token, the
    masked positions and the padding keep their place)."""
    rng = np.random.default_rng(seed)
    out = token_ids.copy()
    for j, row in enumerate(token_ids):
        n = int((row != 0).sum())
        free = np.setdiff1d(np.arange(1, n - 1), positions[j][labels[j] > 0])
        out[j, free] = row[rng.permutation(free)]
    return out


def masked_scores(logits: np.ndarray, positions: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `logits [batch, seq, vocab]` at the used `positions` (label > 0)."""
    picked = np.take_along_axis(logits, positions[..., None], 1).astype("float64")
    picked -= picked.max(-1, keepdims=True)
    log_probs = picked - np.log(np.exp(picked).sum(-1, keepdims=True))
    used = labels > 0
    nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    return float(nll[used].mean()), float((picked.argmax(-1) == labels)[used].mean())


def context_order_gain(predict, batch_list: list) -> dict:
    """MLM loss/accuracy of `predict([token_ids, segment_ids]) -> logits` over `batch_list` (the
    `StepBatches.batch` tuples), in order and shuffled; `order_gain` = shuffled loss − ordered loss."""
    ordered, shuffled = [], []
    for i, (token_ids, segment_ids, positions, labels) in enumerate(batch_list):
        ordered.append(masked_scores(predict([token_ids, segment_ids]), positions, labels))
        mixed = shuffle_context(token_ids, positions, labels, seed=i)
        shuffled.append(masked_scores(predict([mixed, segment_ids]), positions, labels))
    (loss, acc), (loss_s, acc_s) = np.mean(ordered, 0), np.mean(shuffled, 0)
    return {"loss": round(loss, 4), "accuracy": round(acc, 4), "shuffled_loss": round(loss_s, 4),
            "shuffled_accuracy": round(acc_s, 4), "order_gain": round(loss_s - loss, 4)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="exported model folder (config.json, model.safetensors, vocab.txt)")
    p.add_argument("--cache", default="runs/pretrain_cache_v2/rows_256_2.npz", help="packed rows of the pre-training run")
    p.add_argument("--cache-vocab", help="the vocabulary of --cache's ids when it is not the model's (rows are mapped "
                   "to the model's vocabulary by token, unknown tokens to [UNK])")
    p.add_argument("--batches", type=int, default=4)
    args = p.parse_args(argv)
    folder = Path(args.folder)
    vocab = folder.joinpath("vocab.txt").read_text(encoding="utf-8").split("\n")
    with np.load(args.cache) as data:
        bounds, ids = data["lengths"], data["ids"]
    maxlen = int(np.diff(bounds).max()) + 2
    if args.cache_vocab:
        index = {t: i for i, t in enumerate(vocab)}
        cache_tokens = Path(args.cache_vocab).read_text(encoding="utf-8").split("\n")
        ids = np.array([index.get(t, index["[UNK]"]) for t in cache_tokens])[ids]
    rows = np.split(ids, bounds[1:-1])[:max(64, len(bounds) // 100)]  # the validation rows of train_small_bert
    ids_of = {t: vocab.index(t) for t in ("[CLS]", "[SEP]", "[MASK]")}
    val = batches.StepBatches(rows, [np.arange(len(r)) for r in rows], batch_size=16, maxlen=maxlen,
                              k=int(np.ceil(0.2 * maxlen)), vocab_size=len(vocab), cls_id=ids_of["[CLS]"],
                              sep_id=ids_of["[SEP]"], mask_id=ids_of["[MASK]"], first_normal_id=ids_of["[MASK]"] + 1,
                              seed=1)
    model = build_transformer_model(str(folder / "config.json"), str(folder / "model.safetensors"),
                                    application="mlm", logits=True)
    result = {"folder": str(folder), **context_order_gain(lambda x: np.asarray(model.predict(x, verbose=0)),
                                                          [val.batch(i) for i in range(args.batches)])}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
