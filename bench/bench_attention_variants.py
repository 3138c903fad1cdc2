"""Attention variants side by side on the same tiny model and data: softmax, larger key_size, talking heads, the
three Synthesizers and linear attention.

For each variant and objective (MLM, LM) a model (hidden 64, 2 layers, 2 heads, 64 tokens) is trained from the same
initial seed for the same number of steps on the same batches of ../shared/data/zh-plain-corpus; reported: held-out
loss (mean cross-entropy over the masked / next tokens of the corpus' last sequences; also every `--eval-every` steps
in the JSON), training steps/s and inference
sequences/s. Then each (variant, length) memory point runs in a fresh process: one encoder forward pass of
batch 1 at 512 / 2048 / 8192 tokens, peak RSS growth over the RSS just before that pass (the Synthesizers are built with max_length = the length: their random matrix alone is heads × n² parameters).
Prints one JSON line per point and a Markdown table at the end.

    nice -n 19 taskset -c 1 python bench/bench_attention_variants.py
    python bench/bench_attention_variants.py --steps 20 --lengths 512   # quick look
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERT4K_DATA", ROOT.parent / "shared" / "data"))

VARIANTS = {"softmax": {}, "key_size=64": {"key_size": 64}, "talking_heads": {"attention": "talking_heads"},
            "synthesizer_dense": {"attention": "synthesizer_dense"},
            "synthesizer_random": {"attention": "synthesizer_random"},
            "synthesizer_factorized": {"attention": "synthesizer_factorized"}, "linear": {"attention": "linear"}}


def config(args, vocab_size: int, max_length: int) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
                num_attention_heads=args.heads, intermediate_size=4 * args.hidden, max_position_embeddings=max_length,
                type_vocab_size=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def corpus(args):
    """(train, held-out) `[n, seq_len]` compact ids from the first `--docs` documents, and the vocab size."""
    import numpy as np

    from bert4k.tokenizers import Tokenizer

    tokenizer = Tokenizer(str(DATA / "bert-chinese-vocab" / "vocab.txt"), do_lower_case=True)
    with open(DATA / "zh-plain-corpus" / "zh_corpus.txt", encoding="utf-8") as f:
        docs = [line.strip() for _, line in zip(range(args.docs), f) if line.strip()]
    stream = np.concatenate([tokenizer.encode(d)[0][1:-1] for d in docs])
    ids, counts = np.unique(stream, return_counts=True)
    kept = ids[np.argsort(-counts)][:args.vocab - 3]  # 0 pad, 1 unk, 2 mask
    table = np.ones(tokenizer.vocab_size, np.int32)
    table[kept] = np.arange(3, len(kept) + 3)
    stream = table[stream]
    rows = stream[:len(stream) // args.seq_len * args.seq_len].reshape(-1, args.seq_len)
    return rows[:-args.held_out], rows[-args.held_out:], len(kept) + 3


def mlm_batch(rows, rng, mask_id: int = 2):
    """15% of positions → [MASK]; labels everywhere, weight 1 on the masked positions only."""
    chosen = rng.random(rows.shape) < 0.15
    return rows * ~chosen + mask_id * chosen, rows, chosen.astype("float32")


def lm_batch(rows):
    return rows[:, :-1], rows[:, 1:], None


def train_one(args, variant: str, objective: str, train, held, vocab_size: int) -> dict:
    import keras
    import numpy as np

    from bert4k import build_transformer_model

    keras.utils.set_random_seed(args.seed)
    model = build_transformer_model(config(args, vocab_size, args.seq_len), application=objective, logits=True,
                                    **VARIANTS[variant])
    model.compile(optimizer=keras.optimizers.AdamW(args.lr, weight_decay=0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(args.seed)
    make = (lambda r: mlm_batch(r, rng)) if objective == "mlm" else lm_batch
    held_x, held_y, held_w = mlm_batch(held, np.random.default_rng(12345)) if objective == "mlm" else lm_batch(held)
    held_w = np.ones(held_y.shape, "float32") if held_w is None else held_w
    times, curve = [], {}
    for step in range(1, args.steps + 1):
        x, y, w = make(train[rng.integers(0, len(train), args.batch)])
        start = time.perf_counter()
        model.train_on_batch(x, y, sample_weight=w)
        times.append(time.perf_counter() - start)
        if step % args.eval_every == 0 or step == args.steps:
            curve[step] = round(held_out_loss(model, held_x, held_y, held_w), 4)
    x = held_x
    model.predict(x[:args.batch], verbose=0)
    start = time.perf_counter()
    for _ in range(args.repeats):
        model.predict(x[:args.batch], verbose=0)
    infer = (time.perf_counter() - start) / args.repeats
    return {"variant": variant, "objective": objective, "held_out_loss": curve[args.steps], "held_out_curve": curve,
            "train_steps_per_s": round(1 / statistics.median(times[5:]), 2),
            "infer_seqs_per_s": round(args.batch / infer, 1)}


def held_out_loss(model, x, y, weights) -> float:
    """Mean token cross-entropy over the weighted (MLM: masked) positions."""
    import keras
    import numpy as np

    logits = keras.ops.convert_to_numpy(model([x], training=False)).astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, y[..., None], -1)[..., 0]
    return float((nll * weights).sum() / weights.sum())


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> None:
    """Set the kernel's peak-RSS mark (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def memory_point(args, variant: str, length: int) -> dict:
    """Peak RSS growth of one encoder forward pass over the RSS just before it (runs in a child process; the
    function is traced and warmed up on 8 tokens first, so the growth is the pass's own memory)."""
    import numpy as np
    import tensorflow as tf

    from bert4k import build_transformer_model

    model = build_transformer_model(config(args, 1000, length), **VARIANTS[variant])
    ids = np.random.default_rng(0).integers(3, 1000, size=(1, length)).astype("int32")
    forward = tf.function(lambda x: model([x], training=False),
                          input_signature=[tf.TensorSpec((1, None), tf.int32)])
    forward(ids[:, :8]).numpy()  # trace once for every length, warm up at 8 tokens
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed pages (e.g. of weight initialisation) back first
    before = rss_mb()
    reset_peak_rss()
    start = time.perf_counter()
    forward(ids).numpy()
    seconds = time.perf_counter() - start
    return {"variant": variant, "length": length, "forward_s": round(seconds, 3),
            "peak_mem_mb": round(peak_rss_mb() - before, 1), "params": int(model.count_params())}


