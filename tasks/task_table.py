"""Run every task script with its default settings, one at a time, and write the README's task table from the run.

    python tasks/task_table.py --out runs/task-table                  # everything (hours on 2 shared cores)
    python tasks/task_table.py --out runs/task-table --only ner,csl   # some entries (names: --dry-run)
    python tasks/task_table.py --out runs/task-table --dry-run        # the commands, nothing run
    python tasks/task_table.py --out runs/tiny --only lm --extra "--tiny --limit 40 --epochs 1"   # plumbing check

Each entry runs `python tasks/<script>.py <its args> <--extra> --out <out>/<name>` in its own process, with one
thread (`OMP_NUM_THREADS`, TF intra/inter-op; `--threads`), its output in `<out>/<name>.log`. The runner measures
the child's wall and CPU seconds and its own peak RSS (`os.wait4`) and writes them to `<out>/<name>.done.json`. An
entry with that file (made with the same arguments and threads) and its `metrics.json` is not run again, so a run
killed half-way continues with the entries not yet done (and a task script resumes its own interrupted training
from its backup). A failed entry is reported (exit status, last log lines) and the next one runs.

`<out>/table.md` (also printed) has a row per finished entry of the whole list: the script's headline metric
beside its classic baselines and the majority class / chance where the script reports them, the model it started
from, the verdict against the best baseline, wall, CPU and peak RSS; a header names the machine, threads,
versions and commits. A key missing from a `metrics.json` is an error naming the file and the key.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                    "TF_NUM_INTEROP_THREADS")
VERSIONS = (("keras", ("keras",)), ("TF", ("tensorflow", "tensorflow-cpu")), ("jax", ("jax",)), ("torch", ("torch",)))
LOG_TAIL = 12  # log lines shown for a failed entry
SCALES = {"fraction": (0.0, 1.0, 100.0), "percent": (0.0, 100.0, 1.0), "raw": (-math.inf, math.inf, 1.0)}  # lo, hi, ×


class MetricsError(ValueError):
    """A metrics.json lacks a key the table reads, or holds something else than a number there."""


def lookup(metrics: dict, key: str, path: Path):
    """`metrics[a][b]...` for the dotted `key` "a.b...", or a MetricsError naming `path` and `key`."""
    value = metrics
    for depth, part in enumerate(key.split(".")):
        if not isinstance(value, dict) or part not in value:
            where = ".".join(key.split(".")[:depth]) or "the top level"
            found = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise MetricsError(f"{path}: no key {key!r} ({part!r} is not in {where}, which has {found})")
        value = value[part]
    return value


def number(metrics: dict, key: str, path: Path) -> float:
    value = lookup(metrics, key, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MetricsError(f"{path}: key {key!r} should be a finite number, got {value!r}")
    return float(value)


def source_name(source: str | None) -> str:
    """The `model_source` of a task's metrics.json as a table cell."""
    if source is None:
        return "random init"
    kind, _, name = source.partition(":")
    if kind == "pretrained":
        return f"`{name}`"
    if kind == "checkpoint":
        return f"`{Path(name).name or name}`"
    if kind == "scratch":
        return f"random init ({Path(name).stem if '/' in name else name})"
    return source


def model_source(metrics: dict, path: Path) -> str:
    return source_name(lookup(metrics, "model_source", path))


def conditional_lm_model(metrics: dict, path: Path) -> str:
    given = lookup(metrics, "args.checkpoint", path) or lookup(metrics, "args.config", path)
    if given:
        return f"`{Path(given).name}`"
    return (f"random init (layers {lookup(metrics, 'args.layers', path)}, "
            f"hidden {lookup(metrics, 'args.hidden_size', path)})")


