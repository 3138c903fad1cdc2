"""Write `{name: array}` as safetensors or a TF checkpoint, atomically (temporary name, then rename)."""
from __future__ import annotations

import os
import shutil
import tempfile

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


def save_safetensors(tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict | None = None) -> str:
    from safetensors.numpy import save_file

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata=metadata or {"format": "pt"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_tf_checkpoint(tensors: dict[str, np.ndarray], prefix: str | os.PathLike) -> str:
    """A TF checkpoint whose variable names are exactly the dict keys (readable by `tf.train.load_checkpoint`).

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
        tf.raw_ops.SaveV2(prefix=fresh, tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[tf.constant(tensors[n]) for n in names])
        written = sorted(os.listdir(tmp_dir))
        if written != sorted(["fresh" + TF_INDEX, "fresh" + TF_DATA]):
            raise RuntimeError(f"{prefix}: unexpected TF checkpoint files {written}")
        if os.path.exists(prefix + TF_INDEX):
            os.replace(prefix + TF_INDEX, os.path.join(tmp_dir, "old" + TF_INDEX))
        os.replace(fresh + TF_DATA, prefix + TF_DATA)
        os.replace(fresh + TF_INDEX, prefix + TF_INDEX)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return prefix
