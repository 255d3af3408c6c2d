"""Fault injection through the real launch scripts on tiny Fashion-MNIST runs (issue 15).

Every run is a subprocess of ``python -m launch.train_teacher`` / ``launch.distill`` on a
3-steps-per-epoch tiny_cnn run; processes are SIGKILLed at chosen points with
``KDJAX_CRASH_AT=<point>:<step>`` (kdjax/train/faults.py), checkpoints are garbled or truncated
on disk, and relaunched. "The same" means bit-identical arrays (the final resume state and every
kept/best model) and the same metrics.jsonl apart from its wall-clock ``time`` field.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = os.environ.get("KDJAX_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")

# 96 examples / batch 32 = 3 steps per epoch, 3 epochs; a mid-epoch resume checkpoint every 4
# steps (steps 4 and 8), train lines every 2 steps, every epoch kept.
TINY = [
  "--config.model=tiny_cnn",
  "--config.dataset.train_limit=96",
  "--config.dataset.eval_limit=64",
  "--config.batch_size=32",
  "--config.optim.reference_batch_size=32",
  "--config.num_epochs=3",
  "--config.optim.epochs=3",
  "--config.log_every_steps=2",
  "--config.checkpoint_every_steps=4",
  "--config.keep_every_epochs=1",
]
TEACHER = ["launch.train_teacher", "--config", "configs/fashion_mnist.py:teacher,quick"] + TINY
FINAL_STEP = 9


def _run(args, *, crash=None, devices=None, timeout=300):
  env = dict(os.environ, KDJAX_FASHION_MNIST_DIR=FMNIST)
  for k in ("KDJAX_TRACEBACK", "KDJAX_CRASH_AT", "XLA_FLAGS"):
    env.pop(k, None)
  if crash:
    env["KDJAX_CRASH_AT"] = crash
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return subprocess.run(
    [sys.executable, "-m"] + args,
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def _ok(r):
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
  return r


def _user_error(r, *needles):
  """One ``kdjax: error:`` line, exit status 2, no traceback."""
  assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
  assert "Traceback" not in r.stderr, r.stderr[-3000:]
  lines = [l for l in r.stderr.splitlines() if "kdjax: error:" in l]
  assert len(lines) == 1, r.stderr[-3000:]
  for n in needles:
    assert n in lines[0], (n, lines[0])
  return lines[0]


def _metrics(wd):
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    recs = [json.loads(l) for l in f]
  for r in recs:
    r.pop("time")
  return recs


def _tree(path):
  """The arrays of one Orbax item directory (e.g. checkpoints/9/state), as numpy."""
  return jax.tree_util.tree_map(np.asarray, ocp.PyTreeCheckpointer().restore(path))


def _assert_same_tree(a, b):
  la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in la] == [p for p, _ in lb]
  for (p, x), (_, y) in zip(la, lb):
    assert x.dtype == y.dtype and np.array_equal(x, y), jax.tree_util.keystr(p)


def _model_steps(wd, kind):
  d = os.path.join(wd, kind)
  return sorted(int(s) for s in os.listdir(d) if s.isdigit())


def _assert_same_run(ref, wd):
  """Same final resume state, same kept/ and best/ models, same metrics.jsonl."""
  _assert_same_tree(
    _tree(f"{ref}/checkpoints/{FINAL_STEP}/state"), _tree(f"{wd}/checkpoints/{FINAL_STEP}/state")
  )
  for kind in ("kept", "best"):
    assert _model_steps(ref, kind) == _model_steps(wd, kind)
    for s in _model_steps(ref, kind):
      _assert_same_tree(_tree(f"{ref}/{kind}/{s}/model"), _tree(f"{wd}/{kind}/{s}/model"))
  assert _metrics(ref) == _metrics(wd)
  a, b = (json.load(open(os.path.join(d, "summary.json"))) for d in (ref, wd))
  for s in (a, b):
    s.pop("train_seconds")
  assert a == b


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One uninterrupted run (the reference every interrupted one must reproduce)."""
  assert os.path.isdir(FMNIST), f"Fashion-MNIST IDX files missing at {FMNIST}"
  wd = str(tmp_path_factory.mktemp("faults") / "reference")
  r = _ok(_run(TEACHER + ["--workdir", wd]))
  # Logging (case 10): per-epoch time and ETA; no TFDS variant-folder warnings.
  assert "ETA" in r.stdout and "epoch 3/3" in r.stdout
  assert "dataset_info.json" not in r.stderr
  return wd


