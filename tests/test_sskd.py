"""SSKD as a method: rotation views, the view-aware loss, the teacher-head init stage, a run.

* ``rotation_views`` lays out row ``b*4 + k`` = ``rot90(flip?(x_b), k)`` with one flip per example;
* ``Method.loss`` on ``4B`` rows = 0.1 CE + 0.9 KD on the normal rows + 2.7 tf + 10 ss (by hand);
* the init stage trains the teacher head alone, the main stage the student and its head with the
  teacher head frozen; the train step runs the student on ``4B`` rows;
* a tiny end-to-end run on mock CIFAR-100 (1 head epoch + 1 student epoch) finishes and its
  summary counts the stage; bad SSKD configs fail at build time.
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_run_config
from kdjax import losses
from kdjax.data import augment
from kdjax.losses import selfsup
from kdjax.methods import Batch, Outputs, build_method
from kdjax.methods.sskd import ROTATION_VIEWS
from kdjax.train.loop import train_and_evaluate
from test_stages import _changed_leaves, _np, _run, _setup, _to_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sskd_config_module():
  spec = importlib.util.spec_from_file_location(
    "sskd_cfg", os.path.join(ROOT, "configs/cifar100/sskd.py")
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


SSKD = _sskd_config_module()


def _method_cfg(head_epochs=1):
  c = tiny_run_config()
  SSKD.sskd_method(c, head_epochs=head_epochs, head_lr=0.05, head_milestones=())
  return c.method.to_dict()


def test_rotation_views_layout():
  rs = np.random.RandomState(0)
  x = rs.randint(0, 255, (3, 6, 6, 2)).astype(np.uint8)
  out = np.asarray(augment.rotation_views(x, jax.random.PRNGKey(1), lambda v, r: v))
  assert out.shape == (12, 6, 6, 2)
  flips = 0
  for b in range(3):
    base = out[4 * b]
    flipped = not np.array_equal(base, x[b])
    if flipped:
      np.testing.assert_array_equal(base, x[b][:, ::-1])
      flips += 1
    for k in range(4):
      np.testing.assert_array_equal(out[4 * b + k], np.rot90(base, k))
  assert 0 <= flips <= 3
  with pytest.raises(ValueError, match="square"):
    augment.rotation_views(np.zeros((2, 4, 6, 1)), jax.random.PRNGKey(0), lambda v, r: v)


def test_method_loss_is_the_reference_combination():
  method = build_method(_method_cfg())
  assert method.views is ROTATION_VIEWS and method.init.method.views is ROTATION_VIEWS
  assert method.init.milestones == ()
  rs = np.random.RandomState(0)
  b, k = 5, 7
  s_log = jnp.asarray(rs.randn(4 * b, k), jnp.float32)
  t_log = jnp.asarray(rs.randn(4 * b, k) * 2, jnp.float32)
  s_pool = jnp.asarray(rs.randn(4 * b, 6), jnp.float32)
  t_pool = jnp.asarray(rs.randn(4 * b, 9), jnp.float32)
  y = jnp.asarray(rs.randint(0, k, b))
  w1 = jnp.asarray(rs.randn(6, 6), jnp.float32)
  w2 = jnp.asarray(rs.randn(9, 9), jnp.float32)
  conn = {"ss": lambda s_taps, t_taps, train=False: (s_taps[0] @ w1, t_taps[0] @ w2)}
  per_ex, metrics = method.loss(
    Outputs(s_log, {"pooled": s_pool}),
    Outputs(t_log, {"pooled": t_pool}),
    Batch(y, jnp.arange(b)),
    connectors=conn,
  )
  assert per_ex.shape == (b,)
  ce = -jnp.take_along_axis(jax.nn.log_softmax(s_log[::4]), y[:, None], 1)[:, 0]
  ref = (
    0.1 * ce
    + 0.9 * losses.kd(s_log[::4], t_log[::4], temperature=4.0)
    + 2.7 * selfsup.sskd_transform_kd(s_log, t_log, y, temperature=4.0, ratio=1.0)
    + 10.0 * selfsup.sskd_similarity(s_pool @ w1, t_pool @ w2, temperature=0.5, ratio=0.75)
  )
  np.testing.assert_allclose(per_ex, ref, rtol=1e-5)
  assert set(metrics) == {"ce", "kd", "tf", "ss"}
  with pytest.raises(ValueError, match="4 x 5 rows"):
    method.loss(
      Outputs(s_log[:b], {"pooled": s_pool[:b]}),
      Outputs(t_log[:b], {"pooled": t_pool[:b]}),
      Batch(y, jnp.arange(b)),
      connectors=conn,
    )


def test_head_stage_then_student_stage_train_the_right_parameters():
  env = _setup(_method_cfg(head_epochs=1))
  state = env["state"]
  p0, bs0 = _np(state.params), _np(state.batch_stats)
  assert set(env["mods"]) == {"ss"}  # one connector, shared
  state, ms = _run(env["init_fns"], env, state, 3)
  p1 = _np(state.params)
  assert _changed_leaves(p0, p1) == {
    f"connectors/ss/teacher_head/{m}/{w}" for m in ("fc1", "fc2") for w in ("kernel", "bias")
  }
  assert _changed_leaves(bs0, _np(state.batch_stats)) == set()  # student BN untouched
  assert all(np.isfinite(m["ss"]) for m in ms)
  # The head loss on fixed inputs falls while it trains (the SS task is learnable).
  state = _to_main(env, state)
  state, ms2 = _run(env["main_fns"], env, state, 3)
  p2 = _np(state.params)
  changed = _changed_leaves(p1, p2)
  assert not any(c.startswith("connectors/ss/teacher_head") for c in changed)
  assert any(c.startswith("connectors/ss/student_head") for c in changed)
  assert any(c.startswith("student/") for c in changed)
  assert {"ce", "kd", "tf", "ss", "accuracy", "agreement"} <= set(ms2[-1])
  assert all(np.isfinite(m["loss"]) for m in ms2)


def test_main_step_runs_the_student_on_four_views():
  env = _setup(_method_cfg(head_epochs=1))
  seen = []
  student = env["student"]
  orig = student.apply

  def spy(variables, x, *a, **kw):
    seen.append(x.shape[0])
    return orig(variables, x, *a, **kw)

  object.__setattr__(student, "apply", spy)
  try:
    state = _to_main(env, env["state"])
    _run(env["main_fns"], env, state, 3)
  finally:
    object.__setattr__(student, "apply", orig)
  # batch 8 x 4 rotations; traced once for the 3 steps (no recompilation per step)
  assert seen == [32], seen


def test_sskd_config_resolves_and_bad_values_fail():
  for pair in SSKD.PAIRS:
    c = SSKD.get_config(pair)
    m = build_method(c.method)
    assert m.views is ROTATION_VIEWS and m.init.epochs == 60 and m.init.milestones == (30, 45)
  assert SSKD.get_config("vgg13-MobileNetV2").optim.lr == 0.01
  bad = _method_cfg()
  bad["init"]["milestones"] = (3,)
  with pytest.raises(ValueError, match="milestones"):
    build_method(bad)
  bad = _method_cfg()
  bad["terms"]["tf"]["temperature"] = 0.0
  with pytest.raises(ValueError, match="temperature"):
    build_method(bad)
  with pytest.raises(ValueError, match="Unknown pair"):
    SSKD.get_config("resnet8-resnet8")


def test_sskd_rejects_mixup():
  cfg = tiny_run_config()
  cfg.dataset.mixup_alpha = 0.2
  from kdjax.train.step import make_steps

  with pytest.raises(ValueError, match="mixup"):
    make_steps(
      student=None,
      method=build_method(_method_cfg()),
      tx=None,
      train_transform=None,
      eval_transform=None,
      mixup_alpha=0.2,
    )


def test_tiny_sskd_run_end_to_end(tmp_path, mock_cifar100):
  twd = str(tmp_path / "teacher")
  train_and_evaluate(tiny_run_config(num_epochs=1, model_kwargs=dict(width=12)), twd)
  cfg = tiny_run_config(num_epochs=1)
  SSKD.sskd_method(cfg, head_epochs=1, head_lr=0.05, head_milestones=())
  cfg.teacher.workdir = twd
  summary = train_and_evaluate(cfg, str(tmp_path / "sskd"))
  assert summary["init_epochs"] == 1 and summary["finished"]
  assert summary["step"] == summary["total_steps"] == 10  # 5 head + 5 student steps
  assert np.isfinite(summary["last_top1"])
