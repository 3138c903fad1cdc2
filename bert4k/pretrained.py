"""Known public checkpoints (`pretrained/registry.json`) and `from_pretrained`: model + tokenizer from a local copy.

Nothing is downloaded. A registry name is looked up in a folder of checkpoints (`root=`, else `$BERT4K_CHECKPOINTS`,
else the repository's `pretrained/`), as `root/<name>` or `root/<last part of the name>`; a folder path is used as
is. When the folder belongs to a registry entry, its files are checked against it and any missing file is named
with the address to obtain it from.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
from pathlib import Path
from typing import Any

from bert4k.config import CONFIG_FILES

REPO = Path(__file__).resolve().parents[1]
REGISTRY_PATH = REPO / "pretrained" / "registry.json"
VOCAB_FILES = ("vocab.txt", "spiece.model", "sentencepiece.model")
# Modules whose import registers the Keras-serialisable classes a saved bert4k model refers to.
_SERIALIZABLES = ("bert4k.models", "bert4k.heads", "bert4k.training")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One registry entry: `model` is the family, `files` what the folder must hold, `source` where to get them."""

    name: str
    model: str
    format: str
    files: tuple[str, ...]
    config: dict
    tokenizer: str
    source: str | None = None
    local: str | None = None
    checkpoint_path: str | None = None
    do_lower_case: bool = True
    notes: str = ""

    def describe(self) -> str:
        where = f"ships in {self.local}" if self.local else f"from {self.source}"
        facts = ", ".join(f"{k}={v}" for k, v in self.config.items())
        return f"{self.name}: model={self.model}, {self.format}, files {', '.join(self.files)} ({where}); {facts}"


def registry(path: str | os.PathLike = REGISTRY_PATH) -> dict[str, Checkpoint]:
    """The registry's entries by name."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)["checkpoints"]
    fields = {f.name for f in dataclasses.fields(Checkpoint)}
    entries = {}
    for name, entry in raw.items():
        unknown = sorted(set(entry) - fields - {"heads"})
        if unknown:
            raise ValueError(f"{path}: entry {name!r} has unknown field(s) {unknown}")
        values = {k: v for k, v in entry.items() if k in fields}
        entries[name] = Checkpoint(name=name, **{**values, "files": tuple(values["files"])})
    return entries


def list_checkpoints() -> list[str]:
    """Names of the registry's checkpoints."""
    return sorted(registry())


def _roots(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    env = os.environ.get("BERT4K_CHECKPOINTS")
    return [Path(env)] if env else [REPO / "pretrained"]


def _entry_for_folder(folder: Path, entries: dict[str, Checkpoint]) -> Checkpoint | None:
    """The entry whose name (or its last part) is the folder's name, if any."""
    for entry in entries.values():
        if folder.name in (entry.name, entry.name.rsplit("/", 1)[-1]):
            return entry
    return None


def locate(path_or_name: str | os.PathLike, root: str | os.PathLike | None = None) -> tuple[Path, Checkpoint | None]:
    """`(folder, registry entry or None)` for a folder path or a registry name."""
    entries = registry()
    folder = Path(path_or_name)
    if folder.is_dir():
        return folder, _entry_for_folder(folder.resolve(), entries)
    name = os.fspath(path_or_name)
    if name not in entries:
        raise FileNotFoundError(f"{name!r} is neither a folder nor a registry name; known names: "
                                f"{', '.join(sorted(entries))} (see {REGISTRY_PATH})")
    entry = entries[name]
    if entry.local:
        return REPO / entry.local, entry
    candidates = [r / n for r in _roots(root) for n in dict.fromkeys((name, name.rsplit("/", 1)[-1]))]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate, entry
    raise FileNotFoundError(f"{name}: no local copy in {' or '.join(map(str, candidates))}; download "
                            f"{', '.join(entry.files)} from {entry.source} into one of them (or pass the folder "
                            f"path, or root=/ $BERT4K_CHECKPOINTS); nothing is downloaded automatically")


def missing_files(folder: Path, entry: Checkpoint) -> list[str]:
    """The registry files absent from `folder`; a weights file counts as present when any HF weights file is."""
    present_weights = any((folder / w).exists() for w in WEIGHT_FILES)
    return [f for f in entry.files if not (folder / f).exists() and not (f in WEIGHT_FILES and present_weights)]


def check_folder(folder: Path, entry: Checkpoint) -> None:
    """Raise naming the missing files and where to get them, or a config fact that differs from the registry."""
    missing = missing_files(folder, entry)
    if missing:
        where = f"from {entry.source}" if entry.source else f"by re-creating {entry.local}"
        raise FileNotFoundError(f"{folder}: missing {', '.join(missing)} for {entry.name}; obtain "
                                f"{'them' if len(missing) > 1 else 'it'} {where} (nothing is downloaded automatically)")
    config_file = _first(folder, CONFIG_FILES)
    if config_file is None:
        return
    with open(config_file, encoding="utf-8") as f:
        config = json.load(f)
    for key, expected in entry.config.items():
        if key in config and config[key] != expected:
            raise ValueError(f"{config_file}: {key} = {config[key]!r}, but {entry.name} has {expected!r} "
                             f"(registry {REGISTRY_PATH.name}); is this folder another checkpoint?")


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).exists()), None)


