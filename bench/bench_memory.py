"""Peak memory of building BERT-base and loading it from safetensors, as a multiple of the weights' size.

Writes random BERT-base weights under Hugging Face names to a temporary folder, then, in a fresh process, imports
bert4k, builds the model and loads the file, and prints one JSON line: the weights' bytes, resident memory after
the imports, peak resident memory, and `(peak - after imports) / weights` (the target is ≤ 1.5: no double copies).

    python bench/bench_memory.py                 # BERT-base (12 × 768), float32
    python bench/bench_memory.py --layers 4      # smaller
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
    args = p.parse_args()
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
