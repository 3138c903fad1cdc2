"""tasks/task_table.py: the table's cells from each script's metrics.json layout, the missing-key error, resume, a
failing child, and each child's own peak RSS. Fake scripts stand in for the tasks (no real task runs here)."""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TASKS = Path(__file__).resolve().parents[1] / "tasks"
if str(TASKS) not in sys.path:
    sys.path.insert(0, str(TASKS))
import task_table

# Each script's metrics.json, in the layout the script writes (keys as in real runs: classification
# runs/s24/*/metrics.json, ner runs/ner-24k/metrics.json; the others as their run_training / main build it).
# `ours`, `baselines`, `floor`: the figures the row must show, as (value) / [(label fragment, value)].
CLASSIFICATION = {"task": "classification", "train_examples": 5646, "eval_examples": 1590, "dev_accuracy": 0.9124,
                  "train_seconds": 810.2, "macro_f1": 0.9, "labels": ["negative", "positive"], "wall_seconds": 836.6}
FAKES = {
    "chnsenticorp": ({**CLASSIFICATION, "dataset": "chnsenticorp", "accuracy": 0.9019, "model_source":
                      "pretrained:bert4k-small-zh", "baselines": {"majority": 0.5547, "tfidf_logreg": 0.8956,
                                                                  "tfidf_logreg_seconds": 2.7},
                      "dev_baselines": {"majority": 0.5161, "tfidf_logreg": 0.8925}, "settings": {"epochs": 3}},
                     0.9019, [("LR", 0.8956)], 0.5547, "bert4k-small-zh"),
    "csl": ({**CLASSIFICATION, "dataset": "csl", "accuracy": 0.748, "model_source": "scratch:small",
             "baselines": {"majority": 0.443, "tfidf_linear_svm": 0.758, "tfidf_linear_svm_seconds": 0.7}},
            0.748, [("SVM", 0.758)], 0.443, "random init (small)"),
    "online-shopping": ({**CLASSIFICATION, "dataset": "online-shopping", "accuracy": 0.8811,
                         "model_source": "pretrained:bert4k-small-zh",
                         "baselines": {"majority": 0.224, "tfidf_linear_svm": 0.878}},
                        0.8811, [("SVM", 0.878)], 0.224, "bert4k-small-zh"),
    "waimai": ({**CLASSIFICATION, "dataset": "waimai", "accuracy": 0.8988, "model_source": "pretrained:bert4k-small-zh",
                "baselines": {"majority": 0.6662, "tfidf_logreg": 0.9018}},
               0.8988, [("LR", 0.9018)], 0.6662, "bert4k-small-zh"),
    "ner": ({"task": "ner", "dataset": "msra-ner", "f1_crfsuite": 0.876, "f1_crf": 0.8702,
             "results": {"crfsuite": {"precision": 0.912, "recall": 0.843, "f1": 0.876, "dev_f1": 0.879},
                         "crf": {"precision": 0.891, "recall": 0.850, "f1": 0.8702, "dev_f1": 0.868}},
             "model_source": "pretrained:bert4k-small-zh", "settings": {"heads": "crf"}},
            0.8702, [("crfsuite", 0.876)], None, "bert4k-small-zh"),
    "qa": ({"task": "qa", "dataset": "cmrc2018_trial", "em": 1.23, "f1": 36.14, "eval_questions": 1002,  # 0-100
            "baselines": {"overlap": {"em": 1.2, "f1": 13.61}, "lead": {"em": 0.5, "f1": 7.41}},
            "model_source": "pretrained:bert4k-small-zh"}, 0.3614,
           [("sharing most question bigrams", 0.1361), ("first characters of the context", 0.0741)], None,
           "bert4k-small-zh"),
    "seq2seq": ({"task": "seq2seq", "dataset": "csl-title", "rouge_l": 0.4123, "bleu": 0.1512,
                 "baselines": {"lead20": {"rouge_l": 0.3114, "bleu": 0.1011, "distinct_1": 0.5}},
                 "model_source": "checkpoint:/ckpts/chinese_L-12/bert_model.ckpt"},
                0.4123, [("first 20", 0.3114)], None, "bert_model.ckpt"),
    "lm": ({"task": "lm", "dataset": "tang-poems", "perplexity": 120.37,
            "baselines": {"unigram_perplexity": 250.21}, "model_source": "scratch:tiny"},
           120.37, [("unigram", 250.21)], None, "random init (tiny)"),
    "conditional_lm": ({"task": "ChnSentiCorp label → text, conditional LayerNorm", "chance_accuracy": 0.5,
                        "classifier_heldout_accuracy": 0.88, "conditioned": {"heldout_loss": 4.1,
                                                                              "label_accuracy": 0.83},
                        "baseline": {"heldout_loss": 4.2, "label_accuracy": 0.51},
                        "args": {"checkpoint": None, "config": None, "hidden_size": 128, "layers": 2}},
                       0.83, [("without the label", 0.51)], 0.5, "random init (layers 2, hidden 128)"),
    "rank": ({"train_queries": 160, "random": {"ndcg@10": 0.3102, "mrr": 0.4},
              "lightgbm_lambdarank": {"test": {"ndcg@10": 0.4981}, "train_seconds": 1.0},
              "set_transformer": {"test": {"ndcg@10": 0.5123}, "best_epoch": 9}, "ndcg@10": 0.5123,
              "model_source": None, "settings": {"hidden": 64, "layers": 2}},
             0.5123, [("LightGBM", 0.4981)], 0.3102, "random init (blocks 2, hidden 64)"),
}
DONE = {"arguments": [], "threads": 1, "commit": "abc1234", "returncode": 0, "wall_seconds": 4321.0,
        "cpu_seconds": 2345.6, "peak_rss_mb": 2204.0, "started_utc": "2026-12-02T01:00:00Z",
        "finished_utc": "2026-12-02T02:12:01Z", "load_start": [2.0, 2.0, 2.0], "load_end": [2.1, 2.0, 2.0]}