def test_kill_anywhere_then_relaunch_gives_the_same_run(reference, tmp_path):
  wd = str(tmp_path / "killed")
  # 1. after the epoch-2 kept save, before its resume-state save (the case that could never be
  #    resumed: StepAlreadyExists); the mid-epoch save at step 4 was asynchronous and may or may
  #    not have committed.
  assert _run(TEACHER + ["--workdir", wd], crash="kept:6").returncode == -9
  # 2. mid-epoch, between resume checkpoints
  assert _run(TEACHER + ["--workdir", wd], crash="step:7").returncode == -9
  # 3. right after a mid-epoch resume-state save was issued
  assert _run(TEACHER + ["--workdir", wd], crash="state:8").returncode == -9
  # 4. just before the final epoch's evaluation
  assert _run(TEACHER + ["--workdir", wd], crash="eval:9").returncode == -9
  _ok(_run(TEACHER + ["--workdir", wd]))
  _assert_same_run(reference, wd)
  # No metrics line is duplicated (case 7): steps are unique per prefix.
  keys = [(r["step"], tuple(sorted(k.split("/")[0] for k in r if "/" in k))) for r in _metrics(wd)]
  assert len(keys) == len(set(keys))


@pytest.mark.parametrize("damage", ["garble", "truncate"])
def test_damaged_newest_checkpoint_falls_back_to_previous(reference, tmp_path, damage):
  wd = str(tmp_path / "run")
  shutil.copytree(reference, wd)
  # The biggest file of the newest resume checkpoint holds the arrays.
  files = [os.path.join(r, f) for r, _, fs in os.walk(f"{wd}/checkpoints/{FINAL_STEP}") for f in fs]
  big = max(files, key=os.path.getsize)
  with open(big, "r+b") as f:
    data = bytearray(f.read())
    if damage == "garble":
      mid = len(data) // 2
      data[mid : mid + 512] = bytes(b ^ 0x5A for b in data[mid : mid + 512])
    else:
      data = data[: len(data) // 2]
    f.seek(0)
    f.truncate()
    f.write(bytes(data))
  kept_before = _model_steps(wd, "kept")
  r = _ok(_run(TEACHER + ["--workdir", wd]))
  out = r.stdout + r.stderr
  assert out.count("failed verification") == 1, out[-3000:]
  assert "resumed from" in out and f"checkpoints/{FINAL_STEP - 1}" in out
  assert os.listdir(os.path.join(wd, "corrupt"))  # moved aside, not deleted
  assert _model_steps(wd, "kept") == kept_before  # nothing lost
  _assert_same_run(reference, wd)  # the replay rebuilt step 9


def test_relaunch_with_another_config_is_refused(reference, tmp_path):
  wd = str(tmp_path / "run")
  shutil.copytree(reference, wd)
  r = _run(TEACHER + ["--workdir", wd, "--config.optim.lr=0.2", "--config.seed=1"])
  _user_error(r, "optim.lr", "seed", "--workdir", "force_resume")
  with open(os.path.join(wd, "config.json")) as f:
    assert json.load(f)["optim"]["lr"] != 0.2  # the run's record is untouched


def test_which_final_refuses_an_unfinished_teacher(tmp_path):
  t = str(tmp_path / "teacher")
  assert _run(TEACHER + ["--workdir", t], crash="state:6").returncode == -9
  r = _run(
    [
      "launch.distill",
      "--config",
      "configs/fashion_mnist.py:kd,quick",
      "--workdir",
      str(tmp_path / "kd"),
      f"--config.teacher.workdir={t}",
    ]
    + TINY
  )
  _user_error(r, "unfinished", "'best'", "epoch:N")


def test_non_finite_parameters_stop_the_run_and_nothing_non_finite_is_written(tmp_path):
  wd = str(tmp_path / "run")
  # lr = 1e30 makes the parameters non-finite at the first step while its loss (computed
  # before the update) is still finite; a resume checkpoint would be written every step.
  r = _run(
    TEACHER
    + [
      "--workdir",
      wd,
      "--config.optim.lr=1e30",
      "--config.checkpoint_every_steps=1",
      "--config.progress=True",
    ]
  )
  line = _user_error(r, "non-finite", "parameters")
  # The progress bar was closed before the message (not glued to a bar line).
  before = r.stderr[: r.stderr.index("kdjax: error:")]
  assert before == "" or before[-1] in "\r\n", repr(before[-200:])
  for kind, item in (("checkpoints", "state"), ("kept", "model"), ("best", "model")):
    d = os.path.join(wd, kind)
    for s in os.listdir(d) if os.path.isdir(d) else []:
      if s.isdigit():
        leaves = jax.tree_util.tree_leaves(_tree(os.path.join(d, s, item)))
        assert all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(x.dtype, np.floating)), (
          kind,
          s,
          line,
        )


