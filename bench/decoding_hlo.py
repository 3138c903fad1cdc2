"""What the compiled decoding loop does with the KV cache and the tied head: the ops of XLA's optimised while-loop
body (and the computations it calls) whose result is as large as one layer's cache, or as the `[vocab, hidden]`
embedding table, on TensorFlow-XLA or JAX.

A step should only write its new rows in place (`dynamic-update-slice`) and read the cache where it lies; any
`copy`, `transpose` or other fusion producing a cache-sized buffer in the body is a per-step copy that grows with the
prompt. The head reads the table where it lies: a table-sized op in the body is a copy of the whole table per token.
Each backend runs in its own process (`KERAS_BACKEND`, `XLA_FLAGS=--xla_dump_to`):

    python bench/decoding_hlo.py                      # tensorflow and jax
    python bench/decoding_hlo.py --backends jax --prompt 200
    python bench/decoding_hlo.py --vocab 5000 --batch 4 --lm-head tied
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile

SHAPE = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\w+)\[([\d,]*)\][^ ]* ([\w\-]+)\(")
COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
CALLED = re.compile(r"(?:body|condition|calls|to_apply|branch_computations)=\{?%?([\w.\-, %]+)\}?")
HARMLESS = {"parameter", "get-tuple-element", "tuple", "bitcast", "dynamic-update-slice", "while", "constant"}


def computations(text: str) -> dict[str, list[str]]:
    """HLO text → {computation name: its instruction lines}."""
    out, name = {}, None
    for line in text.splitlines():
        match = COMPUTATION.match(line)
        if match and not line.startswith(" "):
            name = match.group(1)
            out[name] = []
        elif name is not None and line.strip() and line.strip() != "}":
            out[name].append(line)
    return out


def reachable(comps: dict, roots: list[str]) -> list[str]:
    seen, todo = [], list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in comps:
            continue
        seen.append(name)
        for line in comps[name]:
            for group in CALLED.findall(line):
                todo += [g.strip().lstrip("%") for g in group.split(",")]
    return seen


def root_op(comps: dict, line: str) -> str | None:
    """The opcode of a fusion's root instruction (a fusion rooted in `dynamic-update-slice` writes in place)."""
    called = re.search(r"calls=%?([\w.\-]+)", line)
    for inner in comps.get(called.group(1), []) if called else []:
        match = SHAPE.match(inner)
        if inner.strip().startswith("ROOT") and match:
            return match.group(4)
    return None


def decoding_modules(folder: str) -> list[str]:
    """The optimised modules in `folder` compiled by `generate` (not those the worker compiled before it, e.g. JAX's
    weight initialisers, listed in `built.txt`)."""
    built, skip = os.path.join(folder, "built.txt"), set()
    if os.path.exists(built):
        with open(built) as f:
            skip = set(f.read().split())
    return [p for p in glob.glob(os.path.join(folder, "*after_optimizations.txt")) if os.path.basename(p) not in skip]


def large_ops(folder: str, elements: int, length: int) -> list[dict]:
    """Ops with ≥ `elements` elements and a dimension `length` (the cache's, or the vocabulary) inside any while body
    of the decoding modules in `folder`, except the in-place writes and the plumbing (parameters, tuples,
    bitcasts)."""
    found = []
    for path in decoding_modules(folder):
        with open(path) as f:
            comps = computations(f.read())
        bodies = [b for lines in comps.values() for line in lines if " while(" in line
                  for b in re.findall(r"body=%?([\w.\-]+)", line)]
        for comp in reachable(comps, bodies):
            for line in comps[comp]:
                match = SHAPE.match(line)
                if not match:
                    continue
                _, dtype, dims, opcode = match.groups()
                sizes = [int(d) for d in dims.split(",") if d]
                if math.prod(sizes) < elements or length not in sizes or opcode in HARMLESS:
                    continue
                root = root_op(comps, line) if opcode == "fusion" else None
                if root not in HARMLESS:
                    found.append({"module": os.path.basename(path)[:40], "computation": comp, "op": opcode,
                                  "root": root, "shape": f"{dtype}[{dims}]"})
    return found


def worker(args) -> None:
    import numpy as np

    from bert4k import build_transformer_model
    from bert4k.config import TransformerConfig
    from bert4k.generation import generate

    cfg = TransformerConfig(vocab_size=args.vocab, hidden_size=args.heads * args.size, num_hidden_layers=2,
                            num_attention_heads=args.heads, intermediate_size=64, max_position_embeddings=1024, type_vocab_size=0,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, lm_head=args.lm_head)
    model = build_transformer_model(cfg, model="gpt2", application="lm", logits=True)
    prompt = np.random.default_rng(0).integers(1, args.vocab, size=(args.batch, args.prompt)).astype("int32")
    with open(os.path.join(args.folder, "built.txt"), "w") as f:
        f.write("\n".join(os.path.basename(p) for p in decoding_modules(args.folder)))
    generate(model, prompt, args.new, method=args.method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"], choices=["tensorflow", "jax"])
    parser.add_argument("--prompt", type=int, default=480)
    parser.add_argument("--new", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--method", default="greedy")
    parser.add_argument("--vocab", type=int, default=97)
    parser.add_argument("--lm-head", default="mlm", choices=["mlm", "tied"],
                        help="mlm: Dense → LayerNorm → table → bias (BERT); tied: the table only (GPT-2)")
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--size", type=int, default=16, help="head size")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    elements = args.batch * args.heads * args.prompt * args.size  # one layer's K (or V) cache holds more
    new = math.ceil(args.new / 32) * 32  # the adapter's cache_block; JAX rounds the prompt up too
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as folder:
            env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
                   "XLA_FLAGS": f"--xla_dump_to={folder} --xla_dump_hlo_as_text"}
            command = [sys.executable, os.path.abspath(__file__), "--worker", "--folder", folder, "--prompt", str(args.prompt), "--new",
                       str(args.new), "--batch", str(args.batch), "--method", args.method, "--vocab", str(args.vocab),
                       "--lm-head", args.lm_head, "--heads", str(args.heads), "--size", str(args.size)]
            subprocess.run(command, env=env, check=True)
            modules = len(decoding_modules(folder))
            length = (math.ceil(args.prompt / 32) * 32 if backend == "jax" else args.prompt) + new
            found = large_ops(folder, elements, length)
            head = large_ops(folder, args.vocab * args.heads * args.size, args.vocab)
            print(json.dumps({"backend": backend, "modules": modules, "cache_length": length,
                              "cache_sized_ops_in_loop": found, "table_sized_ops_in_loop": head}))


if __name__ == "__main__":
    main()
