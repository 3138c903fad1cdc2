"""BERT encoder inference and training-step throughput: bert4k beside Hugging Face (PyTorch) and keras-hub.

Same config, batch and sequence length, in one run; bert4k and HF share the same random weights (checked equal).
Prints one JSON line per (implementation, mode, dtype) with seq/s, the ratio to HF, and model FLOPs utilisation
against this machine's measured matmul ceiling for that dtype.

    python bench/bench_encoder.py                       # BERT-base, b8×128, fp32 and bf16, inference
    python bench/bench_encoder.py --train --layers 4    # training steps too (smaller model)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
import torch
import transformers

from bert4k import build_transformer_model


def timed(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_ceiling(dtype: str, size: int = 2048) -> float:
    """Measured TF matmul GFLOP/s for `dtype` (the ceiling MFU is reported against)."""
    a = tf.random.normal((size, size), dtype=tf.float32)
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x))
    seconds = timed(lambda: matmul(a).numpy(), repeats=5)
    return 2 * size**3 / seconds / 1e9


def model_flops(args, train: bool) -> float:
    """Matmul FLOPs of one batch through the encoder (×3 for forward + backward)."""
    h, i, n = args.hidden, 4 * args.hidden, args.seq
    per_token = args.layers * (8 * h * h + 4 * h * i + 4 * n * h)
    return per_token * args.batch * n * (3 if train else 1)


def hf_model(args):
    config = transformers.BertConfig(vocab_size=21128, hidden_size=args.hidden, num_hidden_layers=args.layers,
                                     num_attention_heads=args.hidden // 64, intermediate_size=4 * args.hidden)
    torch.manual_seed(0)
    return transformers.BertModel(config, add_pooling_layer=False).eval()


def bench_hf(model, ids, dtype: str, train: bool, repeats: int) -> float:
    model = model.to(torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    x = torch.tensor(ids, dtype=torch.long)
    if not train:
        def step():
            with torch.inference_mode():
                model(input_ids=x)
        return timed(step, repeats)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def train_step():
        optimizer.zero_grad()
        model(input_ids=x).last_hidden_state.float().square().mean().backward()
        optimizer.step()
    seconds = timed(train_step, repeats)
    model.eval()
    return seconds


def keras_step(backbone_call, variables, ids_inputs, train: bool, jit: bool):
    """A compiled forward (or forward+backward+AdamW) step over a Keras backbone."""
    if not train:
        fn = tf.function(lambda: backbone_call(ids_inputs), jit_compile=jit)
        return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn())
    optimizer = keras.optimizers.AdamW(1e-5)
    optimizer.build(variables)

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.cast(backbone_call(ids_inputs), tf.float32)))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss
    return lambda: step().numpy()


def bench_bert4k(folder, ids, dtype: str, train: bool, jit: bool, repeats: int) -> float:
    model = build_transformer_model(f"{folder}/config.json", folder, dtype=None if dtype == "float32" else dtype)
    inputs = [tf.constant(ids), tf.zeros_like(ids)]
    call = lambda x: model(x, training=train)
    return timed(keras_step(call, model.trainable_variables, inputs, train, jit), repeats)


def bench_keras_hub(args, ids, dtype: str, train: bool, jit: bool) -> float | None:
    try:
        import keras_hub
    except ImportError:
        return None
    backbone = keras_hub.models.BertBackbone(vocabulary_size=21128, num_layers=args.layers,
                                             num_heads=args.hidden // 64, hidden_dim=args.hidden,
                                             intermediate_dim=4 * args.hidden, max_sequence_length=512,
                                             dtype=None if dtype == "float32" else dtype)
    inputs = {"token_ids": tf.constant(ids), "segment_ids": tf.zeros_like(ids),
              "padding_mask": tf.ones_like(ids)}
    call = lambda x: backbone(x, training=train)["sequence_output"]
    return timed(keras_step(call, backbone.trainable_variables, inputs, train, jit), args.repeats)


def main(args) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    ids = rng.integers(200, 21128, size=(args.batch, args.seq)).astype("int32")
    reference = hf_model(args)
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder, safe_serialization=True)
        check = build_transformer_model(f"{folder}/config.json", folder)
        with torch.no_grad():
            expected = reference(input_ids=torch.tensor(ids[:1], dtype=torch.long)).last_hidden_state.numpy()
        diff = float(np.abs(check.predict([ids[:1], np.zeros_like(ids[:1])], verbose=0) - expected).max())
        modes = [False, True] if args.train else [False]
        for dtype in args.dtypes:
            ceiling = matmul_ceiling(dtype)
            for train in modes:
                flops = model_flops(args, train)
                results = {"hf_torch": bench_hf(reference, ids, dtype, train, args.repeats)}
                for jit in args.jit:
                    results[f"bert4k{'_xla' if jit else ''}"] = bench_bert4k(folder, ids, dtype, train, jit, args.repeats)
                    hub = bench_keras_hub(args, ids, dtype, train, jit)
                    if hub is not None:
                        results[f"keras_hub{'_xla' if jit else ''}"] = hub
                for name, seconds in results.items():
                    print(json.dumps({
                        "bench": "encoder", "impl": name, "mode": "train" if train else "inference", "dtype": dtype,
                        "batch": args.batch, "seq": args.seq, "layers": args.layers, "hidden": args.hidden,
                        "seq_per_s": round(args.batch / seconds, 2),
                        "ratio_vs_hf": round(results["hf_torch"] / seconds, 3),
                        "mfu": round(flops / seconds / 1e9 / ceiling, 3),
                        "matmul_ceiling_gflops": round(ceiling, 1), "parity_max_abs_diff": diff,
                    }), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--jit", nargs="+", type=int, default=[0, 1], help="XLA off (0) and/or on (1)")
    parser.add_argument("--train", action="store_true", help="also time a training step")
    main(parser.parse_args())
