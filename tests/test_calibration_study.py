"""Teacher variants (mixup, label smoothing, temperature-scaled teachers) and the calibration
study driver end to end on tiny real Fashion-MNIST."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_run_config
from kdjax import models
from kdjax.methods import Batch, Outputs, build_method
from kdjax.train.loop import train_and_evaluate
from kdjax.train.teacher import EnsembleTeacher


def test_mixup_ce_mixes_the_two_labels():
  m = build_method(None)
  s = np.random.RandomState(0).randn(4, 5).astype(np.float32)
  y, y2 = np.array([0, 1, 2, 3]), np.array([4, 3, 2, 1])
  total, _ = m.loss(Outputs(s, {}), None, Batch(y, np.arange(4), 1, y2, 0.3))
  logp = jax.nn.log_softmax(s)
  expect = -(0.3 * logp[np.arange(4), y] + 0.7 * logp[np.arange(4), y2])
  np.testing.assert_allclose(total, expect, rtol=1e-6)


def test_teacher_temperature_divides_logits():
  net = models.get("tiny_cnn", num_classes=10)
  x = jnp.ones((2, 16, 16, 3))
  v = net.init(jax.random.PRNGKey(0), x)
  z, _ = EnsembleTeacher([net], temperature=2.5).apply([v], x)
  np.testing.assert_allclose(z, net.apply(v, x)[0] / 2.5, rtol=1e-6)


def _fm(cfg, fmnist_dir, val_examples=0):
  cfg.dataset.name = "fashion_mnist"
  cfg.dataset.idx_dir = fmnist_dir
  cfg.dataset.train_limit, cfg.dataset.eval_limit = 512, 300
  cfg.dataset.val_examples = val_examples
  cfg.batch_size = cfg.optim.reference_batch_size = 64
  return cfg


def test_study_refuses_to_fit_a_temperature_on_a_teacher_without_held_out_data(
  tmp_path, fmnist_dir
):
  from kdjax.calibration.study import calibration_study
  from kdjax.config import base_config, json_normalise
  from kdjax.errors import UserError

  wd = tmp_path / "t_full_split"  # a teacher run trained on its whole training split
  os.makedirs(wd)
  (wd / "config.json").write_text(json.dumps(json_normalise(_fm(base_config(), fmnist_dir))))
  student = _fm(tiny_run_config(num_epochs=1), fmnist_dir)
  with pytest.raises(UserError, match="dataset.val_examples"):
    calibration_study(student, [str(wd)], str(tmp_path / "s"), temperature_scaled=True)
  assert not os.path.exists(tmp_path / "s" / "student_teacher0_raw")  # refused before training
  with pytest.raises(UserError, match="no config.json"):
    calibration_study(
      student, [str(tmp_path / "nothing")], str(tmp_path / "s"), temperature_scaled=True
    )


@pytest.mark.slow
def test_calibration_study_end_to_end(tmp_path, fmnist_dir):
  from kdjax.calibration.study import calibration_study

  t1, t2 = str(tmp_path / "t_plain"), str(tmp_path / "t_mixup_ls")
  train_and_evaluate(_fm(tiny_run_config(num_epochs=1), fmnist_dir, val_examples=128), t1)
  c2 = _fm(tiny_run_config(num_epochs=1), fmnist_dir, val_examples=100)
  c2.dataset.mixup_alpha = 0.4
  c2.method.label_smoothing = 0.1
  train_and_evaluate(c2, t2)
  student = _fm(tiny_run_config(num_epochs=1), fmnist_dir)
  student.method.ce_weight = 0.0
  student.method.terms.kl = dict(weight=1.0, teacher_temperature=1.8, student_temperature=1.8)
  out = str(tmp_path / "study")
  res = calibration_study(
    student, [t1, f"{t2}@final"], out, temperature_scaled=True, idx_dir=fmnist_dir
  )
  rows = res["rows"]
  assert len(rows) == 4 and {r["variant"] for r in rows} == {"raw", "temp_scaled"}
  # T is fitted on each teacher's own held-out examples (128 and 100), none for the raw rows
  assert [r["temperature_fit_examples"] for r in rows] == [0, 128, 0, 100]
  assert all(0.0 <= r["teacher_ece"] <= 1.0 and r["temperature"] > 0 for r in rows)
  assert res["correlations"]["teacher_ece_vs_student"]["n"] == 4
  for f in ("study.csv", "study.json", "study.md", "study.png", "reliability_teacher0_raw.png"):
    assert os.path.getsize(os.path.join(out, f)) > 0
