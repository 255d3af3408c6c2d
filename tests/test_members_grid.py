"""Hyper-parameters as a member axis: a grid of method/optim numbers x seeds in one step."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_run_config
from kdjax.errors import UserError
from kdjax.train import train_and_evaluate
from kdjax.train.loop import train_members
from kdjax.train.members import grid_points, member


def _max_rel(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  return max(
    float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / (np.max(np.abs(np.asarray(y))) + 1e-6))
    for x, y in zip(la, lb)
  )


def _kd_config(teacher_wd):
  cfg = tiny_run_config(num_epochs=2, tensorboard=False)
  cfg.teacher.workdir = teacher_wd
  cfg.method.name = "kd"
  cfg.method.ce_weight = 0.1
  cfg.method.terms.kd = dict(weight=0.9, temperature=4.0)
  return cfg


@pytest.fixture
def teacher(tmp_path, mock_cifar100):
  wd = str(tmp_path / "teacher")
  train_and_evaluate(tiny_run_config(num_epochs=1, tensorboard=False), wd)
  return wd


def test_grid_points():
  assert grid_points(None) == [{}]
  pts = grid_points({"method.terms.kd.temperature": [1, 4], "optim.lr": [0.1, 0.2]})
  assert pts == [
    {"method.terms.kd.temperature": 1, "optim.lr": 0.1},
    {"method.terms.kd.temperature": 1, "optim.lr": 0.2},
    {"method.terms.kd.temperature": 4, "optim.lr": 0.1},
    {"method.terms.kd.temperature": 4, "optim.lr": 0.2},
  ]
  with pytest.raises(UserError, match="under"):
    grid_points({"model": ["resnet8"]})
  with pytest.raises(UserError, match="list of values"):
    grid_points({"optim.lr": 0.1})
  with pytest.raises(UserError, match="repeated"):
    grid_points([{"optim.lr": 0.1}, {"optim.lr": 0.1}])


def test_grid_member_equals_the_same_run_trained_alone(tmp_path, teacher):
  """Grid {T = 2, 8} x seed 0 (impl 'unroll': each member runs its own step function in one
  jitted step). The T = 2 member equals train_and_evaluate with T = 2 to 1e-4 of each tensor's
  largest magnitude (the single-run computation inside a larger program: float32 rounding only);
  the two grid points differ at O(1e-2) (T changes the KD gradient)."""
  cfg = _kd_config(teacher)
  grid = {"method.terms.kd.temperature": [2.0, 8.0]}
  out = train_members(cfg, [0], str(tmp_path / "grid"), grid=grid)
  assert out["impl"] == "unroll" and out["finished"]
  names = [os.path.basename(d) for d in out["member_workdirs"]]
  assert names == ["seed0-method.terms.kd.temperature=2.0", "seed0-method.terms.kd.temperature=8.0"]
  alone_cfg = _kd_config(teacher)
  alone_cfg.method.terms.kd.temperature = 2.0
  alone = train_and_evaluate(alone_cfg, str(tmp_path / "alone"))
  got = member(out["state"], 0)
  assert _max_rel(got.params, alone["state"].params) < 1e-4
  assert _max_rel(member(out["state"], 1).params, alone["state"].params) > 1e-3
  assert [g["overrides"] for g in out["grid"]] == [
    {"method.terms.kd.temperature": 2.0},
    {"method.terms.kd.temperature": 8.0},
  ]
  with open(os.path.join(out["member_workdirs"][1], "config.json")) as fh:
    assert json.load(fh)["method"]["terms"]["kd"]["temperature"] == 8.0
  # Another grid on the same workdir: refused by the config check, naming the key ...
  cfg2 = _kd_config(teacher)
  other = {"method.terms.kd.temperature": [3.0, 5.0]}
  with pytest.raises(UserError, match="members.grid"):
    train_members(cfg2, [0], str(tmp_path / "grid"), grid=other)
  # ... and, forced, by the checkpoint's own record (same shapes, other values).
  cfg2.force_resume = True
  with pytest.raises(UserError, match="holds members"):
    train_members(cfg2, [0], str(tmp_path / "grid"), grid=other)


def test_grid_refuses_vmap_and_bad_keys(tmp_path, teacher):
  cfg = _kd_config(teacher)
  with pytest.raises(UserError, match="unroll"):
    train_members(cfg, [0], str(tmp_path / "a"), grid={"optim.lr": [0.1, 0.2]}, impl="vmap")
  with pytest.raises(UserError, match="no 'temprature'"):
    train_members(cfg, [0], str(tmp_path / "b"), grid={"method.terms.kd.temprature": [1.0]})