def table(quality: list[dict], memory: list[dict], lengths) -> str:
    by_q = {(p["variant"], p["objective"]): p for p in quality}
    by_m = {(p["variant"], p["length"]): p for p in memory}
    head = ["variant", "MLM held-out loss", "LM held-out loss", "train steps/s (MLM)", "infer seq/s (MLM)",
            *[f"peak MB @ {n}" for n in lengths]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for v in VARIANTS:
        mlm, lm = by_q.get((v, "mlm"), {}), by_q.get((v, "lm"), {})
        mem = [str(by_m.get((v, n), {}).get("peak_mem_mb", by_m.get((v, n), {}).get("error", "—"))) for n in lengths]
        lines.append("| " + " | ".join([v, str(mlm.get("held_out_loss")), str(lm.get("held_out_loss")),
                                        str(mlm.get("train_steps_per_s")), str(mlm.get("infer_seqs_per_s")), *mem])
                     + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=100, help="held-out loss every this many steps (the curve)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--docs", type=int, default=3000, help="corpus documents read")
    p.add_argument("--vocab", type=int, default=3000, help="most frequent tokens kept (the rest → [UNK])")
    p.add_argument("--held-out", type=int, default=64, help="held-out sequences (the corpus' tail)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lengths", type=int, nargs="*", default=[512, 2048, 8192])
    p.add_argument("--objectives", nargs="+", default=["mlm", "lm"], choices=["mlm", "lm"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-quality", action="store_true", help="memory points only")
    p.add_argument("--skip-memory", action="store_true", help="quality and speed only")
    p.add_argument("--json", help="also write all points to this JSON file")
    p.add_argument("--point", nargs=2, metavar=("VARIANT", "LENGTH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.point:
        print(json.dumps(memory_point(args, args.point[0], int(args.point[1]))))
        return
    quality = []
    train, held, vocab_size = corpus(args) if not args.skip_quality else (None, None, None)
    for variant in [] if args.skip_quality else args.variants:
        for objective in args.objectives:
            quality.append(train_one(args, variant, objective, train, held, vocab_size))
            print(json.dumps(quality[-1]), flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(q for q in (str(ROOT), os.environ.get("PYTHONPATH")) if q)}
    memory = []
    for length in [] if args.skip_memory else args.lengths:
        for variant in args.variants:
            child = [sys.executable, __file__, *sys.argv[1:], "--point", variant, str(length)]
            result = subprocess.run(child, check=False, capture_output=True, text=True, env=env)
            if result.returncode:
                point = {"variant": variant, "length": length, "error": f"exit {result.returncode}"}
            else:
                point = json.loads(result.stdout.strip().splitlines()[-1])
            memory.append(point)
            print(json.dumps(point), flush=True)
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"settings": vars(args), "quality": quality, "memory": memory}, f, indent=2)
        os.replace(tmp, args.json)
    print(table(quality, memory, args.lengths))


if __name__ == "__main__":
    main()
