"""Peak memory of building BERT-base and loading it from safetensors, as a multiple of the weights' size; and of
one training step on a long sequence with and without `recompute=True` (gradient checkpointing).

Load: writes random BERT-base weights under Hugging Face names to a temporary folder, then, in a fresh process,
imports bert4k, builds the model and loads the file, and prints one JSON line: the weights' bytes, resident memory
after the imports, peak resident memory, and `(peak - after imports) / weights` (the target is ≤ 1.5: no double
copies). Training step (`--train`): in a fresh process per setting, builds a BERT, then runs one `train_on_batch`
of `--batch` sequences of `--seq` tokens, and prints the peak resident memory the step added, for `recompute`
off and on (on the backend `KERAS_BACKEND` names; on JAX, XLA's temporary bytes of the compiled gradient instead).

    python bench/bench_memory.py                 # BERT-base (12 × 768), float32
    python bench/bench_memory.py --layers 4      # smaller
    python bench/bench_memory.py --train --layers 4 --hidden 256 --seq 1024 --batch 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD = r"""
import json, os, resource, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
import keras, bert4k.models.builder, bert4k.checkpoints.readers  # noqa: E401
after_imports = rss()
from bert4k import build_transformer_model
model = build_transformer_model(sys.argv[1], sys.argv[2], model="bert")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"after_imports": after_imports, "peak": peak, "after_load": rss()}))
"""

TRAIN_CHILD = r"""
import json, os, resource, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras, numpy as np
from bert4k import build_transformer_model
layers, hidden, seq, batch, recompute = (int(a) for a in sys.argv[1:6])
config = dict(vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
              intermediate_size=4 * hidden, max_position_embeddings=seq, type_vocab_size=2)
model = build_transformer_model(config, with_mlm=True, recompute=bool(recompute))
model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
ids = np.random.default_rng(0).integers(1, 1000, (batch, seq)).astype("int32")
x = [ids, np.zeros_like(ids)]
if keras.backend.backend() == "jax":  # XLA's own count of the compiled gradient's temporaries (compiling costs more RSS)
    import jax
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    def loss(trainable):
        y, _ = model.stateless_call(trainable, frozen, x, training=True)
        return keras.losses.sparse_categorical_crossentropy(ids, y).mean()
    compiled = jax.jit(jax.grad(loss)).lower(trainable).compile()
    print(json.dumps({"before": 0, "peak": compiled.memory_analysis().temp_size_in_bytes}))
    sys.exit()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
model.train_on_batch(x, ids)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "peak": peak}))
"""


def train_step_memory(layers: int, hidden: int, seq: int, batch: int) -> dict:
    """Peak memory one training step adds, with `recompute` off and on (one fresh process each)."""
    added = {}
    for recompute in (0, 1):
        out = subprocess.run([sys.executable, "-c", TRAIN_CHILD, str(layers), str(hidden), str(seq), str(batch),
                              str(recompute)], capture_output=True, text=True, check=True)
        child = json.loads(out.stdout.strip().splitlines()[-1])
        added[recompute] = (child["peak"] - child["before"]) / 2**20
    return {"bench": "train-step", "backend": os.environ.get("KERAS_BACKEND", "tensorflow"), "layers": layers,
            "hidden": hidden, "seq": seq, "batch": batch, "step_peak_mb": round(added[0]),
            "step_peak_recompute_mb": round(added[1]), "saving": round(1 - added[1] / added[0], 2)}


def write_bert(folder: str, layers: int, hidden: int, vocab: int = 21128) -> tuple[int, int]:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    shapes = {"embeddings.word_embeddings.weight": (vocab, hidden), "embeddings.position_embeddings.weight": (512, hidden),
              "embeddings.token_type_embeddings.weight": (2, hidden), "embeddings.LayerNorm.weight": (hidden,),
              "embeddings.LayerNorm.bias": (hidden,)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + part + ".weight"], shapes[p + part + ".bias"] = (hidden, hidden), (hidden,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (4 * hidden, hidden), (4 * hidden,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (hidden, 4 * hidden), (hidden,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + norm + ".weight"], shapes[p + norm + ".bias"] = (hidden,), (hidden,)
    tensors = {name: (rng.standard_normal(shape, dtype=np.float32) * 0.02) for name, shape in shapes.items()}
    save_file(tensors, os.path.join(folder, "model.safetensors"))
    config = dict(model_type="bert", vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=hidden // 64, intermediate_size=4 * hidden, max_position_embeddings=512,
                  type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return sum(t.nbytes for t in tensors.values()), max(t.nbytes for t in tensors.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--train", action="store_true", help="measure a training step instead of the load")
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args()
    if args.train:
        print(json.dumps(train_step_memory(args.layers, args.hidden, args.seq, args.batch)))
        return
    with tempfile.TemporaryDirectory() as folder:
        weight_bytes, largest = write_bert(folder, args.layers, args.hidden)
        out = subprocess.run([sys.executable, "-c", CHILD, os.path.join(folder, "config.json"),
                              os.path.join(folder, "model.safetensors")], capture_output=True, text=True, check=True)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({"bench": "build+load", "layers": args.layers, "hidden": args.hidden,
                      "weights_mb": round(weight_bytes / 2**20, 1), "largest_tensor_mb": round(largest / 2**20, 1),
                      "after_imports_mb": round(child["after_imports"] / 2**20),
                      "peak_mb": round(child["peak"] / 2**20),
                      "peak_over_weights": round((child["peak"] - child["after_imports"]) / weight_bytes, 2)}))


if __name__ == "__main__":
    main()