def detect_family(path: str | os.PathLike) -> str:
    """The family name of a checkpoint folder (or of one config file), as `build_transformer_model` detects it from
    the config and the checkpoint's tensor names."""
    from bert4k.checkpoints.readers import has_checkpoint, tensor_names
    from bert4k.config import read_json
    from bert4k.models.families import detect_family as detect

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    names = (lambda: tensor_names(folder)) if has_checkpoint(folder) else None
    return detect(read_json(path), names)[0].name


def load_tokenizer(folder: str | os.PathLike, do_lower_case: bool = True):
    """`Tokenizer` over `vocab.txt`, or `SpTokenizer` over a SentencePiece model, found in `folder`."""
    from bert4k.tokenizers import SpTokenizer, Tokenizer

    folder = Path(folder)
    vocab = _first(folder, VOCAB_FILES)
    if vocab is None:
        raise FileNotFoundError(f"{folder}: no vocabulary (looked for {', '.join(VOCAB_FILES)})")
    if vocab.suffix == ".txt":
        return Tokenizer(vocab, do_lower_case=do_lower_case)
    return SpTokenizer(vocab)


def from_pretrained(path_or_name: str | os.PathLike, application: str = "encoder", *, model: str | None = None,
                    root: str | os.PathLike | None = None, **kwargs: Any):
    """`(model, tokenizer)` from a local checkpoint folder or a registry name.

    `model=` overrides the family (default: the registry's, else detected from the folder's files); other keyword
    arguments go to `build_transformer_model` (`with_mlm`, `logits`, `keep_tokens`, `dtype`, ...).
    """
    from bert4k.models.builder import build_transformer_model

    folder, entry = locate(path_or_name, root)
    if entry is not None:
        check_folder(folder, entry)
    family = model or (entry.model if entry else None)  # None: build_transformer_model detects it
    config = _first(folder, CONFIG_FILES)
    if config is None:
        raise FileNotFoundError(f"{folder}: no config file (looked for {', '.join(CONFIG_FILES)})")
    checkpoint = folder / entry.checkpoint_path if entry and entry.checkpoint_path else folder
    built = build_transformer_model(config, checkpoint, model=family, application=application, **kwargs)
    return built, load_tokenizer(folder, entry.do_lower_case if entry else True)


def load_model(path: str | os.PathLike, compile: bool = True):
    """`keras.saving.load_model` of a saved bert4k model (`.keras`), with bert4k's layers registered;
    `compile=False` skips the saved loss and optimizer (inference only, e.g. a loss defined in a script)."""
    import keras

    for module in _SERIALIZABLES:
        importlib.import_module(module)

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"saved model not found: {path}")
    return keras.saving.load_model(path, compile=compile)