def write_finished(out: Path, name: str, metrics: dict, **done) -> None:
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / name / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (out / f"{name}.done.json").write_text(json.dumps({**DONE, "name": name, **done}), encoding="utf-8")


def table_rows(table: str) -> list[list[str]]:
    lines = table.splitlines()
    start = lines.index("|" + "---|" * 9) + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def shown(value: float, percent: bool = True) -> str:
    """`value` as the table shows it (fractions ×100, one decimal)."""
    return f"{value * 100:.1f}" if percent else f"{value:.1f}"


def test_every_entry_has_a_fake_in_its_script_layout():
    assert sorted(FAKES) == sorted(e.name for e in task_table.ENTRIES)


def test_table_cells_are_the_numbers_of_each_metrics_json(tmp_path):
    for entry in task_table.ENTRIES:
        write_finished(tmp_path, entry.name, FAKES[entry.name][0], arguments=list(entry.args))
    table = task_table.build_table(task_table.ENTRIES, tmp_path, (1.5, 1.25, 1.0), (2.5, 2.25, 2.0))
    rows = table_rows(table)
    assert len(rows) == len(task_table.ENTRIES)
    assert f"Machine: {os.cpu_count()} cores" in table
    assert "1.50 / 1.25 / 1.00 at the start" in table and "2.50 / 2.25 / 2.00 at the end" in table
    assert "Commit abc1234" in table and "keras " in table and "torch " in table and "Threads per task: 1" in table
    for entry, row in zip(task_table.ENTRIES, rows):
        _, ours, baselines, floor, model = FAKES[entry.name]
        percent = entry.name != "lm"
        task, metric, ours_cell, base_cell, floor_cell, verdict, wall, cpu, rss = row
        assert metric == entry.metric, row
        assert f"`{entry.script}" in task and " ".join(entry.args) in task, row
        assert ours_cell.startswith(f"**{shown(ours, percent)}**") and model in ours_cell, row
        for (label, value), cell in zip(baselines, base_cell.split("; ")):
            assert label in cell and cell.endswith(shown(value, percent)), row
        assert base_cell == "—" if not baselines else len(base_cell.split("; ")) == len(baselines)
        assert floor_cell == ("—" if floor is None else floor_cell.split()[0] + " " + shown(floor)), row
        if baselines:
            gap = float(shown(ours, percent)) - float(shown(baselines[0][1], percent))
            if entry.name == "lm":
                gap = -gap  # perplexity: lower is better
            named = f" ({entry.baselines[0][0]})" if len(baselines) > 1 else ""  # the fakes list the best first
            assert verdict == (f"ahead by {gap:.1f}" if gap > 0 else f"behind by {-gap:.1f}") + named, row
        else:
            assert verdict == "no baseline in the script"
        assert (wall, cpu, rss) == ("72.0 min", "39.1 min", "2.15 GB"), row
    assert "EM 1.2" in rows[[e.name for e in task_table.ENTRIES].index("qa")][2]
    assert "Not finished" not in table


