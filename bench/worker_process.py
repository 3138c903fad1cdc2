"""What the benchmarks share to run each implementation in its own process: the environment that fixes its
backend and thread count, the in-process thread settings, and the driver's handle on a worker (`READY`, then one
`RUN i` → `RESULT {json}` exchange per timed job over stdin/stdout)."""
from __future__ import annotations

import json
import os
import subprocess


def worker_env(backend: str, threads: int) -> dict:
    """The environment of a worker on `backend` limited to `threads` compute threads."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend,
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if backend == "jax":
        env["XLA_FLAGS"] = (f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                            f"intra_op_parallelism_threads={threads}")
    return env


def set_threads(backend: str, threads: int) -> None:
    """Inside a worker: `threads` intra-op threads and one inter-op thread on TensorFlow / PyTorch."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)


class WorkerProcess:
    """A running worker: started with `command` and `env`, ready once it prints `READY`."""

    def __init__(self, name, command: list[str], env: dict):
        self.name = name
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._expect("READY")

    def _expect(self, prefix: str) -> str:
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        raise RuntimeError(f"worker {self.name} exited (code {self.process.wait()})")

    def run(self, job: int) -> dict:
        self.process.stdin.write(f"RUN {job}\n")
        self.process.stdin.flush()
        return json.loads(self._expect("RESULT "))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
