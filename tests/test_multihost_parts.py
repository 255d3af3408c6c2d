"""The training loop's building blocks under ``jax.distributed``: 2 real local CPU processes x 1
CPU device each (tests/multihost_parts_worker.py) against 1 process.

(a) a jitted data-parallel SGD step over an ``InMemoryFeed`` (including a replicated remainder
    batch), ``evaluate`` and a ``StreamFeed`` equal the 1-process run; (c) only process 0 writes
    ``metrics.jsonl`` / TensorBoard; (b) ``RunCheckpoints`` saved by 2 processes restore on 2
    processes and on 1, and a step that fails verification on one process only is rejected by
    both (moved aside once, by process 0).
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "multihost_parts_worker.py")


def _collectives_unavailable() -> str:
  """Why this jax build cannot run CPU collectives across processes ('' if it can)."""
  try:
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
  except Exception as e:  # noqa: BLE001
    return f"jax internals not importable ({e})"
  if not hasattr(_jax, "make_gloo_tcp_collectives"):
    return "this jaxlib has no Gloo CPU collectives (make_gloo_tcp_collectives)"
  if not hasattr(jax.config, "jax_cpu_collectives_implementation"):
    return "this jax has no jax_cpu_collectives_implementation option"
  return ""


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
  for k in list(env):  # a launcher's variables must not leak into the workers
    if k.startswith(("XLA_FLAGS", "KDJAX_", "SLURM_", "OMPI_", "JAX_COORDINATOR")):
      env.pop(k)
  return env


def _launch(mode: str, workdir: str, nproc: int):
  os.makedirs(workdir, exist_ok=True)
  port = _free_port()
  return [
    subprocess.Popen(
      [sys.executable, WORKER, mode, workdir, str(nproc), str(i), str(port)],
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
    )
    for i in range(nproc)
  ]


def _wait(procs, timeout: int = 150):
  """Waits for the workers; on a timeout or a failure kills them all (SIGKILL: jax traps
  SIGTERM) and fails with the tail of every worker's output."""
  logs, timed_out = [], False
  try:
    for p in procs:
      try:
        logs.append(p.communicate(timeout=timeout)[0].decode(errors="replace"))
      except subprocess.TimeoutExpired:
        timed_out = True
        break
  finally:
    for p in procs:  # never leave a worker behind (e.g. its peer died and it waits)
      if p.poll() is None:
        p.kill()
  for p in procs[len(logs) :]:
    logs.append(p.communicate()[0].decode(errors="replace"))
  failed = timed_out or any(p.returncode != 0 for p in procs)
  tails = "\n".join(
    f"--- worker {i} (rc {p.returncode}):\n{log[-2500:]}"
    for i, (p, log) in enumerate(zip(procs, logs))
  )
  assert not failed, ("timed out after %d s\n" % timeout if timed_out else "") + tails


def _out(workdir: str, mode: str, nproc: int, pid: int) -> dict:
  with np.load(os.path.join(workdir, f"out-{mode}-P{nproc}-{pid}.npz")) as f:
    return {k: f[k] for k in f.files}


def _state_keys(d: dict, prefix: str) -> list:
  return sorted(k for k in d if k.startswith(prefix))


