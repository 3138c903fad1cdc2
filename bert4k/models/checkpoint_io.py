"""Load a checkpoint into a built model, and export a model's weights back to the formats it came from."""
from __future__ import annotations

import os

from bert4k.checkpoints.readers import is_tf_checkpoint, read_tensors, resolve_checkpoint
from bert4k.checkpoints.specs import LoadReport, export_tensors, load_specs
from bert4k.checkpoints.writers import save_safetensors, save_tf_checkpoint
from bert4k.models.families import get_family


def load_checkpoint(model, checkpoint_path: str | os.PathLike, keep_tokens=None) -> LoadReport:
    """Assign `model`'s weights from a TF ckpt prefix, safetensors/.bin file or directory; returns the report."""
    family = get_family(model.family)
    path = resolve_checkpoint(checkpoint_path)
    tensors = read_tensors(path)
    tensors = family.from_tf(tensors) if is_tf_checkpoint(path) else family.from_hf(tensors)
    return load_specs(family.specs(model, keep_tokens), tensors, source=path, ignore=family.ignore)


def export_checkpoint(model, path: str | os.PathLike, format: str = "safetensors") -> str:
    """Write `model`'s weights as HF safetensors (`format="safetensors"`) or a TF checkpoint (`format="tf"`)
    under the names the original checkpoints use, so the reference implementation loads them."""
    family = get_family(model.family)
    tensors = export_tensors(family.specs(model, None))
    path = os.fspath(path)
    if format == "safetensors":
        return save_safetensors(tensors, path)
    if format == "tf":
        if family.to_tf is None:
            raise ValueError(f"model family {model.family!r} has no TF checkpoint export")
        return save_tf_checkpoint(family.to_tf(tensors), path)
    raise ValueError(f"unknown export format {format!r}; expected 'safetensors' or 'tf'")
