"""What a family's detection rule looks at: the raw config, its file name, and the checkpoint's tensor names."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable


@dataclasses.dataclass
class Evidence:
    """`raw`: the config json (a dict given directly has no `file`); `names()`: stored tensor names, read lazily
    (empty without a checkpoint)."""

    raw: dict
    file: str | None = None
    read_names: Callable[[], set[str]] | None = None
    _names: set[str] | None = dataclasses.field(default=None, repr=False)

    @property
    def model_type(self) -> str | None:
        value = self.raw.get("model_type")
        return value if isinstance(value, str) else None

    @property
    def architectures(self) -> list[str]:
        value = self.raw.get("architectures")
        return [a for a in value if isinstance(a, str)] if isinstance(value, list) else []

    @property
    def file_name(self) -> str | None:
        return None if self.file is None else os.path.basename(self.file)

    def names(self) -> set[str]:
        if self._names is None:
            self._names = set(self.read_names()) if self.read_names is not None else set()
        return self._names

    def any_name(self, *prefixes: str) -> bool:
        """Whether some stored tensor name starts with one of `prefixes`."""
        return any(n.startswith(prefixes) for n in self.names())

    def has(self, *fields: str) -> bool:
        return all(f in self.raw for f in fields)

    def architecture(self, *prefixes: str) -> str | None:
        return next((a for a in self.architectures if a.startswith(prefixes)), None)
