"""End to end on real (offline) Fashion-MNIST: the launch scripts as a user runs them."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, timeout=900, **env):
  e = dict(os.environ, **env)
  e.pop("KDJAX_TRACEBACK", None)
  return subprocess.run(
    [sys.executable, "-m"] + args, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout
  )


SMALL = [
  "--config.dataset.train_limit=2048",
  "--config.dataset.eval_limit=500",
  "--config.batch_size=64",
  "--config.optim.reference_batch_size=64",
]


@pytest.mark.slow
def test_teacher_distill_evaluate_scripts(tmp_path, fmnist_dir):
  t, s = str(tmp_path / "teacher"), str(tmp_path / "kd")
  r = _run(
    [
      "launch.train_teacher",
      "--config",
      "configs/fashion_mnist.py:teacher,quick",
      "--workdir",
      t,
      "--config.model=resnet8",
    ]
    + SMALL,
    KDJAX_FASHION_MNIST_DIR=fmnist_dir,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  summary = json.load(open(os.path.join(t, "summary.json")))
  assert summary["finished"] and summary["last_top1"] > 25.0  # 10 classes: chance is 10
  r = _run(
    [
      "launch.distill",
      "--config",
      "configs/fashion_mnist.py:kd,quick",
      "--workdir",
      s,
      f"--config.teacher.workdir={t}",
    ]
    + SMALL,
    KDJAX_FASHION_MNIST_DIR=fmnist_dir,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  summary = json.load(open(os.path.join(s, "summary.json")))
  assert summary["teacher"]["workdir"] == t and summary["last_agreement"] is not None
  r = _run(
    ["launch.evaluate", "--workdir", s, "--which", "best", "--teacher_workdir", t],
    KDJAX_FASHION_MNIST_DIR=fmnist_dir,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.load(open(os.path.join(s, "eval_best.json")))
  assert out["top1"] == pytest.approx(summary["best_top1"], abs=1e-3) or out["top1"] > 0
  assert "agreement" in out and "teacher" in out


@pytest.mark.slow
def test_quickstart_function_prints_table(tmp_path, fmnist_dir, capsys, monkeypatch):
  monkeypatch.setenv("KDJAX_FASHION_MNIST_DIR", fmnist_dir)
  from configs import quickstart as qs_cfg
  from kdjax.experiments import quickstart

  cfg = qs_cfg.get_config()
  for role in ("teacher", "student", "kd"):
    c = cfg[role]
    c.model = "tiny_cnn"
    c.dataset.train_limit, c.dataset.eval_limit = 512, 256
    c.num_epochs = c.optim.epochs = 1
    c.progress = False
  rows = quickstart(cfg, str(tmp_path))
  assert [r[0] for r in rows] == ["teacher", "student", "kd"]
  out = capsys.readouterr().out
  assert "| kd | tiny_cnn | kd |" in out
  assert os.path.exists(tmp_path / "results.md")


def test_cli_missing_teacher_is_one_line_error(tmp_path, fmnist_dir):
  r = _run(
    [
      "launch.distill",
      "--config",
      "configs/fashion_mnist.py:kd,quick",
      "--workdir",
      str(tmp_path / "kd"),
      f"--config.teacher.workdir={tmp_path / 'missing'}",
    ],
    KDJAX_FASHION_MNIST_DIR=fmnist_dir,
    timeout=300,
  )
  assert r.returncode == 2
  assert "kdjax: error:" in r.stderr and "does not exist" in r.stderr
  assert "Traceback" not in r.stderr


def test_cli_missing_dataset_is_one_line_error(tmp_path):
  r = _run(
    [
      "launch.train_teacher",
      "--config",
      "configs/cifar100/teacher.py:resnet8",
      "--workdir",
      str(tmp_path / "t"),
      f"--config.dataset.data_dir={tmp_path}",
    ],
    timeout=300,
  )
  assert r.returncode == 2, r.stderr[-2000:]
  assert "kdjax: error:" in r.stderr and "cifar100" in r.stderr and "prepare" in r.stderr
  assert "Traceback" not in r.stderr


def test_cli_config_typo_is_rejected(tmp_path):
  r = _run(
    [
      "launch.train_teacher",
      "--config",
      "configs/cifar100/teacher.py:resnet8",
      "--workdir",
      str(tmp_path / "t"),
      "--config.optim.lrr=0.1",
    ],
    timeout=300,
  )
  assert r.returncode != 0 and "lrr" in r.stderr