def test_missing_or_non_numeric_key_is_an_error_naming_the_file_and_key(tmp_path, capsys):
    metrics = json.loads(json.dumps(FAKES["csl"][0]))
    del metrics["baselines"]["tfidf_linear_svm"]
    # the real entry's figures, a script that cannot run (were it not skipped as done, main would return 1)
    entries = [dataclasses.replace(e, script="/nonexistent/task.py") for e in task_table.ENTRIES if e.name == "csl"]
    write_finished(tmp_path, "csl", metrics, arguments=list(entries[0].args))
    with pytest.raises(task_table.MetricsError, match=r"csl/metrics.json: no key 'baselines.tfidf_linear_svm'"):
        task_table.build_table(entries, tmp_path, (0, 0, 0), (0, 0, 0))
    assert task_table.main(["--out", str(tmp_path), "--only", "csl"], entries) == 2  # done: nothing runs
    assert "table not written: " in capsys.readouterr().err and not (tmp_path / "table.md").exists()
    metrics["baselines"]["tfidf_linear_svm"] = "0.75"
    write_finished(tmp_path, "csl", metrics)
    with pytest.raises(task_table.MetricsError, match=r"key 'baselines.tfidf_linear_svm' should be a finite number"):
        task_table.build_table(entries, tmp_path, (0, 0, 0), (0, 0, 0))
    metrics["baselines"]["tfidf_linear_svm"] = 75.8  # a percentage where the script writes fractions
    write_finished(tmp_path, "csl", metrics)
    with pytest.raises(task_table.MetricsError, match=r"'baselines.tfidf_linear_svm' is 75.8, outside \[0, 1\]"):
        task_table.build_table(entries, tmp_path, (0, 0, 0), (0, 0, 0))


FAKE_SCRIPT = textwrap.dedent("""
    import argparse, json, os, sys
    p = argparse.ArgumentParser()
    p.add_argument("--out"); p.add_argument("--calls"); p.add_argument("--fail", type=int, default=0)
    p.add_argument("--allocate-mb", type=int, default=0); p.add_argument("--tiny", action="store_true")
    p.add_argument("--no-metrics", action="store_true")
    a = p.parse_args()
    with open(a.calls, "a") as f:
        f.write(" ".join(sys.argv[1:]) + " threads=" + os.environ["OMP_NUM_THREADS"] + "\\n")
    block = bytearray(b"x") * (a.allocate_mb << 20)  # written, so resident
    print("working", flush=True)
    if a.fail:
        print("boom: the fake task failed", file=sys.stderr)
        sys.exit(a.fail)
    if a.no_metrics:
        sys.exit(0)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump({"score": 0.75 + 0.01 * a.tiny, "base": {"score": 0.7}, "model_source": "scratch:tiny"}, f)
""")


def fake_entries(tmp_path: Path, **extra_args) -> list:
    script = tmp_path / "fake_task.py"
    script.write_text(FAKE_SCRIPT, encoding="utf-8")
    return [task_table.Entry(name, str(script), ("--calls", str(tmp_path / f"{name}.calls"), *args), f"fake {name}",
                             "score", "score", (("base", "base.score"),)) for name, args in extra_args.items()]


