"""Write `{name: array}` as safetensors or a TF checkpoint, atomically (temporary name, then rename)."""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable

import numpy as np

TF_INDEX = ".index"
TF_DATA = ".data-00000-of-00001"


def write_text(path: str | os.PathLike, text: str) -> str:
    """Write `text` to `path` through a temporary file in the same folder, then rename."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


Progress = Callable[[int, int], None]  # (bytes done, bytes in all)

_SAFETENSORS_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                       "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def save_safetensors(tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict | None = None,
                     progress: Progress | None = None) -> str:
    """Write `tensors` in the safetensors format (header, then each tensor's little-endian bytes), one tensor at a
    time, calling `progress(bytes_done, bytes_total)` after each. As the reference writer does, tensors are laid out
    by decreasing item size, then name, so every tensor starts aligned to its item size."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    arrays = {name: np.asarray(tensors[name]) for name in tensors}
    arrays = {name: arrays[name] for name in sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, n))}
    header, offset = {"__metadata__": metadata or {"format": "pt"}}, 0
    for name, value in arrays.items():
        code = _SAFETENSORS_DTYPES.get(value.dtype.name)
        if code is None:
            raise TypeError(f"save_safetensors: tensor {name!r} has dtype {value.dtype}, which safetensors cannot "
                            f"hold (expected one of {sorted(_SAFETENSORS_DTYPES)})")
        header[name] = {"dtype": code, "shape": list(value.shape), "data_offsets": [offset, offset + value.nbytes]}
        offset += value.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            done = 0
            for value in arrays.values():
                if value.dtype.byteorder == ">":
                    value = value.astype(value.dtype.newbyteorder("<"))
                f.write(np.ascontiguousarray(value).tobytes())
                done += value.nbytes
                if progress is not None:
                    progress(done, offset)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_tf_checkpoint(tensors: dict[str, np.ndarray], prefix: str | os.PathLike, progress: Progress | None = None
                       ) -> str:
    """A TF checkpoint whose variable names are exactly the dict keys (readable by `tf.train.load_checkpoint`).
    `progress(bytes_done, bytes_total)` follows the tensors handed to TensorFlow; the last call comes when the pair
    is in place (TensorFlow writes the file in one call).

    The pair appears atomically for readers: both files are written under a fresh prefix in a temporary folder
    beside the target; then an old `.index` is moved away first (a checkpoint "exists" through its `.index`), the
    new `.data` moved in, and the new `.index` last. An interruption leaves the old pair, or no `.index`, never a
    new `.index` with an old `.data`. The temporary folder is removed whatever happens."""
    import tensorflow as tf

    prefix = os.fspath(prefix)
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".ckpt-tmp-", dir=folder)
    try:
        names = sorted(tensors)
        fresh = os.path.join(tmp_dir, "fresh")
        total = sum(np.asarray(tensors[n]).nbytes for n in names)
        constants, done = [], 0
        for n in names:
            constants.append(tf.constant(tensors[n]))
            done += constants[-1].dtype.size * int(np.prod(constants[-1].shape))
            if progress is not None and done < total:
                progress(done, total)
        tf.raw_ops.SaveV2(prefix=fresh, tensor_names=names, shape_and_slices=[""] * len(names), tensors=constants)
        written = sorted(os.listdir(tmp_dir))
        if written != sorted(["fresh" + TF_INDEX, "fresh" + TF_DATA]):
            raise RuntimeError(f"{prefix}: unexpected TF checkpoint files {written}")
        if os.path.exists(prefix + TF_INDEX):
            os.replace(prefix + TF_INDEX, os.path.join(tmp_dir, "old" + TF_INDEX))
        os.replace(fresh + TF_DATA, prefix + TF_DATA)
        os.replace(fresh + TF_INDEX, prefix + TF_INDEX)
        if progress is not None:
            progress(total, total)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return prefix
