"""Keras-native fine-tuning set-up: AdamW with weight-decay exclusions, warmup + linear decay, gradient
accumulation, EMA, mixed precision, seeds, and the callbacks a run needs (resume, CSV log, PNG learning curve).

Everything here configures Keras' own optimizer, schedules and callbacks; no optimizer maths is re-implemented.

    set_seed(0)
    model.compile(create_optimizer(model, 5e-5, total_steps=1000, warmup=0.1, grad_accum_steps=2, use_ema=True),
                  loss=..., metrics=...)
    model.fit(data, epochs=3, callbacks=training_callbacks("runs/x"))
"""
from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Mapping

import keras
import numpy as np
from keras import ops

from bert4k.layers.norms import LayerNorm

DEFAULT_NO_DECAY = ("Norm", "bias")


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and the backend (`keras.utils.set_random_seed`); with `deterministic`, also ask
    TensorFlow for deterministic kernels (same results run to run, at some speed cost)."""
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def use_mixed_precision(policy: str = "mixed_bfloat16") -> str:
    """Set the global dtype policy (before building models) and return the previous one's name.

    `mixed_bfloat16` computes in bfloat16 with float32 variables; bert4k's norms, softmax and heads stay float32.
    No loss scaling is needed for bfloat16."""
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(policy)
    return previous


@keras.saving.register_keras_serializable("bert4k")
class PiecewiseLinearSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`learning_rate × m(step)`, where `m` interpolates linearly between the points of `schedule`
    (`{step: multiplier}`, bert4keras' `lr_schedule`) and stays at the last multiplier after the last point.

    With `from_zero` (bert4keras' default) a point `{0: 0.0}` is added when the schedule does not start at 0,
    so `{1000: 1, 2000: 0.1}` warms up from 0 over 1000 steps, then decays to 0.1 by step 2000.
    """

    def __init__(self, learning_rate: float, schedule: Mapping[int, float], from_zero: bool = True):
        if not schedule:
            raise ValueError("schedule must have at least one {step: multiplier} point")
        points = sorted((int(k), float(v)) for k, v in schedule.items())
        if from_zero and points[0][0] != 0:
            points.insert(0, (0, 0.0))
        self.learning_rate = float(learning_rate)
        self.points = points
        self.from_zero = from_zero

    def __call__(self, step):
        step = ops.cast(step, "float32")
        multiplier = ops.convert_to_tensor(self.points[0][1], "float32")
        for (t0, m0), (t1, m1) in zip(self.points, self.points[1:]):
            inside = m0 + (m1 - m0) * (step - t0) / max(t1 - t0, 1)
            multiplier = ops.where(step >= t0, inside, multiplier)
        multiplier = ops.where(step >= self.points[-1][0], self.points[-1][1], multiplier)
        return self.learning_rate * multiplier

    def get_config(self):
        return {"learning_rate": self.learning_rate, "schedule": {str(k): v for k, v in self.points},
                "from_zero": False}


def warmup_linear_decay(learning_rate: float, total_steps: int, warmup_steps: int,
                        final_multiplier: float = 0.0) -> PiecewiseLinearSchedule:
    """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then linear decay to
    `learning_rate × final_multiplier` at `total_steps` (BERT's schedule)."""
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 ≤ warmup_steps ≤ total_steps and total_steps ≥ 1, "
                         f"got warmup_steps={warmup_steps}, total_steps={total_steps}")
    points = {0: 0.0, warmup_steps: 1.0} if warmup_steps else {0: 1.0}
    if total_steps > warmup_steps:
        points[total_steps] = final_multiplier
    return PiecewiseLinearSchedule(learning_rate, points, from_zero=False)


def _flatten_layers(model) -> Iterable:
    if hasattr(model, "_flatten_layers"):
        return model._flatten_layers(include_self=True, recursive=True)
    return [model]