def test_checkpoints_of_two_devices_restore_on_one(tmp_path):
  t = str(tmp_path / "teacher")
  # Trained on 2 (fake) devices for 2 steps, then resumed and finished on 1 device.
  _ok(_run(TEACHER + ["--workdir", t, "--config.max_steps=2"], devices=2))
  r = _ok(_run(TEACHER + ["--workdir", t]))
  assert "resumed from" in r.stdout and "1 device(s)" in r.stdout
  # Its models load on 1 device as a distillation teacher.
  r = _ok(
    _run(
      [
        "launch.distill",
        "--config",
        "configs/fashion_mnist.py:kd,quick",
        "--workdir",
        str(tmp_path / "kd"),
        f"--config.teacher.workdir={t}",
      ]
      + TINY
      + ["--config.max_steps=1"]
    )
  )
  assert "teacher test top-1" in r.stdout


def test_user_errors_are_one_line_and_exit_2(tmp_path):
  # A typo in a command-line override (absl's traceback before).
  r = _run(TEACHER + ["--workdir", str(tmp_path / "x"), "--config.optim.lr_decay=0.1"])
  _user_error(r, "--config.optim.lr_decay", "decay")
  # A workdir that cannot be created (its parent is a file; root ignores permission bits).
  blocker = tmp_path / "file"
  blocker.write_text("")
  r = _run(TEACHER + ["--workdir", str(blocker / "run")])
  _user_error(r, "Cannot write the workdir")
  # An RGB teacher for a grayscale student.
  from kdjax import models
  from kdjax.train.checkpoint import RunCheckpoints

  module = models.get("tiny_cnn", num_classes=10)
  v = module.init(jax.random.PRNGKey(0), np.zeros((1, 28, 28, 3), np.float32), train=False)
  t = str(tmp_path / "rgb_teacher")
  ck = RunCheckpoints(t, async_save=False)
  ck.save_model(
    "kept",
    0,
    v,
    {
      "arch": "tiny_cnn",
      "num_classes": 10,
      "dataset": "cifar10",
      "model_kwargs": {},
      "epoch": 0,
      "step": 0,
    },
  )
  ck.close()
  r = _run(
    [
      "launch.distill",
      "--config",
      "configs/fashion_mnist.py:kd,quick",
      "--workdir",
      str(tmp_path / "kd"),
      f"--config.teacher.workdir={t}",
    ]
    + TINY
  )
  _user_error(r, "cannot take", "(28, 28, 1)")


def test_a_real_bug_keeps_its_traceback_and_exits_1():
  code = "from kdjax import cli\ndef buggy():\n  return {}['missing']\ncli.guarded(buggy)\n"
  r = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
  )
  assert r.returncode == 1 and "Traceback" in r.stderr and "KeyError" in r.stderr
  assert "kdjax: error" not in r.stderr
