"""Linear vs softmax attention: encoder forward time and peak memory against sequence length, in one run.

Each (attention, length) point runs in a fresh process, so its peak resident memory is its own; the memory column is
the peak RSS growth over the process's RSS just before the first forward pass (weights and TF runtime excluded).
Softmax points whose score tensors alone would pass `--softmax-limit-gb` are skipped (and say so). Prints one JSON
line per point, then one line naming the shortest length at which linear attention is faster / lighter.

    python bench/bench_linear_attention.py
    python bench/bench_linear_attention.py --lengths 1024 2048 4096 --hidden 256 --heads 4
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def softmax_bytes(args, length: int) -> int:
    """Scores, masked scores and probabilities, float32, per layer in flight: 3 × batch × heads × n²."""
    return 3 * args.batch * args.heads * length * length * 4


def measure(args, attention: str, length: int) -> dict:
    """Median forward time and peak RSS growth of one point (runs inside the child process)."""
    import numpy as np
    import tensorflow as tf

    from bert4k import build_transformer_model

    config = dict(vocab_size=1000, hidden_size=args.hidden, num_hidden_layers=args.layers,
                  num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                  max_position_embeddings=max(args.lengths), type_vocab_size=0)
    model = build_transformer_model(config, attention=attention)
    ids = np.random.default_rng(0).integers(1, 1000, size=(args.batch, length)).astype("int32")
    forward = tf.function(lambda x: model(x, training=False))
    before = rss_mb()
    forward(ids).numpy()  # trace + warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        forward(ids).numpy()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"attention": attention, "length": length, "batch": args.batch, "hidden": args.hidden, "heads": args.heads,
            "layers": args.layers, "seconds": round(statistics.median(times), 4),
            "tokens_per_s": round(args.batch * length / statistics.median(times), 1),
            "peak_mem_mb": round(peak - before, 1)}


def crossing(points: list[dict], key: str) -> int | None:
    """Shortest length from which linear is below softmax on `key` at every measured length (skipped softmax = above)."""
    by = {(p["attention"], p["length"]): p for p in points}
    lengths = sorted({p["length"] for p in points})
    for i, length in enumerate(lengths):
        if all(by[("linear", n)][key] < by[("softmax", n)].get(key, float("inf")) for n in lengths[i:]):
            return length
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--softmax-limit-gb", type=float, default=4.0)
    parser.add_argument("--point", nargs=2, metavar=("ATTENTION", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        print(json.dumps(measure(args, args.point[0], int(args.point[1]))))
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    points = []
    for length in args.lengths:
        for attention in ("softmax", "linear"):
            need = softmax_bytes(args, length) / 2**30
            if attention == "softmax" and need > args.softmax_limit_gb:
                point = {"attention": attention, "length": length, "skipped": f"score tensors need ~{need:.2f} GB "
                         f"> --softmax-limit-gb {args.softmax_limit_gb}"}
            else:
                child = [sys.executable, __file__, *sys.argv[1:], "--point", attention, str(length)]
                result = subprocess.run(child, capture_output=True, text=True, check=True, env=env)
                point = json.loads(result.stdout.strip().splitlines()[-1])
            points.append(point)
            print(json.dumps(point), flush=True)
    print(json.dumps({"linear_faster_from_length": crossing(points, "seconds"),
                      "linear_lighter_from_length": crossing(points, "peak_mem_mb")}))


if __name__ == "__main__":
    main()