def test_two_processes_train_evaluate_and_log_like_one(tmp_path):
  w2, w1 = str(tmp_path / "p2"), str(tmp_path / "p1")
  procs = _launch("train", w2, 2)
  try:
    procs += _launch("train", w1, 1)  # concurrently
  finally:
    _wait(procs)
  a = _out(w1, "train", 1, 0)
  b0, b1 = _out(w2, "train", 2, 0), _out(w2, "train", 2, 1)
  # Both processes hold bitwise the same replicated state and the same eval results.
  for k in b0:
    if k not in ("writer_active", "stream_decoded"):
      np.testing.assert_array_equal(b0[k], b1[k], err_msg=k)
  # The global batches are the 1-process ones: 8, 8 and a remainder of 5 (replicated).
  np.testing.assert_array_equal(a["batch_sizes"], [8, 8, 5, 8, 8, 5])
  np.testing.assert_array_equal(b0["batch_sizes"], a["batch_sizes"])
  # float32: the 2-process gradient and batch statistics are all-reduces of two partial sums
  # instead of one, so values differ by rounding: measured <= 2.6e-7 relative after 6 SGD
  # steps (lr 0.1, momentum 0.9) on O(0.1-1) parameters. rtol 2e-6 bounds that with margin
  # (float32 eps 1.2e-7 compounding over 6 steps) and is far below one step's change (~1e-2);
  # a process feeding the wrong rows changes the batch statistics by O(1).
  keys = _state_keys(a, "state")
  assert len(keys) == 10 and keys == _state_keys(b0, "state")
  for k in keys:
    np.testing.assert_allclose(b0[k], a[k], rtol=2e-6, atol=1e-7, err_msg=k)
  np.testing.assert_allclose(b0["losses"], a["losses"], rtol=2e-6)
  assert abs(a["losses"][0] - a["losses"][-1]) > 1e-3  # it trained
  # evaluate(): counts and predictions exact (no logit within 1e-6 of a tie), the mean loss
  # to float32 rounding of a sum of 13 O(1) terms.
  np.testing.assert_array_equal(b0["preds"], a["preds"])
  for k in ("eval/top1", "eval/top5", "eval/agreement"):
    assert b0[k] == a[k], k
  np.testing.assert_allclose(b0["eval/loss"], a["eval/loss"], rtol=1e-6)
  # StreamFeed: the gathered global batches equal the 1-process HostStream's, while each
  # process decoded only its rows (2 + 2 of the two full batches, all 3 of the remainder).
  assert bool(a["stream_ok"]) and bool(b0["stream_ok"]) and bool(b1["stream_ok"])
  assert int(a["stream_decoded"]) == 11
  assert int(b0["stream_decoded"]) == int(b1["stream_decoded"]) == 2 + 2 + 3
  # (c) Only process 0 wrote metrics: the 2-process file is line for line the 1-process one
  # (6 train lines + 1 test line, no duplicates), and one TensorBoard event file.
  recs = {
    w: [json.loads(line) for line in open(os.path.join(w, "metrics.jsonl"))] for w in (w1, w2)
  }
  assert [r["step"] for r in recs[w2]] == [1, 2, 3, 4, 5, 6, 6]
  assert {r["train/pid" if "train/pid" in r else "test/pid"] for r in recs[w2]} == {0}
  for r1, r2 in zip(recs[w1], recs[w2]):
    assert sorted(r1) == sorted(r2)
    for k in r1:
      if k != "time":
        np.testing.assert_allclose(r2[k], r1[k], rtol=2e-6, err_msg=k)
  assert len(glob.glob(os.path.join(w2, "tb", "events.*"))) == 1
  assert bool(b0["writer_active"]) and not bool(b1["writer_active"])
  # put_replicated of a value that differs between the processes: refused on both.
  assert bool(b0["differ_refused"]) and bool(b1["differ_refused"])
  assert not bool(a["differ_refused"])  # one process: nothing to compare


def test_checkpoints_saved_by_two_processes_restore_on_two_and_one(tmp_path):
  w = str(tmp_path / "run")
  _wait(_launch("save", w, 2))
  saved = _out(w, "save", 2, 0)
  with open(os.path.join(w, "config.json")) as f:
    assert json.load(f) == {"nproc": 2}  # written once (process 0), whole
  assert sorted(os.listdir(os.path.join(w, "checkpoints"))) == ["1", "2"]
  # 1 process restores what 2 wrote (before the 2-process restore moves step 2 aside).
  _wait(_launch("restore", w, 1))
  _wait(_launch("restore", w, 2))
  r1, r20, r21 = _out(w, "restore", 1, 0), _out(w, "restore", 2, 0), _out(w, "restore", 2, 1)
  keys = _state_keys(saved, "step2")
  assert len(keys) == 10
  for r in (r1, r20, r21):
    assert int(r["step"]) == 2 and str(r["note"]) == "step 2" and int(r["model_step"]) == 2
    for k in keys:  # bit for bit: Orbax stores the values, restores them unchanged
      np.testing.assert_array_equal(r["restored" + k[len("step2") :]], saved[k], err_msg=k)
    np.testing.assert_array_equal(r["model['params']['w1']"], saved["step2['params']['w1']"])
    np.testing.assert_array_equal(
      r["model['batch_stats']['mean']"], saved["step2['stats']['mean']"]
    )
  # Step 2 failed verification on process 1 only: both resumed from step 1, and process 0
  # moved step 2 aside exactly once.
  for r in (r20, r21):
    assert int(r["fallback_step"]) == 1 and int(r["fallback_latest"]) == 1
    assert list(r["corrupt_dirs"]) == ["checkpoints-2"]
  assert sorted(os.listdir(os.path.join(w, "checkpoints"))) == ["1"]