def no_decay_variables(model, patterns: Iterable[str] = DEFAULT_NO_DECAY) -> list:
    """The trainable variables to exclude from weight decay: every variable of a norm layer (bert4k
    `LayerNorm`/`RMSNorm`, Keras `LayerNormalization`) and every variable whose path (`"Transformer-0/
    FeedForward-Norm/gamma"`) matches one of the regex `patterns` (default: `Norm`, `bias`)."""
    regex = re.compile("|".join(patterns)) if patterns else None
    excluded = {}
    for layer in _flatten_layers(model):
        if isinstance(layer, (LayerNorm, keras.layers.LayerNormalization)):
            for v in layer.trainable_variables:
                excluded[id(v)] = v
    for v in model.trainable_variables:
        if regex is not None and regex.search(v.path):
            excluded[id(v)] = v
    return list(excluded.values())


def create_optimizer(model, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
                     total_steps: int | None = None, warmup: float = 0.1, weight_decay: float = 0.01,
                     no_decay: Iterable[str] = DEFAULT_NO_DECAY, grad_accum_steps: int | None = None,
                     use_ema: bool = False, ema_momentum: float = 0.999, clipnorm: float | None = 1.0,
                     epsilon: float = 1e-6, **kwargs) -> keras.optimizers.AdamW:
    """`keras.optimizers.AdamW` set up for fine-tuning `model`.

    - schedule: with `total_steps`, warmup + linear decay to 0 (`warmup` is a fraction of `total_steps` if < 1,
      else a step count). Steps count batches as `fit` sees them, also with gradient accumulation.
    - weight decay `weight_decay`, decoupled, skipping `no_decay_variables(model, no_decay)` (norms, biases).
    - `grad_accum_steps` ≥ 2: Keras' `gradient_accumulation_steps` (one update per that many batches).
    - `use_ema`: Keras' EMA of the weights (`ema_momentum`); `fit` copies the averages into the model at the end.
    - `clipnorm`: per-variable gradient norm clip; more keyword arguments go to `AdamW`.
    """
    if total_steps is not None and not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        warmup_steps = round(warmup * total_steps) if warmup < 1 else int(warmup)
        learning_rate = warmup_linear_decay(learning_rate, total_steps, min(warmup_steps, total_steps))
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate, weight_decay=weight_decay, epsilon=epsilon, clipnorm=clipnorm,
        gradient_accumulation_steps=grad_accum_steps if grad_accum_steps and grad_accum_steps > 1 else None,
        use_ema=use_ema, ema_momentum=ema_momentum, **kwargs)
    optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model, no_decay))
    return optimizer


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Batches in one pass over `num_examples` (the last one partial)."""
    return max(1, -(-num_examples // batch_size))


# === callbacks ===

class LearningCurve(keras.callbacks.Callback):
    """Saves a PNG of the training loss per batch and every epoch-level metric (e.g. `val_loss`, `val_accuracy`,
    or values other callbacks add to the epoch logs) after each epoch and at the end of training; `baselines`
    (`{label: value}`) are drawn as horizontal lines beside the metrics."""

    def __init__(self, path: str, title: str | None = None, baselines: dict[str, float] | None = None):
        super().__init__()
        self.path = os.fspath(path)
        self.title = title
        self.baselines = dict(baselines or {})
        self.batch_loss: list[tuple[int, float]] = []
        self.epochs: list[tuple[int, dict]] = []
        self._step = 0

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if logs and "loss" in logs:
            self.batch_loss.append((self._step, float(logs["loss"])))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((self._step, {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}))
        self.save()

    def on_train_end(self, logs=None):
        self.save()

    def save(self) -> None:
        """Write the figure (matplotlib's Agg canvas; the global backend is left alone)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        names = sorted({k for _, logs in self.epochs for k in logs if k not in ("loss", "learning_rate")})
        fig = Figure(figsize=(10, 4))
        FigureCanvasAgg(fig)
        ax_loss, ax_metric = fig.subplots(1, 2)
        if self.batch_loss:
            ax_loss.plot(*zip(*self.batch_loss), lw=0.8, label="train loss (running mean per epoch)")
        for key in ("loss", "val_loss"):
            points = [(s, logs[key]) for s, logs in self.epochs if key in logs]
            if points:
                ax_loss.plot(*zip(*points), "o-", label=f"{key} (epoch)")
        ax_loss.set_xlabel("step")
        ax_loss.legend(fontsize=8)
        for key in names:
            if key == "val_loss":
                continue
            points = [(s, logs[key]) for s, logs in self.epochs if key in logs]
            ax_metric.plot(*zip(*points), "o-", label=key)
        for (label, value), color in zip(self.baselines.items(), ("gray", "tab:red", "tab:purple", "tab:brown")):
            ax_metric.axhline(value, ls="--", lw=1, color=color, label=f"{label} (baseline)")
        ax_metric.set_xlabel("step")
        if names or self.baselines:
            ax_metric.legend(fontsize=8)
        if self.title:
            fig.suptitle(self.title)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fig.savefig(self.path, dpi=100)


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


class EpochEvaluation(keras.callbacks.Callback):
    """Calls `evaluate()` after every `every`-th epoch and merges the returned `{name: value}` into the epoch logs,
    so the CSV log and the learning curve record task metrics (put it before them in the callback list)."""

    def __init__(self, evaluate, every: int = 1):
        super().__init__()
        self.evaluate = evaluate
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and (epoch + 1) % self.every == 0:
            logs.update(self.evaluate())


def training_callbacks(out_dir: str, resume: bool = True, csv_name: str = "log.csv",
                       png_name: str = "learning_curve.png", swap_ema: bool = False, title: str | None = None,
                       before: Iterable[keras.callbacks.Callback] = (),
                       baselines: dict[str, float] | None = None) -> list[keras.callbacks.Callback]:
    """`before` + [BackupAndRestore (resume an interrupted `fit` from `out_dir/backup`), SwapEMAWeights (if
    `swap_ema`: validate with the EMA weights), CSVLogger (`out_dir/csv_name`, appended when resuming),
    LearningCurve (`out_dir/png_name`)]. The progress bar is Keras' own (`fit(verbose=1)`)."""
    os.makedirs(out_dir, exist_ok=True)
    callbacks = list(before)
    backup = os.path.join(out_dir, "backup")
    resuming = resume and os.path.isdir(backup) and bool(os.listdir(backup))
    if resume:
        callbacks.append(keras.callbacks.BackupAndRestore(backup))
    if swap_ema:
        callbacks.append(keras.callbacks.SwapEMAWeights())
    callbacks.append(keras.callbacks.CSVLogger(os.path.join(out_dir, csv_name), append=resuming))
    callbacks.append(LearningCurve(os.path.join(out_dir, png_name), title=title, baselines=baselines))
    return callbacks


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the highest `monitor` (an epoch-log value, e.g. one `EpochEvaluation`
    adds; epochs without it are skipped) in `path` (written to a temporary name, then renamed, with `path.json`
    holding the epoch and value, so a resumed run knows its best) and loads them when training ends."""

    def __init__(self, path: str, monitor: str):
        super().__init__()
        self.path, self.monitor = os.fspath(path), monitor
        self.record = self.path + ".json"

    def best(self) -> dict | None:
        """`{"epoch": 1-based, "value": ...}` of the best epoch so far, or None."""
        if not os.path.exists(self.record):
            return None
        with open(self.record, encoding="utf-8") as f:
            return json.load(f)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        best = self.best()
        if best is not None and best["value"] >= value:
            return
        temporary = self.path + ".tmp.weights.h5"
        self.model.save_weights(temporary)
        os.replace(temporary, self.path)
        with open(self.record + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"epoch": epoch + 1, "value": float(value), "monitor": self.monitor}, f)
        os.replace(self.record + ".tmp", self.record)

    def on_train_end(self, logs=None):
        if self.best() is not None:
            self.model.load_weights(self.path)


def read_log(path: str) -> list[dict[str, float]]:
    """Rows of a CSVLogger file as dicts of floats."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
