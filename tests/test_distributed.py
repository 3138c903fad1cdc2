"""Data-parallel training gives the losses of one device for the same global batch (dropout 0).

Each run is its own process (tests/workers/data_parallel.py): the backend and the device count are fixed at start-up.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "workers" / "data_parallel.py"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS", "TF_CONFIG")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def _start(mode: str, out: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), mode, str(out)], env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _report(process: subprocess.Popen, out: Path, timeout: float = 300) -> dict:
    log, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, log[-3000:]
    return json.loads(out.read_text())


def _run(mode: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{mode}.json"
    return _report(_start(mode, out), out)


@pytest.fixture(scope="module")
def tf_single(tmp_path_factory) -> dict:
    return _run("tf-single", tmp_path_factory.mktemp("single"))


def test_tf_mirrored_two_devices_equals_one(tmp_path, tf_single):
    single, mirrored = tf_single, _run("tf-mirrored", tmp_path)
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)
    np.testing.assert_allclose(mirrored["losses"], single["losses"], rtol=1e-5, atol=1e-5)
    assert len(set(np.round(single["losses"], 3))) == len(single["losses"])  # the weights really moved


def test_jax_data_parallel_two_devices_equals_one(tmp_path):
    single, parallel = _run("jax-single", tmp_path), _run("jax-data-parallel", tmp_path)
    assert (single["replicas"], parallel["replicas"]) == (1, 2)
    np.testing.assert_allclose(parallel["losses"], single["losses"], rtol=1e-5, atol=1e-5)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_tf_multi_worker_on_localhost_trains_and_checkpoints(tmp_path, tf_single):
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    runs = []
    for index in range(2):
        config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        out = tmp_path / f"worker{index}.json"
        runs.append((_start("tf-multiworker", out, TF_CONFIG=config), out))
    reports = [_report(process, out) for process, out in runs]
    single = tf_single
    assert [r["replicas"] for r in reports] == [2, 2]
    for report in reports:  # each worker trains on half of every global batch; together they equal one device
        np.testing.assert_allclose(report["losses"], single["losses"], rtol=1e-5, atol=1e-5)
    chief = Path(reports[0]["checkpoint"])
    assert chief.parent == tmp_path / "backup" and chief.stat().st_size > 0
