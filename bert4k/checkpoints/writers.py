"""Write `{name: array}` as safetensors or a TF checkpoint, atomically (temporary name, then rename)."""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np


def save_safetensors(tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict | None = None) -> str:
    from safetensors.numpy import save_file

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata=metadata or {"format": "pt"})
    os.replace(tmp, path)
    return path


def save_tf_checkpoint(tensors: dict[str, np.ndarray], prefix: str | os.PathLike) -> str:
    """A TF checkpoint whose variable names are exactly the dict keys (readable by `tf.train.load_checkpoint`)."""
    import tensorflow as tf

    prefix = os.fspath(prefix)
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".ckpt-tmp-", dir=folder)
    names = sorted(tensors)
    tmp_prefix = os.path.join(tmp_dir, os.path.basename(prefix))
    tf.raw_ops.SaveV2(prefix=tmp_prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    for name in os.listdir(tmp_dir):
        os.replace(os.path.join(tmp_dir, name), os.path.join(folder, name))
    shutil.rmtree(tmp_dir, ignore_errors=True)
    return prefix
