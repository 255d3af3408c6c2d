"""RCO in the one loop: ``teacher.rco`` runs one main-stage segment per anchor checkpoint."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_run_config
from kdjax.errors import UserError
from kdjax.train import train_and_evaluate


@pytest.fixture
def teacher(tmp_path, mock_cifar100):
  """A toy teacher run of 3 epochs keeping every epoch (kept/ epochs 1, 2, 3)."""
  wd = str(tmp_path / "teacher")
  train_and_evaluate(
    tiny_run_config(num_epochs=3, keep_every_epochs=1, tensorboard=False, seed=5), wd
  )
  return wd


def _kd(teacher_wd, **over):
  cfg = tiny_run_config(**{"num_epochs": 3, "tensorboard": False, **over})
  cfg.teacher.workdir = teacher_wd
  cfg.method.name = "kd"
  cfg.method.ce_weight = 0.1
  cfg.method.terms.kd = dict(weight=0.9, temperature=4.0)
  return cfg


def test_rco_segments_equal_the_same_run_with_the_teacher_switched_by_hand(tmp_path, teacher):
  """3 anchors over 3 student epochs (equal-epoch strategy over kept epochs 1, 2, 3): epoch e
  distils from the teacher of epoch e. The same run trained by hand, one epoch at a time, with
  ``teacher.which = 'epoch:e'`` (resumed with force_resume) ends with bit-identical parameters:
  the loop runs exactly the same steps, only the teacher variables change per segment. A
  segment that read the wrong checkpoint would differ at O(1e-3) or more after one epoch."""
  cfg = _kd(teacher)
  cfg.teacher.rco.num_anchors = 3
  rco = train_and_evaluate(cfg, str(tmp_path / "rco"))
  assert rco["finished"] and rco["step"] == 15
  assert [a["teacher_epoch"] for a in rco["rco_anchors"]] == [1, 2, 3]
  assert [(a["start"], a["end"]) for a in rco["rco_anchors"]] == [(0, 1), (1, 2), (2, 3)]

  wd = str(tmp_path / "by_hand")
  for e in (1, 2, 3):
    h = _kd(teacher, max_steps=5 * e, force_resume=True)
    h.teacher.which = f"epoch:{e}"
    by_hand = train_and_evaluate(h, wd)
  assert by_hand["step"] == 15
  for a, b in zip(
    jax.tree_util.tree_leaves(rco["state"].params),
    jax.tree_util.tree_leaves(by_hand["state"].params),
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # Plain KD from the final teacher is a different run (the first two segments differ).
  plain = train_and_evaluate(_kd(teacher), str(tmp_path / "plain"))
  diff = max(
    float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    for a, b in zip(
      jax.tree_util.tree_leaves(rco["state"].params),
      jax.tree_util.tree_leaves(plain["state"].params),
    )
  )
  assert diff > 1e-4


def test_rco_resumes_inside_a_segment(tmp_path, teacher):
  cfg = _kd(teacher)
  cfg.teacher.rco.num_anchors = 3
  full = train_and_evaluate(cfg, str(tmp_path / "full"))
  wd = str(tmp_path / "part")
  cfg.max_steps = 7  # inside the second segment
  first = train_and_evaluate(cfg, wd)
  assert first["step"] == 7 and not first["finished"]
  with open(os.path.join(wd, "checkpoints", "7", "meta", "metadata")) as fh:
    assert json.load(fh)["stage"] == "rco1"
  cfg.max_steps = 0
  resumed = train_and_evaluate(cfg, wd)
  assert resumed["finished"]
  for a, b in zip(
    jax.tree_util.tree_leaves(resumed["state"].params),
    jax.tree_util.tree_leaves(full["state"].params),
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rco_needs_kept_checkpoints(tmp_path, mock_cifar100):
  wd = str(tmp_path / "teacher")
  train_and_evaluate(tiny_run_config(num_epochs=1, tensorboard=False), wd)
  cfg = _kd(wd)
  cfg.teacher.rco.num_anchors = 2  # the run kept only its final epoch
  with pytest.raises(UserError, match="rco"):
    train_and_evaluate(cfg, str(tmp_path / "s"))
