"""Seeds as a batch axis (kdjax.train.members) on mock CIFAR-100 with the toy model."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_run_config
from kdjax.errors import UserError
from kdjax.train import load_model, train_and_evaluate
from kdjax.train.loop import train_members
from kdjax.train.members import member, member_dir


def _max_rel(a, b):
  """max |a - b| / (max |b| + 1e-6) over the leaves of two pytrees."""
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  return max(
    float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / (np.max(np.abs(np.asarray(y))) + 1e-6))
    for x, y in zip(la, lb)
  )


def _kd_config(teacher_wd, **over):
  cfg = tiny_run_config(**{"num_epochs": 2, **over})
  cfg.async_checkpoint = False
  cfg.tensorboard = False
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


@pytest.mark.parametrize("impl", ["vmap", "unroll"])
def test_member_equals_the_same_run_trained_alone(tmp_path, teacher, impl):
  """Member seed 3 of a {0, 3} run vs train_and_evaluate(seed=3): 10 KD steps (two epochs of
  40 mock images, batch 8). Every parameter and BN statistic agrees to 1e-4 of its tensor's
  largest magnitude: under vmap the convolutions are batched (another summation order), float32
  rounding (~1e-7 relative per op) grows through 10 SGD steps to ~1e-6..1e-5 (unroll runs the
  single-run computation itself and agrees more tightly); a wrong seed, data
  order or augmentation key gives O(1) differences (checked against member seed 0 below)."""
  cfg = _kd_config(teacher)
  out = train_members(cfg, [0, 3], str(tmp_path / "members"), impl=impl)
  cfg.seed = 3
  alone = train_and_evaluate(cfg, str(tmp_path / "alone3"))
  got = member(out["state"], 1)
  assert int(got.step) == int(alone["state"].step) == 10
  assert _max_rel(got.params, alone["state"].params) < 1e-4
  assert _max_rel(got.batch_stats, alone["state"].batch_stats) < 1e-4
  assert _max_rel(got.opt_state, alone["state"].opt_state) < 1e-4
  # The other member is a different run (different init, order, augmentation).
  assert _max_rel(member(out["state"], 0).params, alone["state"].params) > 1e-2
  assert out["last_top1"][1] == pytest.approx(alone["last_top1"], abs=100 / 40 + 1e-6)
  assert out["teacher_top1"] == pytest.approx(alone["teacher_top1"])
  # Each member is a plain run dir: loadable, with its own summary and config.
  v, meta = load_model(member_dir(str(tmp_path / "members"), 3), "final")
  assert meta["seed"] == 3 and meta["arch"] == "tiny_cnn"
  np.testing.assert_allclose(
    v["params"]["fc"]["kernel"], got.params["student"]["fc"]["kernel"], rtol=0, atol=0
  )
  with open(os.path.join(member_dir(str(tmp_path / "members"), 3), "summary.json")) as fh:
    s = json.load(fh)
  assert s["seed"] == 3 and s["finished"] and s["last_top1"] == out["last_top1"][1]
  assert out["last_top1_std"] is not None


def test_members_resume_equals_uninterrupted(tmp_path, teacher):
  cfg = _kd_config(teacher)
  full = train_members(cfg, [0, 1], str(tmp_path / "full"))
  wd = str(tmp_path / "part")
  cfg.max_steps = 7  # mid-epoch 2 (5 steps per epoch)
  part = train_members(cfg, [0, 1], wd)
  assert not part["finished"] and part["step"] == 7
  cfg.max_steps = 0
  resumed = train_members(cfg, [0, 1], wd)
  assert resumed["finished"] and resumed["step"] == 10
  assert _max_rel(resumed["state"].params, full["state"].params) < 1e-6
  with pytest.raises(UserError, match=r"members\.seeds \(\[0, 1\] -> \[0, 2\]\)"):
    train_members(cfg, [0, 2], wd)


def test_shared_data_members_differ_by_init_only(tmp_path, teacher):
  """Shared mode: member 0 is the seed-0 run (its own data and init); all members see seed 0's
  batches, so they share one teacher forward."""
  cfg = _kd_config(teacher, num_epochs=1)
  out = train_members(cfg, [0, 5], str(tmp_path / "shared"), shared_data=True, impl="vmap")
  cfg.seed = 0
  alone = train_and_evaluate(cfg, str(tmp_path / "alone0"))
  assert _max_rel(member(out["state"], 0).params, alone["state"].params) < 1e-4
  assert _max_rel(member(out["state"], 1).params, alone["state"].params) > 1e-2
  assert out["shared_data"] and np.all(np.asarray(out["state"].step) == 5)


def test_bad_seeds_rejected(tmp_path, teacher):
  with pytest.raises(UserError, match="distinct"):
    train_members(_kd_config(teacher), [1, 1], str(tmp_path / "x"))
