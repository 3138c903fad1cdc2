"""How one Keras variable maps to one checkpoint tensor, and loading a model from such a map."""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable

import numpy as np

from bert4k.checkpoints.assign import assign_array

log = logging.getLogger("bert4k.checkpoints")


@dataclasses.dataclass
class WeightSpec:
    """`variable` takes `load(tensors[key])`; `save(value)` gives the tensor back for export.

    `part=(index, count, axis)` says the variable is one of `count` equal slices of a fused tensor (GPT-2 c_attn).
    """

    variable: object
    key: str
    load: Callable[[np.ndarray], np.ndarray] | None = None
    save: Callable[[np.ndarray], np.ndarray] | None = None
    required: bool = True
    part: tuple[int, int, int] | None = None


def transpose(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x))


def linear_spec(layer, key: str, required: bool = True, bias: bool = True) -> list[WeightSpec]:
    """A Keras Dense from a HF `nn.Linear` (`[out, in]` weight, transposed)."""
    specs = [WeightSpec(layer.kernel, f"{key}.weight", transpose, transpose, required)]
    if bias and layer.use_bias:
        specs.append(WeightSpec(layer.bias, f"{key}.bias", required=required))
    return specs


def norm_spec(layer, key: str, required: bool = True) -> list[WeightSpec]:
    """A LayerNorm / RMSNorm from HF `weight` (and `bias`)."""
    specs = []
    if layer.scale:
        specs.append(WeightSpec(layer.gamma, f"{key}.weight", required=required))
    if layer.center:
        specs.append(WeightSpec(layer.beta, f"{key}.bias", required=required))
    return specs


class CheckpointMismatch(ValueError):
    """Raised when a checkpoint lacks or mis-shapes tensors the model needs."""


@dataclasses.dataclass
class LoadReport:
    loaded: list[str]
    missing: list[str]
    optional_missing: list[str]
    unexpected: list[str]
    mismatched: list[str]
    unused_heads: list[str] = dataclasses.field(default_factory=list)  # heads the model was built without

    def __str__(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        for label, names in (("missing", self.missing), ("optional, absent", self.optional_missing),
                             ("unused", self.unexpected), ("shape mismatch", self.mismatched),
                             ("heads not built", self.unused_heads)):
            if names:
                parts.append(f"{label}: {', '.join(names)}")
        return "; ".join(parts)


def _value_for(spec: WeightSpec, tensor: np.ndarray) -> np.ndarray:
    if spec.part is not None:
        index, count, axis = spec.part
        tensor = np.split(tensor, count, axis=axis)[index]
    return spec.load(tensor) if spec.load is not None else tensor


def load_specs(specs: Iterable[WeightSpec], tensors: dict[str, np.ndarray], source: str = "checkpoint",
               ignored: Callable[[str], bool] = lambda name: False,
               head: Callable[[str], bool] = lambda name: False) -> LoadReport:
    """Assign every spec'd variable from `tensors`; raise `CheckpointMismatch` naming what is missing or mis-shaped.

    `ignored(name)`: whether an unused tensor is a known one (buffer, tied copy) that is not reported; `head(name)`:
    whether it belongs to a head the model was built without (reported as `unused_heads`). Unused tensors and absent
    optional ones are logged at WARNING, a clean report at INFO."""
    specs = list(specs)
    used = {spec.key for spec in specs}
    report = LoadReport([], [], [], [], [])
    for spec in specs:
        if spec.key not in tensors:
            (report.missing if spec.required else report.optional_missing).append(spec.key)
            continue
        value = _value_for(spec, np.asarray(tensors[spec.key]))
        expected = tuple(spec.variable.shape)
        if tuple(value.shape) != expected:
            report.mismatched.append(f"{spec.key} (checkpoint {tuple(value.shape)} vs model variable "
                                     f"{spec.variable.path} {expected})")
            continue
        assign_array(spec.variable, value)
        del value  # one checkpoint tensor in memory at a time
        report.loaded.append(spec.key)
    report.loaded = list(dict.fromkeys(report.loaded))
    unused = sorted(k for k in tensors if k not in used and not ignored(k))
    report.unused_heads = [k for k in unused if head(k)]
    report.unexpected = [k for k in unused if not head(k)]
    if report.missing or report.mismatched:
        raise CheckpointMismatch(f"{source}: cannot load model. {report}")
    if report.unexpected or report.optional_missing:
        log.warning("%s: %s", source, report)
    else:
        log.info("%s: %s", source, report)
    return report


def export_tensors(specs: Iterable[WeightSpec]) -> dict[str, np.ndarray]:
    """The checkpoint tensors that `specs` would load from, rebuilt from the variables (fused parts re-joined)."""
    parts: dict[str, dict[int, np.ndarray]] = {}
    axes: dict[str, int] = {}
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        value = np.asarray(spec.variable.numpy(), dtype=np.float32)
        value = spec.save(value) if spec.save is not None else value
        if spec.part is None:
            out[spec.key] = value
        else:
            index, _, axis = spec.part
            parts.setdefault(spec.key, {})[index] = value
            axes[spec.key] = axis
    for key, pieces in parts.items():
        out[key] = np.concatenate([pieces[i] for i in sorted(pieces)], axis=axes[key])
    return out