def calls(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / f"{name}.calls"
    return path.read_text().splitlines() if path.exists() else []


def test_a_finished_entry_is_not_run_again_and_other_settings_run_it_again(tmp_path, capsys):
    entries = fake_entries(tmp_path, a=(), b=())
    out = tmp_path / "out"
    assert task_table.main(["--out", str(out), "--only", "a"], entries) == 0
    assert len(calls(tmp_path, "a")) == 1 and calls(tmp_path, "b") == []
    assert calls(tmp_path, "a")[0].endswith("threads=1")
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "**75.0**" in table and "base 70.0" in table and "ahead by 5.0" in table and "b (not run)" in table
    assert (out / "a.log").read_text().count("working") == 1
    # the run stopped half-way through b (metrics.json written, no done.json) and started again: only b runs
    (out / "b").mkdir()
    (out / "b" / "metrics.json").write_text("{}")
    capsys.readouterr()
    assert task_table.main(["--out", str(out)], entries) == 0
    assert "a: done before, skipped" in capsys.readouterr().out
    assert len(calls(tmp_path, "a")) == 1 and len(calls(tmp_path, "b")) == 1
    # other script arguments (or threads): not the finished run, so it runs again
    assert task_table.main(["--out", str(out), "--only", "a", "--extra", "--tiny"], entries) == 0
    assert task_table.main(["--out", str(out), "--only", "a", "--extra", "--tiny", "--threads", "2"], entries) == 0
    assert calls(tmp_path, "a")[1:] == [f"--calls {tmp_path / 'a.calls'} --tiny --out {out / 'a'} threads=1",
                                        f"--calls {tmp_path / 'a.calls'} --tiny --out {out / 'a'} threads=2"]
    assert "**76.0**" in (out / "table.md").read_text(encoding="utf-8")
    assert task_table.main(["--out", str(out), "--dry-run", "--extra", "--tiny", "--threads", "2"], entries) == 0
    printed = capsys.readouterr().out
    assert "a: OMP_NUM_THREADS=2" in printed and "# done, skipped" in printed and "b: " in printed
    assert len(calls(tmp_path, "a")) == 3 and len(calls(tmp_path, "b")) == 1


def test_a_failing_child_is_reported_with_its_exit_status_and_the_next_entry_runs(tmp_path, capsys):
    entries = fake_entries(tmp_path, bad=("--fail", "3"), good=())
    out = tmp_path / "out"
    assert task_table.main(["--out", str(out)], entries) == 1
    printed = capsys.readouterr().out
    assert "bad: FAILED (exit status 3" in printed and "boom: the fake task failed" in printed
    failed = json.loads((out / "bad.failed.json").read_text())
    assert failed["returncode"] == 3 and "boom" in failed["log_tail"]
    assert not (out / "bad.done.json").exists() and (out / "good.done.json").exists()
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "bad (failed: exit status 3, see bad.log)" in table and len(table_rows(table)) == 1
    # a finished entry run again with other settings that fails: its old row does not stay in the table
    assert task_table.main(["--out", str(out), "--only", "good", "--extra", "--fail 2"], entries) == 1
    assert not (out / "good.done.json").exists()
    table = (out / "table.md").read_text(encoding="utf-8")
    assert table_rows(table) == [] and "good (failed: exit status 2" in table
    # exit status 0 without a metrics.json written by this run (the old one is there): a failure too
    assert task_table.main(["--out", str(out), "--only", "good", "--extra", "--no-metrics"], entries) == 1
    assert "exited 0 but did not write" in json.loads((out / "good.failed.json").read_text())["error"]


def test_each_row_has_its_own_childs_peak_rss(tmp_path):
    # the runner in a fresh interpreter, as on the command line: Linux may count the forking process's RSS (here
    # pytest's, with whatever other tests loaded) into the child's peak
    fake_entries(tmp_path)
    out = tmp_path / "out"
    driver = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TASKS)!r})
        import task_table
        entries = [task_table.Entry(name, {str(tmp_path / "fake_task.py")!r}, ("--calls", {str(tmp_path)!r} + "/" + name + ".calls", *args),
                                    name, "score", "score") for name, args in (("big", ("--allocate-mb", "300")),
                                                                               ("small", ()))]
        sys.exit(task_table.main(["--out", {str(out)!r}], entries))
    """)
    subprocess.run([sys.executable, "-c", driver], check=True, cwd=tmp_path, capture_output=True)
    big, small = (json.loads((out / f"{n}.done.json").read_text()) for n in ("big", "small"))
    assert big["peak_rss_mb"] > 300 and small["peak_rss_mb"] < 100, (big["peak_rss_mb"], small["peak_rss_mb"])
    assert 0 < small["runner_peak_rss_mb"] < 100
    assert big["cpu_seconds"] <= big["wall_seconds"] + 0.5 and big["returncode"] == 0


def test_unknown_only_name_is_an_error_listing_the_entries(capsys):
    with pytest.raises(SystemExit):
        task_table.main(["--only", "ner,nope"])
    assert "unknown entries ['nope']" in capsys.readouterr().err
