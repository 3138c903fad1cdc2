"""Read any supported checkpoint into `{name: numpy array}`: TF ckpt prefix, safetensors, torch `.bin`, sharded
indexes, or a directory holding one of them."""
from __future__ import annotations

import json
import os

import numpy as np

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "bert_model.ckpt.index", "model.ckpt.index", "albert_model.ckpt.index")
OPTIMIZER_SLOTS = ("adam_m", "adam_v", "global_step", "Adafactor", "_slot_", "beta1_power", "beta2_power")


def resolve_checkpoint(path: str | os.PathLike) -> str:
    """The concrete file (or TF prefix) behind `path`; directories are searched for the usual file names."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in WEIGHT_FILES:
            candidate = os.path.join(path, name)
            if os.path.exists(candidate):
                return candidate[: -len(".index")] if candidate.endswith(".ckpt.index") else candidate
        indexes = sorted(f for f in os.listdir(path) if f.endswith(".index") and ".ckpt" in f)
        if indexes:
            return os.path.join(path, indexes[-1][: -len(".index")])
        raise FileNotFoundError(f"{path}: no checkpoint found (looked for {', '.join(WEIGHT_FILES)}, *.ckpt*.index)")
    if os.path.exists(path) or os.path.exists(path + ".index"):
        return path
    raise FileNotFoundError(f"checkpoint not found: {path} (nor {path}.index)")


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return dict(load_file(path))


def read_torch_bin(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path}: reading a PyTorch .bin needs torch (pip install torch==2.13.0)") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def read_tf_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    names = [n for n in reader.get_variable_to_shape_map() if not any(s in n for s in OPTIMIZER_SLOTS)]
    return {n: reader.get_tensor(n) for n in names}


def read_sharded(index_path: str) -> dict[str, np.ndarray]:
    with open(index_path, encoding="utf-8") as f:
        weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict):
        raise TypeError(f"{index_path}: expected a 'weight_map' object")
    folder = os.path.dirname(index_path)
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        tensors.update(read_tensors(os.path.join(folder, shard)))
    return tensors


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint at `path` by their stored names (optimizer slots dropped)."""
    path = resolve_checkpoint(path)
    if path.endswith(".index.json"):
        return read_sharded(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if path.endswith((".bin", ".pt", ".pth")):
        return read_torch_bin(path)
    return read_tf_checkpoint(path)


def is_tf_checkpoint(path: str | os.PathLike) -> bool:
    resolved = resolve_checkpoint(path)
    return not resolved.endswith((".safetensors", ".bin", ".pt", ".pth", ".json"))