def rank_model(metrics: dict, path: Path) -> str:
    return (f"random init (blocks {lookup(metrics, 'settings.layers', path)}, "
            f"hidden {lookup(metrics, 'settings.hidden', path)})")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One task run and where its metrics.json keeps the figures of its table row (dotted keys)."""

    name: str
    script: str  # relative to the repository (or absolute)
    args: tuple[str, ...]
    task: str  # the row's first cell
    metric: str
    ours: str
    baselines: tuple[tuple[str, str], ...] = ()  # (label, key)
    floor: tuple[str, str] | None = None  # (label, key): majority class, chance or random
    also: tuple[tuple[str, str], ...] = ()  # (label, key): more of our figures, in the same cell
    scale: str = "fraction"  # of the metrics.json figures (`SCALES`): fractions are shown ×100
    lower_is_better: bool = False
    model: Callable[[dict, Path], str] = model_source


def _classification(dataset: str, task: str, baseline: tuple[str, str]) -> Entry:
    return Entry(dataset, "tasks/classification.py", ("--dataset", dataset), task, "accuracy (held-out test)",
                 "accuracy", (baseline,), ("majority", "baselines.majority"))


LR = ("TF-IDF char 1-2-gram + LR", "baselines.tfidf_logreg")
SVM = ("TF-IDF char 1-2-gram + linear SVM", "baselines.tfidf_linear_svm")
ENTRIES: tuple[Entry, ...] = (
    _classification("chnsenticorp", "ChnSentiCorp sentiment", LR),
    _classification("csl", "CSL discipline of a title", SVM),
    _classification("online-shopping", "online-shopping product category", SVM),
    _classification("waimai", "waimai sentiment", LR),
    Entry("ner", "tasks/ner.py", ("--heads", "crf"), "MSRA NER, CRF head", "entity F1 (held-out test)",
          "results.crf.f1", (("sklearn-crfsuite, char window ±2 + bigrams", "results.crfsuite.f1"),)),
    Entry("qa", "tasks/qa.py", (), "CMRC 2018 trial QA", "F1 (EM beside)", "f1",
          (("context window sharing most question bigrams", "baselines.overlap.f1"),
           ("first characters of the context", "baselines.lead.f1")), also=(("EM", "em"),),
          scale="percent"),  # the official CMRC 2018 script's 0-100 scale
    Entry("seq2seq", "tasks/seq2seq.py", (), "CSL title generation (UniLM)", "ROUGE-L F (BLEU beside)", "rouge_l",
          (("first 20 characters of the abstract", "baselines.lead20.rouge_l"),), also=(("BLEU", "bleu"),)),
    Entry("lm", "tasks/lm.py", (), "Tang poems LM", "perplexity (held-out)", "perplexity",
          (("add-one unigram", "baselines.unigram_perplexity"),), scale="raw", lower_is_better=True),
    Entry("conditional_lm", "tasks/conditional_lm.py", (), "ChnSentiCorp label → review (conditional LayerNorm)",
          "samples with the asked label (TF-IDF judge)", "conditioned.label_accuracy",
          (("the same LM without the label", "baseline.label_accuracy"),), ("chance", "chance_accuracy"),
          model=conditional_lm_model),
    Entry("rank", "tasks/rank.py", (), "lambdarank example, set Transformer", "NDCG@10 ×100 (test)",
          "set_transformer.test.ndcg@10", (("LightGBM lambdarank", "lightgbm_lambdarank.test.ndcg@10"),),
          ("random", "random.ndcg@10"), model=rank_model),
)


# === one entry's run ===

def arguments(entry: Entry, extra: Sequence[str]) -> list[str]:
    """What the entry's script is given, before `--out`."""
    return [*entry.args, *extra]


def command(entry: Entry, out: Path, extra: Sequence[str]) -> list[str]:
    """The child's command line; `--out` absolute, as the child runs in the repository root."""
    return [sys.executable, str(REPO / entry.script), *arguments(entry, extra), "--out",
            str((out / entry.name).resolve())]


def child_env(threads: int) -> dict[str, str]:
    return {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}


