"""Load a checkpoint into a built model, and export a model's weights back to the formats it came from."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection

import numpy as np

from bert4k.checkpoints.deferred import initialize_unloaded
from bert4k.checkpoints.readers import is_tf_checkpoint, read_tensors, resolve_checkpoint
from bert4k.checkpoints.specs import CheckpointMismatch, LoadReport, export_tensors, load_specs
from bert4k.checkpoints.writers import Progress, save_safetensors, save_tf_checkpoint, write_text
from bert4k.layers.initializers import DeferredCall
from bert4k.models.families import Family, get_family


def _untied_heads(family: Family, model, tensors: dict, source: str) -> set[str]:
    """The LM heads in `tensors` that differ from the embedding the model ties them to (`tie_word_embeddings=false`
    checkpoints). A model with an LM head refuses them (dropping one would silently change the outputs); for a
    model without one they are reported as unused."""
    untied = set()
    for head, embedding in family.tied_heads:
        if head in tensors and embedding in tensors:
            a, b = np.asarray(tensors[head]), np.asarray(tensors[embedding])
            if a.shape != b.shape or not np.array_equal(a, b):
                untied.add(head)
    if untied and getattr(model, "head_activation", None) is not None:
        names = ", ".join(sorted(untied))
        raise CheckpointMismatch(
            f"{source}: the checkpoint's LM head ({names}) differs from the token embeddings (an untied head, "
            f"tie_word_embeddings=false), but a {family.name} model ties its LM head to the token embeddings; "
            "build it without an LM head to use the body, or use a tied checkpoint")
    return untied


def load_checkpoint(model, checkpoint_path: str | os.PathLike, keep_tokens=None,
                    deferred: list[DeferredCall] | None = None) -> LoadReport:
    """Assign `model`'s weights from a TF ckpt prefix, safetensors/.bin file or directory; returns the report
    (also kept as `model.load_report`).

    `deferred`: the initializer calls recorded while building `model` under `deferred_initialization()`; the
    weights the checkpoint does not hold then get their ordinary random initial values."""
    family = get_family(model.family)
    path = resolve_checkpoint(checkpoint_path)
    tensors = read_tensors(path)
    tensors = family.reference("from_tf" if is_tf_checkpoint(path) else "from_hf")(tensors)
    untied = _untied_heads(family, model, tensors, path)
    specs = family.reference("specs")(model, keep_tokens)
    report = load_specs(specs, tensors, source=path,
                        ignored=lambda name: name not in untied and family.ignored(name), head=family.is_head)
    if deferred is not None:
        loaded = set(report.loaded)
        initialize_unloaded(model, deferred, {id(spec.variable) for spec in specs if spec.key in loaded})
    model.load_report = report
    return report


def _unnamed_weights(model, specs) -> list[str]:
    """Paths of `model`'s weights that no spec names (they would be missing from the export)."""
    named = {id(spec.variable) for spec in specs}
    return sorted({w.path for w in model.weights if id(w) not in named})


def export_checkpoint(model, path: str | os.PathLike, format: str = "safetensors", vocab: str | os.PathLike | None = None,
                      *, skip: Collection[str] = (), progress: Progress | None = None) -> str:
    """Write every weight of `model` under the names the original checkpoints use, so the reference implementation
    loads them; raise `ValueError` listing any weight the family's format has no name for.

    `skip`: canonical tensor names not to write (parts a converted checkpoint did not have, such as its pooler);
    `progress(bytes_done, bytes_total)` is called as the tensors are written.

    `format="safetensors"` (Hugging Face): `path` is a folder or a `.safetensors` file; its folder also gets the
    `config.json` that `transformers.AutoModel.from_pretrained(folder)` needs, and a copy of `vocab` when given.
    `format="tf"`: `path` is the checkpoint prefix (`.../bert_model.ckpt`). Returns the file or prefix written."""
    family = get_family(model.family)
    specs = family.reference("specs")(model, None)
    unnamed = _unnamed_weights(model, specs)
    if unnamed:
        raise ValueError(f"export_checkpoint: the {family.name} checkpoint format has no name for "
                         f"{len(unnamed)} weight(s) of this model: {', '.join(unnamed)}; save it with "
                         "model.save('model.keras') instead")
    tensors = {name: value for name, value in export_tensors(specs).items() if name not in set(skip)}
    path = os.fspath(path)
    if format == "safetensors":
        if not path.endswith(".safetensors"):
            path = os.path.join(path, "model.safetensors")
        folder = os.path.dirname(os.path.abspath(path))
        hf_config = family.reference("hf_config")
        written = save_safetensors(tensors, path, progress=progress)
        if hf_config is not None:
            config = hf_config(model.config, model)
            write_text(os.path.join(folder, "config.json"), json.dumps(config, indent=2, sort_keys=True) + "\n")
        if vocab is not None:
            vocab = os.fspath(vocab)
            target = os.path.join(folder, os.path.basename(vocab))
            if os.path.abspath(vocab) != os.path.abspath(target):
                tmp = f"{target}.tmp-{os.getpid()}"
                shutil.copyfile(vocab, tmp)
                os.replace(tmp, target)
        return written
    if format == "tf":
        to_tf = family.reference("to_tf")
        if to_tf is None:
            raise ValueError(f"model family {model.family!r} has no TF checkpoint export")
        return save_tf_checkpoint(to_tf(tensors), path, progress=progress)
    raise ValueError(f"unknown export format {format!r}; expected 'safetensors' or 'tf'")
