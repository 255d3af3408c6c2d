"""Trainer tests on mock CIFAR-100 (TFDS mock data) with the toy model."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_run_config
from kdjax import models
from kdjax.methods import build_method
from kdjax.train import CheckpointError, NonFiniteLossError, kept_checkpoints, load_model
from kdjax.train import state as state_lib
from kdjax.train.loop import train_and_evaluate
from kdjax.train.optim import make_optimizer
from kdjax.train.step import make_steps


def _tree_allclose(a, b, **kw):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def _kd_setup(seed=0):
  student = models.get("tiny_cnn", num_classes=10)
  teacher = models.get("tiny_cnn", num_classes=10, width=12)
  x = jnp.zeros((1, 16, 16, 3))
  sv = student.init(jax.random.PRNGKey(seed), x)
  tv = teacher.init(jax.random.PRNGKey(seed + 1), x)
  cfg = tiny_run_config().optim
  tx, _ = make_optimizer(cfg, steps_per_epoch=10)
  method = build_method(
    dict(name="kd", ce_weight=0.1, terms=dict(kd=dict(weight=0.9, temperature=4.0)))
  )
  state = state_lib.create(
    {"student": sv["params"], "connectors": {}},
    {"student": sv["batch_stats"]},
    tx,
    jax.random.PRNGKey(7),
  )
  steps = make_steps(
    student=student,
    method=method,
    tx=tx,
    train_transform=lambda im, r: im.astype(jnp.float32) / 255.0,
    eval_transform=lambda im: im.astype(jnp.float32) / 255.0,
    teacher=teacher,
  )
  rs = np.random.RandomState(0)
  images = rs.randint(0, 255, (32, 16, 16, 3)).astype(np.uint8)
  labels = rs.randint(0, 10, (32,)).astype(np.int32)
  return steps, state, tv, images, labels, student, teacher, method


def test_kd_step_updates_student_only_and_matches_manual_loss():
  steps, state, tv, images, labels, student, teacher, method = _kd_setup()
  tv_before = jax.tree_util.tree_map(np.array, tv)
  p0 = jax.tree_util.tree_map(np.array, state.params)
  bs0 = jax.tree_util.tree_map(np.array, state.batch_stats)
  idx = jnp.arange(8)
  # Expected loss computed by hand from the same inputs.
  x = images[:8].astype(np.float32) / 255.0
  (s_logits, _), _ = student.apply(
    {"params": p0["student"], "batch_stats": bs0["student"]}, x, train=True, mutable=["batch_stats"]
  )
  t_logits, _ = teacher.apply(tv, x, train=False)
  logp = jax.nn.log_softmax(s_logits)
  ce = -np.take_along_axis(np.asarray(logp), labels[:8, None], 1)[:, 0]
  pt = jax.nn.softmax(t_logits / 4.0)
  kl = 16.0 * np.sum(pt * (jnp.log(pt) - jax.nn.log_softmax(s_logits / 4.0)), -1)
  expected = np.mean(0.1 * ce + 0.9 * kl)
  new_state, metrics = steps.train_indexed(
    state, images, labels, np.arange(32, dtype=np.int32), idx, tv
  )
  np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
  assert int(new_state.step) == 1
  # The student moved, the teacher (passed in, never part of the state) did not.
  moved = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), p0, new_state.params)
  assert any(jax.tree_util.tree_leaves(moved))
  _tree_allclose(tv, tv_before, rtol=0, atol=0)
  # BN running statistics of the student were updated in training mode.
  assert not np.allclose(
    bs0["student"]["bn0"]["mean"], new_state.batch_stats["student"]["bn0"]["mean"]
  )


def test_step_compiles_once_per_batch_shape():
  steps, state, tv, images, labels, *_ = _kd_setup()
  for i in range(3):
    state, _ = steps.train_indexed(
      state, images, labels, np.arange(32, dtype=np.int32), jnp.arange(8) + 8 * i, tv
    )
  assert steps.train_indexed._cache_size() == 1
  state, _ = steps.train_indexed(
    state, images, labels, np.arange(32, dtype=np.int32), jnp.arange(4), tv
  )  # remainder batch
  assert steps.train_indexed._cache_size() == 2


def test_supervised_run_writes_checkpoints_metrics_and_summary(tmp_path, mock_cifar100):
  wd = str(tmp_path / "teacher")
  cfg = tiny_run_config(num_epochs=3, keep_every_epochs=2)
  s = train_and_evaluate(cfg, wd)
  assert s["finished"] and s["last_top1"] is not None and s["best_top1"] >= s["last_top1"]
  assert os.path.exists(os.path.join(wd, "config.json"))
  assert os.path.exists(os.path.join(wd, "summary.json"))
  recs = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert any("test/top1" in r for r in recs) and any("train/loss" in r for r in recs)
  assert any(f.startswith("events") for f in os.listdir(os.path.join(wd, "tb")))
  kept = kept_checkpoints(wd)
  assert [k["epoch"] for k in kept] == [2, 3]  # every 2 epochs + the final one
  assert all(k["arch"] == "tiny_cnn" and "test_top1" in k for k in kept)
  variables, meta = load_model(wd, {"epoch": 2})
  assert meta["epoch"] == 2 and "batch_stats" in variables


def test_distill_run_uses_teacher_and_reports_agreement(tmp_path, mock_cifar100):
  twd = str(tmp_path / "teacher")
  train_and_evaluate(tiny_run_config(num_epochs=1), twd)
  cfg = tiny_run_config(num_epochs=1)
  cfg.teacher.workdir = twd
  cfg.method.name = "kd"
  cfg.method.ce_weight = 0.1
  cfg.method.terms.kd = dict(weight=0.9, temperature=4.0)
  s = train_and_evaluate(cfg, str(tmp_path / "kd"))
  assert s["teacher_top1"] is not None and s["last_agreement"] is not None
  assert s["teacher"]["arch"] == "tiny_cnn"


def test_resume_after_interruption_gives_identical_parameters(tmp_path, mock_cifar100):
  cfg = tiny_run_config(num_epochs=2, checkpoint_every_steps=3)
  full = train_and_evaluate(cfg, str(tmp_path / "full"))

  class Killed(Exception):
    pass

  def kill_at(step):
    if step == 7:  # mid-epoch 2 (5 steps/epoch), after the step-6 checkpoint
      raise Killed()

  wd = str(tmp_path / "interrupted")
  with pytest.raises(Killed):
    train_and_evaluate(cfg, wd, _step_hook=kill_at)
  resumed = train_and_evaluate(cfg, wd)
  assert int(resumed["state"].step) == int(full["state"].step) == 10
  # Same float32 program on the restored state: bit-exact on CPU; rtol 1e-6 (~8 float32 ulp) allows
  # only a re-fused reduction, atol 1e-7 entries near 0 (their rounding is ~eps32*|lr*grad| << 1e-7).
  _tree_allclose(full["state"].params, resumed["state"].params, rtol=1e-6, atol=1e-7)
  _tree_allclose(full["state"].batch_stats, resumed["state"].batch_stats, rtol=1e-6, atol=1e-7)
  assert resumed["last_top1"] == pytest.approx(full["last_top1"])


def test_relaunching_a_finished_run_keeps_its_summary(tmp_path, mock_cifar100):
  wd = str(tmp_path / "run")
  first = train_and_evaluate(tiny_run_config(num_epochs=1), wd)
  again = train_and_evaluate(tiny_run_config(num_epochs=1), wd)
  assert first["last_top1"] is not None
  assert again["last_top1"] == pytest.approx(first["last_top1"])
  assert again["best_top1"] == pytest.approx(first["best_top1"])
  with open(os.path.join(wd, "summary.json")) as fh:
    assert json.load(fh)["last_top1"] == pytest.approx(first["last_top1"])


def test_max_steps_stops_midway_and_relaunch_finishes(tmp_path, mock_cifar100):
  wd = str(tmp_path / "run")
  part = train_and_evaluate(tiny_run_config(num_epochs=2, max_steps=4), wd)
  assert not part["finished"] and part["step"] == 4
  full = train_and_evaluate(tiny_run_config(num_epochs=2), wd)
  assert full["finished"] and full["step"] == 10


def test_nan_loss_stops_with_message_and_keeps_checkpoints(tmp_path, mock_cifar100):
  wd = str(tmp_path / "run")
  train_and_evaluate(tiny_run_config(num_epochs=1), wd)
  bad = tiny_run_config(num_epochs=3)
  bad.optim.lr = 1e30
  bad.force_resume = True  # a changed lr is refused otherwise (tests/test_faults.py)
  with pytest.raises(NonFiniteLossError, match="non-finite.*intact"):
    train_and_evaluate(bad, wd)
  variables, meta = load_model(wd, "final")
  assert meta["epoch"] == 1
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(variables))


def test_missing_teacher_checkpoint_is_one_clear_error(tmp_path, mock_cifar100):
  cfg = tiny_run_config()
  cfg.teacher.workdir = str(tmp_path / "nope")
  cfg.method.terms.kd = dict(weight=0.9, temperature=4.0)
  with pytest.raises(CheckpointError, match="does not exist"):
    train_and_evaluate(cfg, str(tmp_path / "kd"))


def test_corrupt_resume_checkpoint_is_reported_not_overwritten(tmp_path, mock_cifar100):
  wd = str(tmp_path / "run")
  train_and_evaluate(tiny_run_config(num_epochs=1), wd)
  step_dir = os.path.join(wd, "checkpoints", "5", "state")
  for root, _, files in os.walk(step_dir):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")
  with pytest.raises(CheckpointError, match="corrupt"):
    train_and_evaluate(tiny_run_config(num_epochs=2), wd)
  # The finished model checkpoint survives.
  _, meta = load_model(wd, "final")
  assert meta["epoch"] == 1


def test_config_typo_is_rejected_with_suggestion(tmp_path):
  cfg = tiny_run_config()
  cfg.optim.learning_rate = 0.1
  with pytest.raises(ValueError, match="optim.learning_rate"):
    train_and_evaluate(cfg, str(tmp_path / "x"))


def test_unknown_model_is_rejected(tmp_path, mock_cifar100):
  with pytest.raises(ValueError, match="Unknown model 'resnet9'"):
    train_and_evaluate(tiny_run_config(model="resnet9"), str(tmp_path / "x"))


def test_streamed_imagenet_path_on_mock_data(tmp_path):
  """imagenet2012 is not kept in memory: host-side RandomResizedCrop/flip batches (HostStream)
  feed the same jitted step; exercised on TFDS mock data at a small crop size."""
  import tensorflow_datasets as tfds

  cfg = tiny_run_config(num_epochs=1)
  cfg.dataset.name = "imagenet2012"
  cfg.dataset.image_size = 32
  cfg.dataset.stream_threads = 0
  with tfds.testing.mock_data(num_examples=16):
    s = train_and_evaluate(cfg, str(tmp_path / "inet"))
  assert s["finished"] and s["step"] == 2 and s["last_top1"] is not None


def test_snapshot_ensemble_teacher_from_kept_checkpoints(tmp_path, mock_cifar100):
  from kdjax.train.teacher import EnsembleTeacher

  twd = str(tmp_path / "teacher")
  train_and_evaluate(tiny_run_config(num_epochs=2, keep_every_epochs=1), twd)
  members = (f"{twd}@epoch:1", f"{twd}@epoch:2")
  cfg = tiny_run_config(num_epochs=1)
  cfg.teacher.members = members
  cfg.method.terms.kd = dict(weight=0.9, temperature=4.0)
  s = train_and_evaluate(cfg, str(tmp_path / "kd"))
  assert [m["epoch"] for m in s["teacher"]["members"]] == [1, 2]
  # The ensemble's logits are the mean of its members' logits (LeapLabTHU/CheckpointKD).
  v1, m1 = load_model(twd, {"epoch": 1})
  v2, _ = load_model(twd, {"epoch": 2})
  net = models.get("tiny_cnn", num_classes=100)
  x = jnp.asarray(np.random.RandomState(0).randn(3, 32, 32, 3), jnp.float32)
  z1, z2 = net.apply(v1, x)[0], net.apply(v2, x)[0]
  z, _ = EnsembleTeacher([net, net], "logit_mean").apply([v1, v2], x)
  np.testing.assert_allclose(z, (z1 + z2) / 2, rtol=1e-5, atol=1e-5)
  zp, _ = EnsembleTeacher([net, net], "prob_mean").apply([v1, v2], x)
  np.testing.assert_allclose(
    jax.nn.softmax(zp), (jax.nn.softmax(z1) + jax.nn.softmax(z2)) / 2, rtol=1e-5, atol=1e-6
  )


def _register_visit_counter():
  """A toy stateful term: its explicit state counts how often each dataset index was seen."""
  from kdjax.methods.registry import get_term, register_term

  if get_term("_visits") is not None:
    return

  def init_state(ctx, rng):
    return {"visits": jnp.zeros((ctx.num_examples,), jnp.int32)}

  def fn(s, t, batch, *, state):
    new = {"visits": state["visits"].at[batch.index].add(1)}
    return jnp.zeros(s.logits.shape[0]), new

  register_term("_visits", needs_teacher=False, init_state=init_state)(fn)


def test_stateful_term_state_is_carried_checkpointed_and_indexed_by_dataset_index(
  tmp_path, fmnist_dir
):
  _register_visit_counter()
  cfg = tiny_run_config(num_epochs=2, max_steps=3)
  cfg.dataset.name, cfg.dataset.idx_dir = "fashion_mnist", fmnist_dir
  cfg.dataset.eval_limit = 50
  cfg.dataset.train_split = "train[10:30]"  # dataset indices 10..29 (real data: TFDS mock
  # data ignores split slices)
  cfg.method.terms._visits = dict(weight=1.0)
  wd = str(tmp_path / "run")
  train_and_evaluate(cfg, wd)  # stops after 3 of 3 + 3 steps (checkpointed)
  cfg.max_steps = 0
  s = train_and_evaluate(cfg, wd)  # resumes: the state comes back from Orbax
  visits = np.asarray(s["state"].method_state["_visits"]["visits"])
  assert visits.shape == (30,)
  np.testing.assert_array_equal(visits[:10], 0)
  np.testing.assert_array_equal(visits[10:], 2)  # every example once per epoch, 2 epochs


def test_scale_lr_for_batch(capsys):
  from conftest import tiny_run_config
  from kdjax.train.loop import scale_lr_for_batch

  c = tiny_run_config(batch_size=16)  # lr 0.05 quoted for batch 8
  scale_lr_for_batch(c)
  assert c.optim.lr == 0.05 and "scale_lr_with_batch" in capsys.readouterr().out
  c.optim.scale_lr_with_batch = True
  scale_lr_for_batch(c)
  assert abs(c.optim.lr - 0.1) < 1e-12 and "scaled linearly to 0.1" in capsys.readouterr().out
  c = tiny_run_config()
  scale_lr_for_batch(c)
  assert c.optim.lr == 0.05 and capsys.readouterr().out == ""
