"""BERT encoder speed: bert4k on each Keras backend beside Hugging Face (PyTorch) and keras-hub, in fp32, bf16 and
int8: inference b8×128 and b1×512, and one AdamW training step b8×128 (fp32).

Each implementation runs in its own long-lived worker process pinned to the same CPUs (`taskset`) with the same
thread count (PyTorch's and TensorFlow's thread pools in one process slow each other down). Every worker builds its
models and warms up (compiles) every task first; then the timed runs are interleaved, round r runs every worker
once per task, so a change of machine load hits all implementations alike. Inputs are arguments of the compiled
functions, never captured constants. Reported per (implementation, dtype, task): median seconds, sequences/s, the
spread (min…max), the ratio to HF in the same dtype computed round by round (median of the per-round ratios), the
output error against the same implementation in fp32 (and bert4k fp32 against HF fp32: the weights are shared), and
the worker's peak resident memory (all its dtypes and tasks together).

- HF: `transformers.BertModel` under `torch.inference_mode`; bf16: the model cast to bfloat16; int8:
  `torch.ao.quantization.quantize_dynamic` of its `Linear` layers. Training: `torch.optim.AdamW`.
- bert4k and keras-hub: `predict_on_batch` / `train_on_batch` (AdamW, mean squared output: the same loss as HF's
  step) of a Keras model, compiled the backend's way (`jit_compile="auto"`; TensorFlow bf16 / int8: no XLA, whose
  CPU bf16 matmuls are slow); bf16: the `bfloat16` dtype policy; int8: `model.quantize("int8")`.
- keras-hub is a bench-only dependency, never one of bert4k's: install it in its own environment so the project's
  pins stay as they are, and pass that interpreter with `--hub-python`:

      python -m venv /work/venv-hub
      /work/venv-hub/bin/pip install keras==3.15.1 tensorflow-cpu==2.21 keras-hub
      python bench/bench_encoder.py --threads 1 --cpus 1 --hub-python /work/venv-hub/bin/python

  Its `BertBackbone` gets random weights of the same configuration (speed only; its error column compares its own
  bf16 / int8 with its own fp32).

    python bench/bench_encoder.py                                   # BERT-base, everything available
    python bench/bench_encoder.py --impls hf bert4k-jax --dtypes float32 --tasks infer-8x128
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from worker_process import WorkerProcess, set_threads, worker_env

IMPLS = ("hf", "bert4k-tensorflow", "bert4k-jax", "bert4k-torch", "keras-hub")
TASKS = {"infer-8x128": ("infer", 8, 128), "infer-1x512": ("infer", 1, 512), "train-8x128": ("train", 8, 128)}
VOCAB = 21128


def token_ids(batch: int, seq: int) -> np.ndarray:
    return np.random.default_rng(batch * 1000 + seq).integers(200, VOCAB, size=(batch, seq)).astype("int32")


def save_weights(args, folder: str) -> None:
    import torch
    import transformers

    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=args.hidden, num_hidden_layers=args.layers,
                                     num_attention_heads=args.hidden // 64, intermediate_size=4 * args.hidden)
    torch.manual_seed(0)
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)


# === workers: runner(dtype, task) -> (fn(ids) -> output or None, output) ===

def hf_runners(args):
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    base = transformers.BertModel.from_pretrained(args.weights, add_pooling_layer=False).eval()

    def make(dtype: str, task: str):
        mode = TASKS[task][0]
        if mode == "train":
            model = transformers.BertModel.from_pretrained(args.weights, add_pooling_layer=False).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

            def train(ids):
                optimizer.zero_grad()
                loss = model(input_ids=torch.from_numpy(ids).long()).last_hidden_state.float().square().mean()
                loss.backward()
                optimizer.step()
            return train
        if dtype == "int8":
            model = torch.ao.quantization.quantize_dynamic(base, {torch.nn.Linear}, dtype=torch.qint8)
        else:
            model = base if dtype == "float32" else transformers.BertModel.from_pretrained(
                args.weights, add_pooling_layer=False).eval().to(torch.bfloat16)

        def infer(ids):
            with torch.inference_mode():
                return model(input_ids=torch.from_numpy(ids).long()).last_hidden_state.float().numpy()
        return infer
    return make


def keras_runners(args, build):
    """Runners for a Keras model from `build(dtype) -> (model, inputs(ids) -> model inputs)`."""
    import keras

    backend = keras.backend.backend()
    set_threads(backend, args.threads)
    jit = lambda dtype: False if backend == "tensorflow" and dtype != "float32" else "auto"

    def make(dtype: str, task: str):
        mode = TASKS[task][0]
        model, inputs = build("float32" if dtype == "int8" else dtype)
        if dtype == "int8":
            model.quantize("int8")
        if mode == "train":
            model.compile(optimizer=keras.optimizers.AdamW(1e-5), loss="mse", jit_compile=jit(dtype))

            def train(ids):
                model.train_on_batch(inputs(ids), np.zeros((*ids.shape, args.hidden), "float32"))
            return train
        model.compile(jit_compile=jit(dtype))
        return lambda ids: np.asarray(model.predict_on_batch(inputs(ids)), "float32")
    return make


def bert4k_runners(args):
    from bert4k import build_transformer_model

    def build(dtype):
        model = build_transformer_model(f"{args.weights}/config.json", args.weights, model="bert",
                                        dtype=None if dtype == "float32" else dtype)
        return model, lambda ids: [ids, np.zeros_like(ids)]
    return keras_runners(args, build)


def hub_runners(args):
    import keras
    import keras_hub

    def build(dtype):
        keras.utils.set_random_seed(0)  # the same random weights for each dtype
        backbone = keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=args.layers,
                                                 num_heads=args.hidden // 64, hidden_dim=args.hidden,
                                                 intermediate_dim=4 * args.hidden, max_sequence_length=512,
                                                 dtype=None if dtype == "float32" else dtype)
        model = keras.Model(backbone.input, backbone.output["sequence_output"])
        return model, lambda ids: {"token_ids": ids, "segment_ids": np.zeros_like(ids),
                                   "padding_mask": np.ones_like(ids)}
    return keras_runners(args, build)


def worker(args) -> None:
    """Build and warm up every (dtype, task), print READY, then answer `RUN i` lines with one timing each."""
    impl = args.worker
    make = hf_runners(args) if impl == "hf" else hub_runners(args) if impl == "keras-hub" else bert4k_runners(args)
    pairs = json.loads(args.pairs)
    runs = []
    for dtype, task in pairs:
        fn = make(dtype, task)
        ids = token_ids(*TASKS[task][1:])
        out = fn(ids)
        fn(ids)
        if out is not None:
            np.save(os.path.join(args.outputs, f"{impl}-{dtype}-{task}.npy"), out)
        runs.append((fn, ids))
    print("READY", flush=True)
    for line in sys.stdin:
        fn, ids = runs[int(line.split()[1])]
        start = time.perf_counter()
        fn(ids)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print("RESULT " + json.dumps({"seconds": seconds, "peak_rss": peak}), flush=True)


def start_worker(args, impl: str, pairs: list) -> WorkerProcess:
    """A worker process for `impl` timing `pairs` ((dtype, task) per job); `.pairs` keeps them for the driver."""
    backend = impl.split("-", 1)[1] if impl.startswith("bert4k-") else "tensorflow"
    python = args.hub_python if impl == "keras-hub" else sys.executable
    command = ["taskset", "-c", args.cpus, python, os.path.abspath(__file__), "--worker", impl,
               "--weights", args.weights, "--outputs", args.outputs, "--threads", str(args.threads),
               "--layers", str(args.layers), "--hidden", str(args.hidden), "--pairs", json.dumps(pairs)]
    worker = WorkerProcess(impl, command, worker_env(backend, args.threads))
    worker.pairs = pairs
    return worker


# === driver ===

def pairs_for(impl: str, args) -> list:
    return [(dtype, task) for task in args.tasks for dtype in args.dtypes
            if not (TASKS[task][0] == "train" and dtype != "float32")]


def error(outputs: str, name: str, reference: str) -> dict | None:
    a, b = (os.path.join(outputs, f"{n}.npy") for n in (name, reference))
    if name == reference or not (os.path.exists(a) and os.path.exists(b)):
        return None
    x, y = np.load(a), np.load(b)
    return {"vs": reference, "max_abs": float(np.abs(x - y).max()),
            "rel": float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-12))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "int8"],
                        choices=["float32", "bfloat16", "int8"])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--cpus", help="CPU list for taskset (default: the first --threads CPUs this process may use)")
    parser.add_argument("--hub-python", default="/work/venv-hub/bin/python",
                        help="interpreter with keras-hub installed (keras-hub is skipped when it is missing)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--outputs", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    args.cpus = args.cpus or ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:args.threads])
    impls = [i for i in args.impls if i != "keras-hub" or os.path.exists(args.hub_python)]
    args.weights = tempfile.mkdtemp(prefix="bench-bert-")
    args.outputs = tempfile.mkdtemp(prefix="bench-bert-out-")
    save_weights(args, args.weights)
    times, peaks, workers = {}, {}, []
    try:
        for impl in impls:  # building and compiling one at a time
            workers.append(start_worker(args, impl, pairs_for(impl, args)))
        for _ in range(args.repeats):
            for task in args.tasks:
                for w in workers:
                    for index, (dtype, t) in enumerate(w.pairs):
                        if t != task:
                            continue
                        result = w.run(index)
                        times.setdefault((w.name, dtype, task), []).append(result["seconds"])
                        peaks[w.name] = result["peak_rss"]
                        print(json.dumps({"impl": w.name, "dtype": dtype, "task": task,
                                          "seconds": round(result["seconds"], 3)}), file=sys.stderr, flush=True)
        report(args, times, peaks)
    finally:
        for w in workers:
            w.close()
        shutil.rmtree(args.weights, ignore_errors=True)
        shutil.rmtree(args.outputs, ignore_errors=True)


def report(args, times, peaks) -> None:
    for (impl, dtype, task), seconds in times.items():
        mode, batch, _ = TASKS[task]
        rate = [batch / s for s in seconds]
        row = {"impl": impl, "dtype": dtype, "task": task, "layers": args.layers, "hidden": args.hidden,
               "seconds": round(statistics.median(seconds), 4), "seq_per_s": round(statistics.median(rate), 2),
               "spread_seq_per_s": [round(min(rate), 2), round(max(rate), 2)],
               "peak_rss_mb": round(peaks[impl] / 2**20)}
        reference = times.get(("hf", dtype, task))
        if reference is not None and impl != "hf":
            ratios = [r / s for r, s in zip(reference, seconds)]
            row["vs_hf"] = round(statistics.median(ratios), 3)
            row["vs_hf_spread"] = [round(min(ratios), 3), round(max(ratios), 3)]
        hub = times.get(("keras-hub", dtype, task))
        if hub is not None and impl.startswith("bert4k"):
            row["vs_keras_hub"] = round(statistics.median([h / s for h, s in zip(hub, seconds)]), 3)
        if mode == "infer":
            name = f"{impl}-{dtype}-{task}"
            errors = [e for e in (error(args.outputs, name, f"{impl}-float32-{task}"),
                                  error(args.outputs, name, f"hf-float32-{task}") if impl.startswith("bert4k")
                                  and dtype == "float32" else None) if e is not None]
            if errors:
                row["output_error"] = errors
        print(json.dumps(row), flush=True)
    print(json.dumps({"summary": f"{args.repeats} interleaved rounds after a warm-up; each implementation in its own "
                                 f"process on CPUs {args.cpus} with {args.threads} threads; machine cores "
                                 f"{os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", **versions(args)}))


def versions(args) -> dict:
    import importlib.metadata as md

    found = {}
    for name in ("keras", "tensorflow-cpu", "jax", "torch", "transformers"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    if os.path.exists(args.hub_python):
        out = subprocess.run([args.hub_python, "-c", "import importlib.metadata as m; print(m.version('keras-hub'))"],
                             check=False, capture_output=True, text=True)
        if out.returncode == 0:
            found["keras-hub"] = out.stdout.strip()
    return found


if __name__ == "__main__":
    main()
