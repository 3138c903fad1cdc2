"""Choose the pre-training objective by measurement: fine-tune each exported checkpoint (and random init) on a dev
split carved from ChnSentiCorp's *training* portion (the held-out evaluation split of tasks/classification.py is
never touched), and print dev accuracy beside the checkpoint's pre-training CPU time.

    python pretrained/compare_objectives.py runs/pt_mlm runs/pt_electra --train 2000 --dev 800 --epochs 1

A checkpoint folder holds config.json, model.safetensors, vocab.txt and training.json (train_small_bert.py
--export writes them); `scratch` is the same architecture from random weights with the first folder's vocabulary.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tasks"))
import classification
import common
import keras
import numpy as np

from bert4k import build_transformer_model, heads, training
from bert4k.tokenizers import Tokenizer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+")
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--dev", type=int, default=800)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--maxlen", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default=str(common.REPO / "runs" / "compare_objectives.json"))
    return p.parse_args(argv)


def dev_split(texts, labels):
    """ChnSentiCorp training texts → (train, dev) by an MD5 split of the text with its own salt."""
    dev = np.array([common.held_out("dev:" + t, 0.2) for t in texts])
    return ([t for t, d in zip(texts, dev) if not d], labels[~dev]), ([t for t, d in zip(texts, dev) if d], labels[dev])


def score(folder: Path | None, vocab: Path, data, args, seed: int) -> float:
    (train_texts, train_labels), (dev_texts, dev_labels) = data
    tokenizer = Tokenizer(str(vocab), do_lower_case=True)
    config = str((folder or vocab.parent) / "config.json")
    training.set_seed(seed)
    encoder = build_transformer_model(config, str(folder / "model.safetensors") if folder else None)
    model = heads.build_sequence_classifier(encoder, 2)

    def cols(texts):
        return [list(c) for c in zip(*[tokenizer.encode(t, maxlen=args.maxlen) for t in texts])]

    train = common.dataset(cols(train_texts), train_labels, 32, shuffle=True, seed=seed)
    steps = training.steps_per_epoch(len(train_labels), 32) * args.epochs
    model.compile(optimizer=training.create_optimizer(model, args.lr, total_steps=steps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train, epochs=args.epochs, verbose=0)
    logits = common.predict_in_order(model, cols(dev_texts), 64)
    return float((logits.argmax(-1) == dev_labels).mean())


def main(argv=None) -> dict:
    args = parse_args(argv)
    texts, labels, _, _, _ = classification.load("chnsenticorp")
    (tr_t, tr_y), (dv_t, dv_y) = dev_split(texts, labels)
    data = ((tr_t[:args.train], tr_y[:args.train]), (dv_t[:args.dev], dv_y[:args.dev]))
    folders = [Path(f) for f in args.folders]
    results = {}
    for name, folder in [*((str(f), f) for f in folders), ("scratch", None)]:
        start = time.time()
        accs = [score(folder, (folder or folders[0]) / "vocab.txt", data, args, s) for s in args.seeds]
        record = json.loads((folder / "training.json").read_text()) if folder else {}
        cpu = (record.get("last") or {}).get("cpu_seconds", 0.0)
        results[name] = {"dev_accuracy": float(np.mean(accs)), "per_seed": accs, "pretrain_steps": record.get("steps", 0),
                         "pretrain_cpu_hours": cpu / 3600, "finetune_seconds": round(time.time() - start)}
        print(name, json.dumps(results[name]), flush=True)
    base = results["scratch"]["dev_accuracy"]
    for name, r in results.items():
        if r["pretrain_cpu_hours"]:
            r["gain_per_cpu_hour"] = (r["dev_accuracy"] - base) / r["pretrain_cpu_hours"]
    Path(args.out).write_text(json.dumps({"results": results, "settings": vars(args)}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