def load_record(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def git_commit() -> str:
    def git(*args):
        return subprocess.run(["git", *args], check=False, cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+uncommitted" if git("status", "--porcelain", "--untracked-files=no") else "")


def done_state(entry: Entry, out: Path, extra: Sequence[str], threads: int) -> tuple[bool, str]:
    """`(done, why not)`: done when `<name>.done.json` records the same arguments and threads and the entry's
    metrics.json exists."""
    record = load_record(out / f"{entry.name}.done.json")
    if record is None:
        return False, "not run yet"
    wanted = {"arguments": arguments(entry, extra), "threads": threads}
    had = {k: record.get(k) for k in wanted}
    if had != wanted:
        return False, f"finished before with other settings ({had} → {wanted})"
    if not (out / entry.name / "metrics.json").exists():
        return False, f"{out / entry.name / 'metrics.json'} is missing"
    return True, ""


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_child(cmd: Sequence[str], log: Path, env: dict[str, str]) -> dict:
    """Run `cmd` (output appended to `log`); its exit status, wall and CPU seconds and peak RSS (its own,
    `os.wait4`), the load average before and after."""
    load_start, started, wall = os.getloadavg(), utc_now(), time.monotonic()
    with open(log, "ab") as f:
        f.write(f"=== {started} {shlex.join(cmd)}\n".encode())
        f.flush()
        child = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            _, status, usage = os.wait4(child.pid, 0)
        except BaseException:  # the runner is stopped: stop the child too (it resumes from its backup next time)
            child.terminate()
            child.wait()
            raise
    child.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": child.returncode, "wall_seconds": round(time.monotonic() - wall, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
            # the child's peak can include the RSS of the process that forked it: this runner's, at most
            "runner_peak_rss_mb": own_peak_rss_mb(),
            "started_utc": started, "finished_utc": utc_now(),
            "load_start": [round(x, 2) for x in load_start], "load_end": [round(x, 2) for x in os.getloadavg()]}


def own_peak_rss_mb() -> float | None:
    """This process's peak RSS since its exec (`VmHWM`; `ru_maxrss` would count its parent's at the fork), or
    None where /proc is absent."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    kib = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
    return round(int(kib[0]) / 1024, 1) if kib else None


def log_tail(log: Path, lines: int = LOG_TAIL) -> str:
    text = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []
    return "\n".join(text[-lines:])


def _modified(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def run_entry(entry: Entry, out: Path, extra: Sequence[str], threads: int) -> dict:
    """Run one entry; on success write `<name>.done.json`, else `<name>.failed.json`. Returns the record."""
    done, failed = out / f"{entry.name}.done.json", out / f"{entry.name}.failed.json"
    done.unlink(missing_ok=True)  # a run with other settings that is stopped half-way must not count as done
    cmd = command(entry, out, extra)
    print(f"[{utc_now()}] {entry.name}: {shlex.join(cmd)}", flush=True)
    metrics = out / entry.name / "metrics.json"
    before = _modified(metrics)  # a metrics.json left by an earlier run must not pass for this run's
    record = {"name": entry.name, "arguments": arguments(entry, extra), "threads": threads, "commit": git_commit(),
              **run_child(cmd, out / f"{entry.name}.log", child_env(threads))}
    if record["returncode"] == 0 and _modified(metrics) in (None, before):
        record["error"] = f"exited 0 but did not write {metrics}"
    elif record["returncode"] != 0:
        record["error"] = f"exit status {record['returncode']}"
    if "error" in record:
        record["log_tail"] = log_tail(out / f"{entry.name}.log")
        write_atomic(failed, json.dumps(record, ensure_ascii=False, indent=2) + "\n")
        print(f"{entry.name}: FAILED ({record['error']}, {record['wall_seconds']} s); the end of "
              f"{out / entry.name}.log:\n{record['log_tail']}", flush=True)
    else:
        failed.unlink(missing_ok=True)
        write_atomic(done, json.dumps(record, ensure_ascii=False, indent=2) + "\n")
        print(f"{entry.name}: done in {record['wall_seconds']} s wall, {record['cpu_seconds']} CPU-s, peak RSS "
              f"{record['peak_rss_mb']} MB", flush=True)
    return record


# === the table ===

def score(entry: Entry, metrics: dict, key: str, path: Path) -> float:
    """A figure of the entry's row, checked to be on the entry's scale (a fraction where 0-100 was written is an
    error, not a cell 100 times too large)."""
    value = number(metrics, key, path)
    low, high, _ = SCALES[entry.scale]
    if not low <= value <= high:
        raise MetricsError(f"{path}: key {key!r} is {value!r}, outside [{low:g}, {high:g}], the {entry.scale} scale "
                           f"the table expects for {entry.name}")
    return value


def figure(entry: Entry, value: float) -> str:
    return f"{SCALES[entry.scale][2] * value:.1f}"


def verdict(entry: Entry, ours: float, baselines: Sequence[tuple[str, float]]) -> str:
    """Ahead / behind the best baseline, by how much (in the table's units)."""
    if not baselines:
        return "no baseline in the script"
    pick = min if entry.lower_is_better else max
    label, best = pick(baselines, key=lambda b: b[1])
    gap = float(figure(entry, ours)) - float(figure(entry, best))  # as the cells read
    if entry.lower_is_better:
        gap = -gap
    word = "level" if abs(gap) < 0.05 else f"{'ahead' if gap > 0 else 'behind'} by {abs(gap):.1f}"
    return word + (f" ({label})" if len(baselines) > 1 else "")


def duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def memory(mb: float) -> str:
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def table_row(entry: Entry, out: Path) -> list[str]:
    """The cells of a finished entry's row, from `<out>/<name>/metrics.json` and `<out>/<name>.done.json`."""
    path = out / entry.name / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    done = json.loads((out / f"{entry.name}.done.json").read_text(encoding="utf-8"))
    ours = score(entry, metrics, entry.ours, path)
    also = "".join(f", {label} {figure(entry, score(entry, metrics, key, path))}" for label, key in entry.also)
    baselines = [(label, score(entry, metrics, key, path)) for label, key in entry.baselines]
    floor = f"{entry.floor[0]} {figure(entry, score(entry, metrics, entry.floor[1], path))}" if entry.floor else "—"
    script = shlex.join([entry.script, *done["arguments"]])
    return [f"{entry.task} (`{script}`)", entry.metric, f"**{figure(entry, ours)}**{also} ({entry.model(metrics, path)})",
            "; ".join(f"{label} {figure(entry, value)}" for label, value in baselines) or "—", floor,
            verdict(entry, ours, baselines), duration(done["wall_seconds"]), duration(done["cpu_seconds"]),
            memory(done["peak_rss_mb"])]


def versions() -> str:
    found = []
    for label, names in VERSIONS:
        version = "absent"
        for name in names:
            try:
                version = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        found.append(f"{label} {version}")
    return ", ".join(found)


def build_table(entries: Sequence[Entry], out: Path, load_start: Sequence[float], load_end: Sequence[float]) -> str:
    """The markdown of `<out>/table.md`: header lines, a row per finished entry, then the entries not finished."""
    finished = [e for e in entries if (out / f"{e.name}.done.json").exists() and (out / e.name / "metrics.json")
                .exists()]
    rows = [table_row(e, out) for e in finished]
    records = [json.loads((out / f"{e.name}.done.json").read_text(encoding="utf-8")) for e in finished]
    commits = sorted({r["commit"] for r in records}) or [git_commit()]
    threads = sorted({r["threads"] for r in records})
    runs = (f"rows run {min(r['started_utc'] for r in records)} – {max(r['finished_utc'] for r in records)}"
            if records else "no entry finished yet")
    title = (f"Task table from `python tasks/task_table.py --out {out}` ({len(finished)} of {len(entries)} entries "
             f"finished; {runs}).")
    machine = (f"Machine: {os.cpu_count()} cores; load average (1/5/15 min) {_load(load_start)} at the start and "
               f"{_load(load_end)} at the end of this invocation (each row's own in `<name>.done.json`). Threads per "
               f"task: {', '.join(map(str, threads)) or '—'}. {versions()}. Commit{'s' if len(commits) > 1 else ''} "
               f"{', '.join(commits)}.")
    header = ["task (script)", "metric", "bert4k (start)", "baseline", "majority / chance", "verdict", "wall", "CPU",
              "peak RSS"]
    lines = [title, "", machine, "", _cells(header), "|" + "---|" * len(header), *map(_cells, rows)]
    missing = [e for e in entries if e not in finished]
    if missing:
        lines += ["", "Not finished: " + ", ".join(f"{e.name} ({_state(e, out)})" for e in missing) + "."]
    return "\n".join(lines) + "\n"


def _cells(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _load(load: Sequence[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def _state(entry: Entry, out: Path) -> str:
    failed = load_record(out / f"{entry.name}.failed.json")
    return f"failed: {failed['error']}, see {entry.name}.log" if failed else "not run"


# === command line ===

def parse_args(argv: Sequence[str] | None, entries: Sequence[Entry]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "runs" / "task-table"), help="default: %(default)s")
    p.add_argument("--only", help="comma-separated entry names (default: all; --dry-run shows them)")
    p.add_argument("--extra", default="", help='arguments added to every script run, e.g. "--tiny --epochs 1"')
    p.add_argument("--threads", type=int, default=1, help="threads per task (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    # `--extra "--tiny"`: argparse would take the lone option-like value for an option
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [f"--extra={argv[i + 1]}" if a == "--extra" and i + 1 < len(argv) else a for i, a in enumerate(argv)
            if not (i > 0 and argv[i - 1] == "--extra")]
    args = p.parse_args(argv)
    names = [e.name for e in entries]
    if args.only:
        chosen = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in names]
        if unknown or not chosen:
            p.error(f"--only: unknown entries {unknown}; the entries are {names}")
        args.only = chosen
    if args.threads < 1:
        p.error(f"--threads must be ≥ 1, got {args.threads}")
    return args


def main(argv: Sequence[str] | None = None, entries: Sequence[Entry] = ENTRIES) -> int:
    """Run the chosen entries not yet done, then write and print the table; 1 if an entry failed, 2 if a
    metrics.json lacks a figure of the table (the finished entries stay done: fix, run again, nothing re-runs)."""
    args = parse_args(argv, entries)
    out, extra = Path(args.out), shlex.split(args.extra)
    chosen = [e for e in entries if args.only is None or e.name in args.only]
    env = " ".join(f"{name}={args.threads}" for name in THREAD_VARIABLES)
    if args.dry_run:
        for entry in chosen:
            done, why = done_state(entry, out, extra, args.threads)
            state = "done, skipped" if done else why
            print(f"{entry.name}: {env} {shlex.join(command(entry, out, extra))}  # {state}")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the running child too (run_child)
    out.mkdir(parents=True, exist_ok=True)
    load_start, failures = os.getloadavg(), []
    for entry in chosen:
        done, why = done_state(entry, out, extra, args.threads)
        if done:
            print(f"{entry.name}: done before, skipped ({out / entry.name}.done.json)", flush=True)
            continue
        print(f"{entry.name}: {why}; running", flush=True)
        if "error" in run_entry(entry, out, extra, args.threads):
            failures.append(entry.name)
    try:
        table = build_table(entries, out, load_start, os.getloadavg())
    except MetricsError as e:
        print(f"table not written: {e}", file=sys.stderr)
        return 2
    write_atomic(out / "table.md", table)
    print(table)
    print(f"wrote {out / 'table.md'}")
    if failures:
        print(f"failed: {', '.join(failures)} (see their .log and .failed.json in {out})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
