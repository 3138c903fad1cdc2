"""GPT-2-small greedy decoding throughput: bert4k (static KV cache, one compiled step) beside Hugging Face
`generate` (PyTorch CPU, its cache on) and the no-cache path (the whole prefix rerun every step, as bert4keras does).

Same random weights everywhere: HF's model is saved once as safetensors and loaded by bert4k. Each implementation
runs in its own process (TensorFlow's and PyTorch's thread pools in one process slow each other down), with the
same number of threads. bert4k's greedy tokens are checked equal to HF's. Prints one JSON line per configuration
with new tokens/s (median of `--repeats` runs after a warm-up) and the ratios to HF (same dtype, same batch) and to
the no-cache path, then a summary line.

    python bench/bench_generation.py                              # vocab 50257, batch 1 and 4, fp32 + bf16
    python bench/bench_generation.py --vocab 21128 --batches 1    # UER gpt2-chinese-* vocabulary size
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

# (impl, dtype, variant). bert4k variants: "default" (fused while_loop; XLA for float32, not for bfloat16),
# "no-xla" / "xla" (fused loop, XLA forced off / on), "python-loop" (per-step Python loop over the compiled step, the
# path a streamer takes). "no-cache" reruns the whole prefix every step.
CONFIGS = [("hf", "float32", None), ("bert4k", "float32", "default"), ("bert4k", "float32", "no-xla"),
           ("bert4k", "float32", "python-loop"), ("hf", "bfloat16", None), ("bert4k", "bfloat16", "default"),
           ("bert4k", "bfloat16", "xla"), ("bert4k-no-cache", "float32", None), ("hf-no-cache", "float32", None)]


def prompts(args, batch: int) -> np.ndarray:
    return np.random.default_rng(batch).integers(1, args.vocab, size=(batch, args.prompt)).astype("int32")


def save_weights(args, folder: str) -> None:
    import torch
    import transformers

    config = transformers.GPT2Config(vocab_size=args.vocab, n_positions=1024, n_embd=768, n_layer=args.layers,
                                     n_head=12, bos_token_id=0, eos_token_id=0,
                                     initializer_range=0.1)  # wider than 0.02: no near-ties between top logits
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)


def hf_runner(args, dtype: str, use_cache: bool):
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    model = transformers.GPT2LMHeadModel.from_pretrained(args.weights).eval().to(getattr(torch, dtype))

    def run(prompt: np.ndarray, new: int) -> np.ndarray:
        ids = torch.tensor(prompt, dtype=torch.long)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, use_cache=use_cache, pad_token_id=0)
        return out[:, prompt.shape[1]:].numpy()
    return run


def bert4k_runner(args, dtype: str, variant: str | None, use_cache: bool):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from bert4k import build_transformer_model
    from bert4k.generation import generate

    model = build_transformer_model(args.weights, args.weights, model="gpt2", logits=True, dtype=dtype)
    if use_cache:
        options = {"default": {}, "xla": {"jit_compile": True}, "no-xla": {"jit_compile": False},
                   "python-loop": {"streamer": lambda ids: None}}[variant]
        return lambda prompt, new: generate(model, prompt, new, **options)
    forward = tf.function(lambda x: model(x, training=False)[:, -1],
                          input_signature=[tf.TensorSpec([None, None], tf.int32)])

    def run(prompt: np.ndarray, new: int) -> np.ndarray:
        ids = np.asarray(prompt, "int32")
        for _ in range(new):
            token = np.argmax(forward(ids).numpy(), axis=-1)
            ids = np.concatenate([ids, token[:, None].astype("int32")], axis=1)
        return ids[:, prompt.shape[1]:]
    return run


def worker(args) -> None:
    """Time one configuration over every batch size; print one JSON object."""
    impl, dtype, variant = args.worker, args.dtype, None if args.variant == "none" else args.variant
    no_cache = impl.endswith("no-cache")
    if impl.startswith("hf"):
        run = hf_runner(args, dtype, use_cache=not no_cache)
    else:
        run = bert4k_runner(args, dtype, variant, use_cache=not no_cache)
    results = {}
    for batch in args.batches:
        prompt = prompts(args, batch)
        run(prompt, 4 if no_cache else args.new)  # warm-up: compiles the step for this batch / cache size
        times, tokens = [], None
        for _ in range(1 if no_cache else args.repeats):
            start = time.perf_counter()
            tokens = run(prompt, args.new)
            times.append(time.perf_counter() - start)
        results[batch] = {"seconds": statistics.median(times), "tokens": hashlib.sha1(tokens.tobytes()).hexdigest(),
                          "load": os.getloadavg()[0]}
    print("RESULT " + json.dumps(results))


def run_worker(args, impl: str, dtype: str, variant) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--dtype", dtype,
               "--variant", str(variant).lower(), "--weights", args.weights, "--threads", str(args.threads),
               "--vocab", str(args.vocab), "--layers", str(args.layers), "--prompt", str(args.prompt),
               "--new", str(args.new), "--repeats", str(args.repeats), "--batches", *map(str, args.batches)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"worker {impl}/{dtype} failed:\n{out.stderr[-3000:]}")
    return {int(k): v for k, v in json.loads(lines[-1][len("RESULT "):]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--only", nargs="+", help="run only these impls (hf, bert4k, bert4k-no-cache, hf-no-cache)")
    parser.add_argument("--variants", nargs="+", help="bert4k variants to run (default, no-xla, xla, python-loop)")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    args.weights = tempfile.mkdtemp(prefix="bench-gpt2-")
    save_weights(args, args.weights)
    base = dict(model="gpt2-small", layers=args.layers, vocab=args.vocab, prompt=args.prompt, new_tokens=args.new,
                threads=args.threads)
    configs = [c for c in CONFIGS if (not args.only or c[0] in args.only)
               and not (args.no_bf16 and c[1] == "bfloat16")
               and not (c[0] == "bert4k" and args.variants and c[2] not in args.variants)]
    results = {}
    try:
        for impl, dtype, variant in configs:
            results[(impl, dtype, variant)] = run_worker(args, impl, dtype, variant)
    finally:
        shutil.rmtree(args.weights, ignore_errors=True)

    def tps(key, batch):
        return batch * args.new / results[key][batch]["seconds"] if key in results else None

    for batch in args.batches:
        hf_tokens = results.get(("hf", "float32", None), {}).get(batch, {}).get("tokens")
        for (impl, dtype, variant), per_batch in results.items():
            value = tps((impl, dtype, variant), batch)
            row = {**base, "impl": impl, "dtype": dtype, "batch": batch, "new_tok_s": round(value, 2),
                   "ms_per_step": round(1000 * per_batch[batch]["seconds"] / args.new, 1),
                   "load_average": round(per_batch[batch]["load"], 1)}
            if variant is not None:
                row["variant"] = variant
            hf_same = tps(("hf-no-cache" if impl.endswith("no-cache") else "hf", dtype, None), batch)
            if hf_same:
                row["vs_hf"] = round(value / hf_same, 3)
            no_cache = tps(("bert4k-no-cache", "float32", None), batch)
            if no_cache and not impl.endswith("no-cache"):
                row["vs_bert4k_no_cache"] = round(value / no_cache, 2)
            if dtype == "float32" and hf_tokens:
                row["same_tokens_as_hf"] = per_batch[batch]["tokens"] == hf_tokens
            print(json.dumps(row), flush=True)
    print(json.dumps({"summary": f"greedy, prompt {args.prompt} + {args.new} new tokens; new tokens/s = median of "
                                 f"{args.repeats} runs (no-cache: 1) after a warm-up; each implementation in its own "
                                 f"process with {args.threads} threads; cores {os.cpu_count()}; shared machine: "
                                 "see load_average"}))


if __name__ == "__main__":
    main()
