"""GPT-2-small greedy decoding speed: bert4k (static KV cache, one compiled decoding loop) on each Keras backend
beside Hugging Face `generate` (PyTorch CPU, its cache on) and the no-cache path (the prefix rerun every step).

Same random weights everywhere: HF's model is saved once as safetensors and loaded by bert4k. Each implementation
runs in its own long-lived worker process pinned to the same CPUs (`taskset`) with the same thread count
(PyTorch's and TensorFlow's thread pools in one process slow each other down). Every worker loads and warms up
(compiles) first; then the timed runs are interleaved: round r runs every worker once, so a change of machine
load hits all implementations alike. Reported per configuration: median new tokens/s, the spread (min…max), and
the ratio to HF in the same dtype and batch computed round by round (median of the per-round ratios). Tokens are
checked equal to HF's (float32); bf16 and int8 rows report the fraction of tokens equal to the same backend's fp32
tokens. int8 (`--int8`): bert4k's `model.quantize("int8")`, compared with HF fp32 (HF's GPT-2 projections are
`Conv1D` modules, which PyTorch's dynamic quantisation does not cover). Each row also reports the worker's peak
resident memory. `--per-token` instead times the cost of one new token after a long and a short prompt
(`(t(prompt, 1 + n) - t(prompt, 1)) / n`, the prefill cancelled).

    python bench/bench_generation.py                                    # fp32 + bf16, batch 1 and 4, all backends
    python bench/bench_generation.py --backends jax --no-bf16 --threads 1
    python bench/bench_generation.py --per-token --prompts 8 512 --backends tensorflow jax
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
from worker_process import WorkerProcess, set_threads, worker_env

BACKENDS = ("tensorflow", "jax", "torch")


def prompt_ids(vocab: int, batch: int, length: int) -> np.ndarray:
    return np.random.default_rng(batch * 1000 + length).integers(1, vocab, size=(batch, length)).astype("int32")


def save_weights(args, folder: str) -> None:
    import torch
    import transformers

    config = transformers.GPT2Config(vocab_size=args.vocab, n_positions=1024, n_embd=768, n_layer=args.layers,
                                     n_head=12, bos_token_id=0, eos_token_id=0,
                                     initializer_range=0.1)  # wider than 0.02: no near-ties between top logits
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)


# === workers ===

def hf_runner(args, dtype: str, use_cache: bool):
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model = transformers.GPT2LMHeadModel.from_pretrained(args.weights).eval().to(getattr(torch, dtype))

    def run(prompt: np.ndarray, new: int) -> np.ndarray:
        ids = torch.tensor(prompt, dtype=torch.long)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, use_cache=use_cache, pad_token_id=0)
        return out[:, prompt.shape[1]:].numpy()
    return run


def bert4k_runner(args, dtype: str, variant: str, use_cache: bool):
    import keras

    set_threads(keras.backend.backend(), args.threads)
    from bert4k import build_transformer_model
    from bert4k.generation import generate

    model = build_transformer_model(args.weights, args.weights, model="gpt2", logits=True,
                                    dtype="float32" if dtype == "int8" else dtype)
    if dtype == "int8":
        model.quantize("int8")
    if use_cache:
        options = {"default": {}, "xla": {"jit_compile": True}, "no-xla": {"jit_compile": False},
                   "python-loop": {"streamer": lambda ids: None}}[variant]
        return lambda prompt, new: generate(model, prompt, new, **options)

    def run(prompt: np.ndarray, new: int) -> np.ndarray:
        ids = np.asarray(prompt, "int32")
        for _ in range(new):
            logits = keras.ops.convert_to_numpy(model(ids, training=False))
            ids = np.concatenate([ids, np.argmax(logits[:, -1], axis=-1)[:, None].astype("int32")], axis=1)
        return ids[:, prompt.shape[1]:]
    return run


def worker(args) -> None:
    """Load, warm up every (batch, prompt, new) shape, print READY, then answer `RUN i` lines with one timing."""
    impl, dtype, variant = args.worker, args.dtype, args.variant
    no_cache = impl.endswith("no-cache")
    run = (hf_runner(args, dtype, not no_cache) if impl.startswith("hf")
           else bert4k_runner(args, dtype, variant, not no_cache))
    jobs = json.loads(args.jobs)
    for batch, length, new in jobs:
        run(prompt_ids(args.vocab, batch, length), new)
    print("READY", flush=True)
    for line in sys.stdin:
        batch, length, new = jobs[int(line.split()[1])]
        prompt = prompt_ids(args.vocab, batch, length)
        start = time.perf_counter()
        tokens = run(prompt, new)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print("RESULT " + json.dumps({"seconds": seconds, "tokens": np.asarray(tokens).tolist(), "peak_rss": peak}),
              flush=True)


def start_worker(args, impl: str, backend: str, dtype: str, variant: str, jobs: list) -> WorkerProcess:
    """A worker process generating `jobs` ((batch, prompt length, new tokens) each) with one configuration."""
    command = ["taskset", "-c", args.cpus, sys.executable, os.path.abspath(__file__), "--worker", impl,
               "--dtype", dtype, "--variant", variant, "--weights", args.weights, "--threads",
               str(args.threads), "--vocab", str(args.vocab), "--layers", str(args.layers),
               "--jobs", json.dumps(jobs)]
    return WorkerProcess((impl, backend, dtype, variant), command, worker_env(backend, args.threads))


# === driver ===

def configurations(args) -> list:
    configs = []
    dtypes = ["float32"] + ([] if args.no_bf16 else ["bfloat16"])
    for dtype in dtypes:
        configs.append(("hf", "torch", dtype, "default"))
        for backend in args.backends:
            configs.append(("bert4k", backend, dtype, "default"))
            for variant in args.variants:
                configs.append(("bert4k", backend, dtype, variant))
    if args.int8:
        configs += [("bert4k", backend, "int8", "default") for backend in args.backends]
    if args.no_cache:
        configs += [("hf-no-cache", "torch", "float32", "default"), ("bert4k-no-cache", args.backends[0], "float32",
                                                                     "default")]
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--prompts", type=int, nargs="+", default=[32], help="prompt lengths")
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--cpus", help="CPU list for taskset (default: the first --threads CPUs this process may use)")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--variants", nargs="*", default=[], help="extra bert4k variants: xla, no-xla, python-loop")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--int8", action="store_true", help="also bert4k with model.quantize('int8')")
    parser.add_argument("--no-cache", action="store_true", help="also time the no-cache paths (slow)")
    parser.add_argument("--per-token", action="store_true", help="time one token after each prompt length")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    args.cpus = args.cpus or ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:args.threads])

    if args.per_token:  # (batch, prompt, new): 1 + n new tokens and 1 new token, the prefill cancels out
        jobs = [(b, p, n) for b in args.batches for p in args.prompts for n in (1, 1 + args.new)]
    else:
        jobs = [(b, p, args.new) for b in args.batches for p in args.prompts]
    configs = [c for c in configurations(args) if not (args.skip_hf and c[0].startswith("hf"))]
    args.weights = tempfile.mkdtemp(prefix="bench-gpt2-")
    save_weights(args, args.weights)
    times = {c: {j: [] for j in range(len(jobs))} for c in configs}
    tokens, peaks = {}, {}
    workers = []
    try:
        for config in configs:  # loading and compiling one at a time
            workers.append(start_worker(args, *config, jobs))
        for _ in range(args.repeats):
            for j in range(len(jobs)):
                for w in workers:
                    result = w.run(j)
                    times[w.name][j].append(result["seconds"])
                    print(json.dumps({"worker": w.name, "job": jobs[j], "seconds": round(result["seconds"], 3)}),
                          file=sys.stderr, flush=True)  # progress: one line per timed run
                    tokens[w.name, j] = result["tokens"]
                    peaks[w.name] = result["peak_rss"]
    finally:
        for w in workers:
            w.close()
        shutil.rmtree(args.weights, ignore_errors=True)
    report(args, configs, jobs, times, tokens, peaks)


def versions() -> dict:
    import importlib.metadata as md

    return {name: md.version(name) for name in ("keras", "tensorflow-cpu", "jax", "torch", "transformers")
            if _installed(name)}


def _installed(name: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def report(args, configs, jobs, times, tokens, peaks) -> None:
    base = dict(model="gpt2-small", layers=args.layers, vocab=args.vocab, threads=args.threads, cpus=args.cpus)
    if args.per_token:
        for config in configs:
            for b in args.batches:
                row = {**base, "impl": config[0], "backend": config[1], "dtype": config[2], "batch": b}
                for p in args.prompts:
                    one, many = (jobs.index((b, p, n)) for n in (1, 1 + args.new))
                    per = [(m - o) / args.new for m, o in zip(times[config][many], times[config][one])]
                    row[f"ms_per_token_after_{p}"] = round(1000 * statistics.median(per), 2)
                if len(args.prompts) == 2:
                    short, long = sorted(args.prompts)
                    row[f"ratio_{long}_vs_{short}"] = round(row[f"ms_per_token_after_{long}"]
                                                            / row[f"ms_per_token_after_{short}"], 3)
                print(json.dumps({**row, "variant": config[3], "peak_rss_mb": round(peaks[config] / 2**20)}), flush=True)
    else:
        for j, (b, p, n) in enumerate(jobs):
            for config in configs:
                impl, backend, dtype, variant = config
                seconds = times[config][j]
                rate = [b * n / s for s in seconds]
                row = {**base, "impl": impl, "backend": backend, "dtype": dtype, "variant": variant, "batch": b,
                       "prompt": p, "new_tokens": n, "new_tok_s": round(statistics.median(rate), 2),
                       "spread": [round(min(rate), 2), round(max(rate), 2)], "peak_rss_mb": round(peaks[config] / 2**20)}
                reference = ("hf-no-cache" if impl.endswith("no-cache") else "hf", "torch",
                             "float32" if dtype == "int8" else dtype, "default")
                if reference in times and reference != config:
                    ratios = [r / s for r, s in zip(times[reference][j], seconds)]
                    row["vs_hf" if dtype != "int8" else "vs_hf_float32"] = round(statistics.median(ratios), 3)
                    row["vs_hf_spread"] = [round(min(ratios), 3), round(max(ratios), 3)]
                hf32 = ("hf", "torch", "float32", "default")
                if dtype == "float32" and (hf32, j) in tokens:
                    row["same_tokens_as_hf"] = tokens[config, j] == tokens[hf32, j]
                fp32 = (impl, backend, "float32", variant)
                if dtype != "float32" and (fp32, j) in tokens:
                    row["tokens_equal_to_fp32"] = round(float(np.mean(np.asarray(tokens[config, j])
                                                                      == np.asarray(tokens[fp32, j]))), 3)
                print(json.dumps(row), flush=True)
    print(json.dumps({"summary": f"greedy; {args.repeats} interleaved rounds after a warm-up; each implementation in "
                                 f"its own process on CPUs {args.cpus} with {args.threads} threads; machine cores "
                                 f"{os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", **versions()}))


if __name__ == "__main__":
    main()
