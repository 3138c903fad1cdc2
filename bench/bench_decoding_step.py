"""The cost of one greedy decoding step of bert4k alone, per backend: a randomly initialised GPT-2-width model
(hidden 768, 12 heads, vocabulary 50257) with either head, the tied GPT-2 head (`--head tied`) or the BERT-style
MLM head (`--head mlm`: Dense → LayerNorm → tied table → bias, the head of UniLM / BERT-as-LM decoders).

Per token: `(t(1 + n new tokens) - t(1 new token)) / n`, the prefill cancelled, the best of `--repeats` rounds. Each
backend runs in its own process with the same threads (`worker_process.worker_env`). No Hugging Face reference: the
MLM head has no GPT-2 counterpart; `bench_generation.py` compares with HF `generate`.

    python bench/bench_decoding_step.py --head mlm --threads 1
    python bench/bench_decoding_step.py --head tied --layers 12 --backends jax torch
    python bench/bench_decoding_step.py --head tied --backends torch --keras-calls   # without direct_calls
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from worker_process import set_threads, worker_env

BACKENDS = ("tensorflow", "jax", "torch")


def worker(args) -> None:
    import keras
    import numpy as np

    set_threads(keras.backend.backend(), args.threads)
    if args.keras_calls:  # PyTorch: every layer through `Layer.__call__` (see bert4k.generation.direct_calls)
        import contextlib

        import bert4k.generation.compile

        bert4k.generation.compile.direct_calls = lambda model: contextlib.nullcontext()
    from bert4k import build_transformer_model
    from bert4k.config import TransformerConfig
    from bert4k.generation import generate

    cfg = TransformerConfig(vocab_size=args.vocab, hidden_size=768, num_hidden_layers=args.layers,
                            num_attention_heads=12, intermediate_size=3072, max_position_embeddings=1024,
                            type_vocab_size=0, lm_head=args.head, final_norm=args.head == "tied",
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    keras.utils.set_random_seed(0)
    model = build_transformer_model(cfg, model="gpt2", application="lm", logits=True)
    prompt = np.random.default_rng(0).integers(1, args.vocab, size=(args.batch, args.prompt)).astype("int32")
    times = {1: [], 1 + args.new: []}
    for n in times:  # warm-up: compile both loops
        generate(model, prompt, n)
    for _ in range(args.repeats):
        for n, seconds in times.items():
            start = time.perf_counter()
            generate(model, prompt, n)
            seconds.append(time.perf_counter() - start)
    per_token = (min(times[1 + args.new]) - min(times[1])) / args.new
    print(json.dumps({"backend": keras.backend.backend(), "head": args.head, "layers": args.layers,
                      "vocab": args.vocab, "batch": args.batch, "prompt": args.prompt, "new": args.new,
                      "threads": args.threads, "keras_calls": args.keras_calls, "ms_per_token": round(1000 * per_token, 2)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--head", default="mlm", choices=["mlm", "tied"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keras-calls", action="store_true",
                        help="PyTorch: keep Keras' Layer.__call__ in the decoding steps (no direct_calls)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    for backend in args.backends:
        options = {k: v for k, v in vars(args).items() if k not in ("backends", "worker", "keras_calls")}
        command = [sys.executable, os.path.abspath(__file__), "--worker", *(f"--{k}={v}" for k, v in options.items()),
                   *(["--keras-calls"] if args.keras_calls else [])]
        subprocess.run(command, env=worker_env(backend, args.threads), check=True)
    print(json.dumps({"summary": f"load average {os.getloadavg()[0]:.1f}, machine cores {os.cpu_count()}"}))


if __name__ == "__main__":
    main()
