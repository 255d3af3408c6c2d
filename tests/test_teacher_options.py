"""Run-level options of the teacher and the precision policy: ``teacher.fold_bn`` (the steps run
the BN-folded teacher, same outputs), ``precision.student/teacher = 'bfloat16'`` (trains, losses
near float32) and the ensemble's per-member logits tap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_run_config
from kdjax.train import train_and_evaluate
from kdjax.train.teacher import EnsembleTeacher, load_teacher


@pytest.fixture
def teacher_dir(tmp_path, mock_cifar100):
  wd = str(tmp_path / "teacher")
  train_and_evaluate(tiny_run_config(num_epochs=1), wd)
  return wd


def _kd(teacher_dir, **over):
  cfg = tiny_run_config(num_epochs=1, max_steps=3, **over)
  cfg.teacher.workdir = teacher_dir
  cfg.method.name = "kd"
  cfg.method.ce_weight = 0.1
  cfg.method.terms.kd = dict(weight=0.9, temperature=4.0)
  return cfg


def _train_losses(workdir):
  import json

  with open(workdir / "metrics.jsonl") as f:
    recs = [json.loads(line) for line in f if line.strip()]
  return np.array([r["train/loss"] for r in recs if "train/loss" in r])


def test_folded_teacher_gives_the_same_outputs_and_the_same_run(tmp_path, teacher_dir):
  cfg = _kd(teacher_dir)
  plain = load_teacher(cfg.teacher, 100, input_shape=(32, 32, 3))
  cfg.teacher.fold_bn = True
  folded = load_teacher(cfg.teacher, 100, input_shape=(32, 32, 3))
  assert plain.step_module is None and folded.step_module is not None
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
  z0, t0 = plain.run_module.apply(plain.run_variables, x)
  z1, t1 = folded.run_module.apply(folded.run_variables, x)
  # Exact algebra; float32 rounds the folded kernel once more: a few ulps of the logit scale.
  scale = float(jnp.abs(z0).max())
  np.testing.assert_allclose(z1, z0, atol=1e-5 * scale)
  assert set(t1) == set(t0)
  a = train_and_evaluate(_kd(teacher_dir), str(tmp_path / "plain"))
  b = train_and_evaluate(_kd(teacher_dir, **{"teacher.fold_bn": True}), str(tmp_path / "folded"))
  for p, q in zip(
    jax.tree_util.tree_leaves(a["state"].params), jax.tree_util.tree_leaves(b["state"].params)
  ):
    np.testing.assert_allclose(p, q, atol=1e-4 * max(1.0, float(np.abs(p).max())))


def test_bfloat16_student_and_teacher_train_with_losses_near_float32(tmp_path, teacher_dir):
  f32 = train_and_evaluate(_kd(teacher_dir), str(tmp_path / "f32"))
  bf = train_and_evaluate(
    _kd(teacher_dir, **{"precision.student": "bfloat16", "precision.teacher": "bfloat16"}),
    str(tmp_path / "bf16"),
  )
  for leaf in jax.tree_util.tree_leaves(bf["state"].params):
    assert leaf.dtype == jnp.float32 and np.all(np.isfinite(leaf))  # float32 master weights
  lf, lb = _train_losses(tmp_path / "f32"), _train_losses(tmp_path / "bf16")
  assert len(lf) == len(lb) >= 1
  # bfloat16 has an 8-bit mantissa (rel. rounding 2^-8 = 0.4 %); 3 steps of a tiny net: 5 %.
  np.testing.assert_allclose(lb, lf, rtol=0.05)


def test_ensemble_exposes_every_members_scaled_logits():
  class Lin:
    def __init__(self, w):
      self.w = w

    def apply(self, v, x, train=False):
      return x @ (self.w * v), {"pooled": x}

  ens = EnsembleTeacher([Lin(jnp.eye(3)), Lin(2 * jnp.eye(3))], "logit_mean", 2.0)
  x = jnp.arange(6.0).reshape(2, 3)
  z, taps = ens.apply([1.0, 1.0], x)
  assert taps["member_logits"].shape == (2, 2, 3)
  np.testing.assert_allclose(taps["member_logits"][:, 1], 2 * x / 2.0)
  np.testing.assert_allclose(z, (x + 2 * x) / 2 / 2.0)
