"""The one training loop under ``jax.distributed``: 2 real local CPU processes x 1 CPU device
(tests/multihost_loop_worker.py, ``kdjax.train.train_and_evaluate`` on 64 real Fashion-MNIST
images, tiny_cnn, batch 8) against 1 process, and resume across launches.

Tolerances. A 2-process step all-reduces the gradients and BatchNorm statistics of the two
half-batches over Gloo, where one process sums the whole batch in one kernel: the same sum in
another order, so each float32 parameter differs by a few ulps after one step. Two SGD steps
(momentum 0.9, lr 0.05) keep that at ~1e-6 of each tensor's largest magnitude; we allow 1e-4
(an error of the data sharding -- a wrong half-batch, a missing all-reduce -- moves parameters
by O(1e-2)). The same process count, interrupted and resumed, must be bit-identical (same
programs, same reduction order, state restored exactly).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from test_multihost_parts import _collectives_unavailable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "multihost_loop_worker.py")

pytestmark = pytest.mark.skipif(
  bool(_collectives_unavailable()),
  reason=f"multi-process CPU collectives unavailable: {_collectives_unavailable()}",
)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  for k in list(env):
    if k.startswith(("XLA_FLAGS", "KDJAX_", "SLURM_", "OMPI_", "JAX_COORDINATOR")):
      env.pop(k)
  return env


def _run(workdir: str, nproc: int, max_steps: int, fmnist_dir: str, timeout: int = 300):
  """Runs the worker as ``nproc`` processes; returns each process's output npz (dicts)."""
  port = _free_port()
  procs = [
    subprocess.Popen(
      [sys.executable, WORKER, workdir, str(nproc), str(i), str(port), str(max_steps), fmnist_dir],
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
    )
    for i in range(nproc)
  ]
  logs = []
  try:
    for p in procs:
      out, _ = p.communicate(timeout=timeout)
      logs.append(out.decode(errors="replace"))
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f"workers timed out after {timeout}s")
  for i, p in enumerate(procs):
    assert p.returncode == 0, f"process {i} failed:\n" + logs[i][-4000:]
  base = os.path.join(os.path.dirname(workdir), f"out-{os.path.basename(workdir)}-P{nproc}")
  return [dict(np.load(f"{base}-{i}.npz")) for i in range(nproc)], logs


def _params(out):
  return [out[k] for k in sorted(k for k in out if k.startswith("p"))]


def _max_rel(a, b):
  return max(
    float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-6))
    for x, y in zip(_params(a), _params(b))
  )


def test_two_processes_equal_one_and_resume(tmp_path, fmnist_dir):
  one, _ = _run(str(tmp_path / "one"), 1, 2, fmnist_dir)
  two, logs = _run(str(tmp_path / "two"), 2, 2, fmnist_dir)
  # both processes hold the same replicated state, equal to the 1-process run's
  for x, y in zip(_params(two[0]), _params(two[1])):
    np.testing.assert_array_equal(x, y)
  assert int(two[0]["step"]) == 2
  assert _max_rel(two[0], one[0]) < 1e-4
  # logs and files from process 0 only
  assert "[kdjax] tiny_cnn" in logs[0] and "[kdjax] tiny_cnn" not in logs[1]
  assert not os.path.exists(tmp_path / "two" / "metrics.jsonl.1")
  # resume the 2-process run to the end (16 steps) == an uninterrupted 2-process run
  resumed, logs = _run(str(tmp_path / "two"), 2, 0, fmnist_dir)
  assert "resumed from" in logs[0] and int(resumed[0]["step"]) == 16
  full, _ = _run(str(tmp_path / "full"), 2, 0, fmnist_dir)
  for x, y in zip(_params(resumed[0]), _params(full[0])):
    np.testing.assert_array_equal(x, y)
  assert float(resumed[0]["last_top1"]) == float(full[0]["last_top1"])
  # the run's files are written once, by process 0
  lines = open(tmp_path / "full" / "metrics.jsonl").read().splitlines()
  steps = [l for l in lines if '"step"' in l]
  assert len(steps) == len(set(steps))
