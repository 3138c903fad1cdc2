"""Read any supported checkpoint into `{name: numpy array}`: TF ckpt prefix, safetensors, torch `.bin`, sharded
indexes, or a directory holding one of them."""
from __future__ import annotations

import json
import os

import ml_dtypes
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


class CorruptCheckpoint(ValueError):
    """A checkpoint file that exists but cannot be read: empty, truncated or corrupt (the reader's error chained)."""


def _corrupt(path: str, error: BaseException | None = None) -> CorruptCheckpoint:
    cause = f" ({type(error).__name__}: {error})" if error is not None else ""
    return CorruptCheckpoint(f"{path}: checkpoint file is truncated or corrupt{cause}")


def _check_not_empty(*paths: str) -> None:
    for path in paths:
        if os.path.exists(path) and os.path.getsize(path) == 0:
            raise CorruptCheckpoint(f"{path}: checkpoint file is empty (0 bytes): truncated or corrupt")


def _tf_files(prefix: str) -> list[str]:
    folder, base = os.path.split(prefix)
    names = [f for f in os.listdir(folder or ".") if f.startswith(base + ".data-")] if os.path.isdir(folder or ".") else []
    return [prefix + ".index", *(os.path.join(folder, n) for n in sorted(names))]


def has_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds weights that `resolve_checkpoint` finds."""
    try:
        resolve_checkpoint(folder)
    except FileNotFoundError:
        return False
    return True


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class LazyTensor:
    """One tensor of a safetensors file, read from disk when converted with `np.asarray`: a checkpoint is never held
    in memory twice (each tensor is read, assigned and dropped in turn; no memory map keeps the file resident)."""

    def __init__(self, path: str, name: str, dtype: str, shape: tuple[int, ...], start: int, end: int):
        self.path, self.name, self.dtype, self.shape = path, name, dtype, shape
        self.ndim = len(shape)
        self.start, self.end = start, end

    def __array__(self, dtype=None, copy=None):
        numpy_dtype = np.dtype(self.dtype) if self.dtype != "bfloat16" else np.dtype(ml_dtypes.bfloat16)
        count = int(np.prod(self.shape, dtype=np.int64))
        with open(self.path, "rb") as f:
            f.seek(self.start)
            value = np.fromfile(f, dtype=numpy_dtype, count=count).reshape(self.shape)
        return value if dtype is None else value.astype(dtype)


def read_safetensors(path: str) -> dict[str, LazyTensor]:
    """The tensors of a safetensors file by name (header read and checked now, data read on first use)."""
    _check_not_empty(path)
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError(f"header length {header_len} does not fit in the {size}-byte file")
            header = json.loads(f.read(header_len))
        data_start, tensors = 8 + header_len, {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = (data_start + int(o) for o in info["data_offsets"])
            shape = tuple(int(d) for d in info["shape"])
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
            if end > size or end - start != itemsize * int(np.prod(shape, dtype=np.int64)):
                raise ValueError(f"tensor {name!r} {shape} {info['dtype']} needs bytes {start}..{end}, "
                                 f"the file has {size}")
            tensors[name] = LazyTensor(path, name, dtype, shape, start, end)
        return tensors
    except (ValueError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _corrupt(path, e) from e


def read_torch_bin(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path}: reading a PyTorch .bin needs torch (pip install torch==2.13.0)") from None
    _check_not_empty(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # EOFError, RuntimeError (zip), UnpicklingError, ...
        raise _corrupt(path, e) from e
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def read_tf_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    import tensorflow as tf

    files = _tf_files(prefix)
    _check_not_empty(*files)
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = [n for n in reader.get_variable_to_shape_map() if not any(s in n for s in OPTIMIZER_SLOTS)]
        return {n: reader.get_tensor(n) for n in names}
    except Exception as e:  # DataLossError, IndexError("Read less bytes..."), OutOfRangeError, ...
        raise _corrupt(" / ".join(files), e) from e


def read_sharded(index_path: str) -> dict[str, np.ndarray]:
    _check_not_empty(index_path)
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise _corrupt(index_path, e) from e
    if not isinstance(weight_map, dict):
        raise TypeError(f"{index_path}: expected a 'weight_map' object")
    folder = os.path.dirname(index_path)
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        tensors.update(read_tensors(os.path.join(folder, shard)))
    return tensors


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint at `path` by their stored names (optimizer slots dropped).

    An unreadable file raises `CorruptCheckpoint` naming it (the reader's own error chained as the cause)."""
    path = resolve_checkpoint(path)
    if path.endswith(".index.json"):
        return read_sharded(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if path.endswith((".bin", ".pt", ".pth")):
        return read_torch_bin(path)
    return read_tf_checkpoint(path)


def tensor_names(path: str | os.PathLike) -> set[str]:
    """The stored tensor names of a checkpoint, read from its header/index where the format allows."""
    path = resolve_checkpoint(path)
    if path.endswith((".bin", ".pt", ".pth")):
        return set(read_tensors(path))
    _check_not_empty(path if path.endswith((".json", ".safetensors")) else path + ".index")
    try:
        if path.endswith(".index.json"):
            with open(path, encoding="utf-8") as f:
                return set(json.load(f).get("weight_map", {}))
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, "np") as f:
                return set(f.keys())
        import tensorflow as tf

        return {name for name, _ in tf.train.list_variables(path)}
    except Exception as e:  # each format raises its own error types
        raise _corrupt(path, e) from e


def is_tf_checkpoint(path: str | os.PathLike) -> bool:
    resolved = resolve_checkpoint(path)
    return not resolved.endswith((".safetensors", ".bin", ".pt", ".pth", ".json"))
