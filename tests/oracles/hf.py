"""Helpers that build tiny random Hugging Face (PyTorch) reference models and save them like real checkpoints."""
from __future__ import annotations

import os

import keras
import numpy as np
import torch


def randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Give every parameter (biases and norms included) random values, so a wrong mapping cannot pass."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=gen) * scale
            if name.endswith(("LayerNorm.weight", "layer_norm.weight", "ln_1.weight", "ln_2.weight", "ln_f.weight")):
                param.copy_(1.0 + noise)
            else:
                param.copy_(noise)
    module.eval()


def save_both(model: torch.nn.Module, folder: str) -> tuple[str, str]:
    """Save as `model.safetensors` (via save_pretrained) and as a plain `pytorch_model.bin` in a sibling folder."""
    st_dir = os.path.join(folder, "st")
    bin_dir = os.path.join(folder, "bin")
    model.save_pretrained(st_dir, safe_serialization=True)
    os.makedirs(bin_dir, exist_ok=True)
    model.config.to_json_file(os.path.join(bin_dir, "config.json"))
    torch.save(model.state_dict(), os.path.join(bin_dir, "pytorch_model.bin"))
    return st_dir, bin_dir


def random_ids(batch: int, length: int, vocab: int, seed: int = 0, pad_id: int = 0, low: int = 2) -> np.ndarray:
    """Random token ids with right padding of different lengths per row (row 0 unpadded)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(low, vocab, size=(batch, length)).astype("int32")
    for row in range(1, batch):
        ids[row, length - row * 2:] = pad_id
    return ids


def to_numpy(x) -> np.ndarray:
    """A backend tensor (a torch one may require grad), a numpy array or a list → numpy."""
    return np.asarray(keras.ops.convert_to_numpy(x)) if keras.ops.is_tensor(x) else np.asarray(x)


def max_diff(a, b) -> float:
    return float(np.max(np.abs(to_numpy(a).astype(np.float64) - to_numpy(b).astype(np.float64))))
