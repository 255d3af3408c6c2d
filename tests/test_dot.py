"""DOT, the Distillation-Oriented Trainer (Zhao et al., ICCV 2023; mdistiller ``engine/dot.py``).

* the optimiser (``kdjax.train.optim.dot_sgd``) against ``tests/golden/dot.npz``
  (``tools/goldens/make_dot_goldens.py``: our torch transcription of mdistiller's
  ``DistillationOrientedTrainer``, float64): fixed per-step CE / KD gradients through a multistep
  learning rate, and a linear classifier trained on ``0.1 CE + 0.9 KD(T=4)`` whose two gradients
  come from ``Method.loss(..., by_group=...)`` (the train step's own group split);
* ``Δ = 0`` is SGD with momentum on the summed gradient;
* the jitted train step (``make_steps``) with DOT against a hand-computed DOT update of the
  separately differentiated CE and KD losses, and DOT's ``Δ = 0`` step against the SGD step;
* the gradient groups change nothing under SGD (the ``dot`` method block steps bit for bit like
  ``kd``); clear errors for unknown groups, masked trainable sets, Nesterov, Δ out of range;
* ``configs/cifar100/dot.py`` builds for its three pairs.
"""

import importlib
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from kdjax import losses, models
from kdjax.config import base_config, validate
from kdjax.errors import UserError
from kdjax.methods import Batch, Outputs, build_method, preset
from kdjax.train import stages
from kdjax.train import state as state_lib
from kdjax.train.optim import dot_sgd, make_optimizer
from kdjax.train.step import make_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "dot.npz")


@pytest.fixture(scope="module")
def golden():
  return dict(np.load(GOLDEN))


def _close(got, want, rtol):
  """``max|got - want| <= rtol * max|want|`` (a tolerance on the tensor's scale: entries near
  zero would make an element-wise relative error meaningless)."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  err = np.max(np.abs(got - want))
  assert err <= rtol * np.max(np.abs(want)), (err, np.max(np.abs(want)))


# ---- the optimiser against the torch golden --------------------------------------------------
# float32: 6 updates of parameters O(1) each round at ~6e-8 relative, so 1e-5 is far above the
# rounding and far below any semantic slip (a swapped momentum changes step 2 by ~0.15 · lr · g,
# about 1e-2 of the parameter). float64: the same arithmetic in another order, ~1e-15.
@pytest.mark.parametrize("x64,rtol", [(False, 1e-5), (True, 1e-12)])
def test_dot_update_matches_torch_golden(golden, x64, rtol):
  beta, delta, wd = golden["hparams"]
  lrs = golden["grads/lr"]
  n = len([k for k in golden if k.startswith("grads/p0_")])
  with jax.enable_x64(x64):
    dt = jnp.float64 if x64 else jnp.float32
    sched = lambda count: jnp.asarray(lrs, dt)[count]
    tx = dot_sgd(sched, momentum=float(beta), delta=float(delta), weight_decay=float(wd))
    assert tx.groups == ("task", "distill")
    params = [jnp.asarray(golden[f"grads/p0_{i}"], dt) for i in range(n)]
    opt_state = jax.jit(tx.init)(params)
    update = jax.jit(tx.update)
    for k in range(len(lrs)):
      grads = {
        "task": [jnp.asarray(golden[f"grads/g_task_{k}_{i}"], dt) for i in range(n)],
        "distill": [jnp.asarray(golden[f"grads/g_distill_{k}_{i}"], dt) for i in range(n)],
      }
      updates, opt_state = update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      for i in range(n):
        _close(params[i], golden[f"grads/p_{k}_{i}"], rtol)
    assert int(opt_state.count) == len(lrs)


@pytest.mark.parametrize("x64,rtol", [(False, 1e-5), (True, 1e-10)])
def test_dot_linear_classifier_matches_torch_golden(golden, x64, rtol):
  """5 DOT steps of ``z = x W + b`` on ``0.1 CE + 0.9 KD(T=4)``: the group losses from the
  ``dot`` method's ``Method.loss(by_group=('task', 'distill'))``, one ``jax.vjp`` pass per
  group (what the train step does), the update ``dot_sgd``'s."""
  beta, delta, wd = golden["hparams"]
  temperature, ce_w, kd_w, lr, steps = golden["model/hparams"]
  method = build_method(preset("dot", ce_weight=ce_w, weight=kd_w, temperature=temperature))
  groups = ("task", "distill")
  with jax.enable_x64(x64):
    dt = jnp.float64 if x64 else jnp.float32
    x, t = jnp.asarray(golden["model/x"], dt), jnp.asarray(golden["model/t"], dt)
    y = jnp.asarray(golden["model/y"], jnp.int32)
    batch = Batch(y, jnp.arange(y.shape[0]))
    params = {"w": jnp.asarray(golden["model/w0"], dt), "b": jnp.asarray(golden["model/b0"], dt)}
    tx = dot_sgd(float(lr), momentum=float(beta), delta=float(delta), weight_decay=float(wd))
    opt_state = tx.init(params)

    def group_losses(p):
      per_ex, _ = method.loss(
        Outputs(x @ p["w"] + p["b"], {}), Outputs(t, {}), batch, by_group=groups
      )
      return per_ex.mean(-1)

    @jax.jit
    def step(p, s):
      gl, vjp_fn = jax.vjp(group_losses, p)
      eye = jnp.eye(2, dtype=gl.dtype)
      grads = {g: vjp_fn(eye[i])[0] for i, g in enumerate(groups)}
      u, s = tx.update(grads, s, p)
      return optax.apply_updates(p, u), s, gl

    for k in range(int(steps)):
      params, opt_state, gl = step(params, opt_state)
      np.testing.assert_allclose(float(gl[0]), golden[f"model/loss_ce_{k}"], rtol=rtol)
      np.testing.assert_allclose(float(gl[1]), golden[f"model/loss_kd_{k}"], rtol=rtol)
      _close(params["w"], golden[f"model/w_{k}"], rtol)
      _close(params["b"], golden[f"model/b_{k}"], rtol)


def test_dot_delta_zero_is_sgd_momentum_on_the_summed_gradient():
  """With Δ = 0 both buffers use β, so ``b_t + b_d`` is SGD's buffer of ``g_t + g_d`` (weight
  decay on one of them is the same ``λ p`` in the sum). In float64 the two differ only by the
  order of additions over 8 steps: ~1e-16 relative, checked at 1e-12."""
  rng = np.random.default_rng(3)
  shapes = {"a": (4, 3), "b": (3,)}
  cfg = base_config().optim
  cfg.schedule, cfg.lr = "constant", 0.05
  sgd, _ = make_optimizer(cfg, 1)
  cfg.name, cfg.dot_delta = "dot", 0.0
  dot, _ = make_optimizer(cfg, 1)
  with jax.enable_x64(True):
    p0 = {k: jnp.asarray(rng.standard_normal(s)) for k, s in shapes.items()}
    p_sgd, p_dot = p0, p0
    s_sgd, s_dot = sgd.init(p0), dot.init(p0)
    for _ in range(8):
      g_t = {k: jnp.asarray(rng.standard_normal(s)) for k, s in shapes.items()}
      g_d = {k: jnp.asarray(2.0 * rng.standard_normal(s)) for k, s in shapes.items()}
      u, s_sgd = sgd.update(jax.tree_util.tree_map(jnp.add, g_t, g_d), s_sgd, p_sgd)
      p_sgd = optax.apply_updates(p_sgd, u)
      u, s_dot = dot.update({"task": g_t, "distill": g_d}, s_dot, p_dot)
      p_dot = optax.apply_updates(p_dot, u)
    for k in shapes:
      _close(p_dot[k], p_sgd[k], 1e-12)
      assert not np.allclose(p_dot[k], p0[k])


# ---- the jitted train step -------------------------------------------------------------------
def _setup(method_cfg, optim_over):
  student = models.get("tiny_cnn", num_classes=10)
  teacher = models.get("tiny_cnn", num_classes=10, width=12)
  x0 = jnp.zeros((1, 16, 16, 3))
  tv = teacher.init(jax.random.PRNGKey(1), x0)
  cfg = base_config().optim
  cfg.schedule = "constant"
  for k, v in optim_over.items():
    cfg[k] = v
  tx, _ = make_optimizer(cfg, steps_per_epoch=10)
  built = state_lib.init_train_state(
    student, (teacher, tv), build_method(method_cfg), x0, jax.random.PRNGKey(0), tx=tx
  )
  fns = make_steps(
    student=student,
    method=built.method,
    tx=tx,
    connectors=built.connectors,
    train_transform=lambda im, r: im.astype(jnp.float32) / 255.0,
    eval_transform=lambda im: im.astype(jnp.float32) / 255.0,
    teacher=teacher,
  )
  rs = np.random.RandomState(0)
  images = rs.randint(0, 255, (24, 16, 16, 3)).astype(np.uint8)
  labels = rs.randint(0, 10, (24,)).astype(np.int32)
  return student, teacher, tv, built, fns, images, labels


def _run(fns, state, tv, images, labels, steps=3):
  out = []
  for k in range(steps):
    idx = jnp.arange(8 * k, 8 * k + 8)
    state, m = fns.train_indexed(state, images, labels, np.arange(24, dtype=np.int32), idx, tv)
    out.append(jax.tree_util.tree_map(np.asarray, m))
  return state, out


def test_train_step_dot_matches_hand_computed_update():
  """Three jitted DOT steps of tiny_cnn (KD from a wider tiny_cnn) against the DOT formula
  applied in numpy to ``jax.grad`` of the CE part and of the KD part computed separately.
  float32 throughout, the same ops in another arrangement: 1e-5 of each tensor's scale (the
  rounding is ~1e-7; a swapped momentum or misplaced weight decay moves the third step's
  parameters by ~1e-3 of their scale)."""
  lr, beta, delta, wd = 0.05, 0.9, 0.075, 5e-4
  student, teacher, tv, built, fns, images, labels = _setup(
    preset("dot"), dict(name="dot", lr=lr, momentum=beta, dot_delta=delta, weight_decay=wd)
  )
  p = jax.tree_util.tree_map(np.asarray, built.state.params["student"])
  bstats = jax.tree_util.tree_map(np.asarray, built.state.batch_stats["student"])  # donated
  b_t = jax.tree_util.tree_map(np.zeros_like, p)
  b_d = jax.tree_util.tree_map(np.zeros_like, p)
  state, metrics = _run(fns, built.state, tv, images, labels)
  for k in range(3):
    x = images[8 * k : 8 * k + 8].astype(np.float32) / 255.0
    y = labels[8 * k : 8 * k + 8]
    t_logits, _ = teacher.apply(tv, x, train=False)

    def parts(params, bstats=bstats, x=x, y=y, t_logits=t_logits):
      (z, _), upd = student.apply(
        {"params": params, "batch_stats": bstats}, x, train=True, mutable=["batch_stats"]
      )
      ce = losses.cross_entropy(z, jax.nn.one_hot(y, 10)).mean()
      kd = losses.kd(z, t_logits, temperature=4.0).mean()
      return 0.1 * ce, 0.9 * kd, upd["batch_stats"]

    g_t = jax.grad(lambda q: parts(q)[0])(p)
    g_d = jax.grad(lambda q: parts(q)[1])(p)
    l_t, l_d, bstats = parts(p)
    np.testing.assert_allclose(metrics[k]["loss/task"], l_t, rtol=1e-5)
    # KD is a small difference of terms of size T² log K ≈ 37 (cross-entropy minus entropy):
    # its float32 rounding is ~37 · 6e-8 ≈ 2e-6 absolute, so an absolute 1e-5 on top.
    np.testing.assert_allclose(metrics[k]["loss/distill"], l_d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(metrics[k]["loss"], l_t + l_d, rtol=1e-5, atol=1e-5)
    tm = jax.tree_util.tree_map
    b_t = tm(lambda b, g, w: (beta - delta) * b + np.asarray(g) + wd * w, b_t, g_t, p)
    b_d = tm(lambda b, g: (beta + delta) * b + np.asarray(g), b_d, g_d)
    p = tm(lambda w, a, b: w - lr * (a + b), p, b_t, b_d)
  got = state.params["student"]
  for (path, want), g in zip(
    jax.tree_util.tree_leaves_with_path(p), jax.tree_util.tree_leaves(got)
  ):
    _close(g, want, 1e-5)
  assert int(state.step) == 3 and int(state.opt_state.count) == 3


def test_train_step_dot_delta_zero_equals_sgd_step():
  """DOT at Δ = 0 through the whole jitted step (two reverse passes) equals the SGD step of the
  same method (one pass of the total): float32, 3 steps, 1e-5 of each tensor's scale (the two
  differ by the rounding of ``grad(a) + grad(b)`` against ``grad(a + b)``)."""
  common = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)
  _, _, tv, b1, f1, im, lb = _setup(preset("dot"), dict(name="dot", dot_delta=0.0, **common))
  _, _, _, b2, f2, _, _ = _setup(preset("dot"), dict(name="sgd", **common))
  s1, m1 = _run(f1, b1.state, tv, im, lb)
  s2, m2 = _run(f2, b2.state, tv, im, lb)
  for a, b in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s2.params)):
    _close(a, b, 1e-5)
  np.testing.assert_allclose(m1[-1]["loss"], m2[-1]["loss"], rtol=1e-5)
  np.testing.assert_allclose(m1[-1]["l2_grads"], m2[-1]["l2_grads"], rtol=1e-4)


def test_groups_change_nothing_under_sgd():
  """The ``dot`` method block (KD with its term tagged 'distill') under SGD steps bit for bit
  like the untagged ``kd`` preset: the groups only matter to a grouped optimiser."""
  sgd = dict(name="sgd", lr=0.05)
  _, _, tv, b1, f1, im, lb = _setup(preset("dot"), sgd)
  _, _, _, b2, f2, _, _ = _setup(preset("kd"), sgd)
  s1, m1 = _run(f1, b1.state, tv, im, lb)
  s2, m2 = _run(f2, b2.state, tv, im, lb)
  for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert m1[-1].keys() == m2[-1].keys() and "loss/task" not in m1[-1]
  for k in m1[-1]:
    np.testing.assert_array_equal(m1[-1][k], m2[-1][k])


def test_by_group_rows_sum_to_the_total():
  method = build_method(
    dict(
      ce_weight=0.5,
      terms=dict(
        kd=dict(weight=0.9, temperature=4.0),
        ls=dict(loss="kd", weight=0.3, temperature=1.0, group="task"),
        zero=dict(loss="kd", weight=0.0, group="other"),  # weight 0: no group
      ),
    )
  )
  assert method.grad_groups == ("task", "distill")
  rng = np.random.default_rng(0)
  s = Outputs(jnp.asarray(rng.standard_normal((6, 7)), jnp.float32), {})
  t = Outputs(jnp.asarray(rng.standard_normal((6, 7)), jnp.float32), {})
  b = Batch(jnp.asarray(rng.integers(0, 7, 6)), jnp.arange(6))
  total, _ = method.loss(s, t, b)
  rows, _ = method.loss(s, t, b, by_group=("distill", "task", "unused"))
  assert rows.shape == (3, 6)
  np.testing.assert_allclose(rows.sum(0), total, rtol=1e-6)
  np.testing.assert_array_equal(rows[2], 0.0)
  kd = losses.kd(s.logits, t.logits, temperature=4.0)
  np.testing.assert_allclose(rows[0], 0.9 * kd, rtol=1e-6)


# ---- errors ----------------------------------------------------------------------------------
def test_dot_errors():
  cfg = base_config().optim
  cfg.name = "dot"
  cfg.nesterov = True
  with pytest.raises(UserError, match="Nesterov"):
    make_optimizer(cfg, 1)
  cfg.nesterov, cfg.dot_delta = False, 0.2  # beta + delta >= 1
  with pytest.raises(UserError, match="dot_delta"):
    make_optimizer(cfg, 1)
  cfg.dot_delta = -0.1
  with pytest.raises(UserError, match="dot_delta"):
    make_optimizer(cfg, 1)
  cfg.name = "adam"
  with pytest.raises(UserError, match="optim.name"):
    make_optimizer(cfg, 1)
  with pytest.raises(UserError, match="group"):
    build_method(dict(terms=dict(kd=dict(weight=1.0, group=""))))
  # a term in a group the optimiser does not take: refused when the step is built
  method_cfg = dict(ce_weight=0.1, terms=dict(kd=dict(weight=0.9, group="extra")))
  with pytest.raises(UserError, match="gradient group"):
    _setup(method_cfg, dict(name="dot"))
  # a masked trainable set hands DOT one gradient: a clear error, not a silent SGD
  tx = dot_sgd(0.1, weight_decay=5e-4)
  p = {"a": jnp.ones(3), "b": jnp.ones(2)}
  masked = stages.masked(tx, {"a": True, "b": False})
  with pytest.raises(UserError, match="one gradient per loss group"):
    masked.update(p, masked.init(p), p)


def test_dot_config_pairs_build():
  mod = importlib.import_module("configs.cifar100.dot")
  assert set(mod.PAIRS) == {"resnet32x4-resnet8x4", "vgg13-vgg8", "resnet32x4-ShuffleV2"}
  for pair, (teacher, student, kd, dot) in mod.PAIRS.items():
    c = mod.get_config(pair)
    validate(c)
    assert isinstance(c, ml_collections.ConfigDict)
    assert (c.model, c.teacher.workdir) == (student, f"runs/cifar100/teacher_{teacher}")
    assert c.optim.name == "dot" and c.optim.dot_delta == 0.075 and c.optim.momentum == 0.9
    assert c.optim.lr == (0.01 if student == "ShuffleV2" else 0.05)
    assert c.batch_size == 64 and c.num_epochs == 240
    m = build_method(c.method)
    assert m.grad_groups == ("task", "distill") and m.ce_weight == 0.1
    assert dot > kd
    tx, _ = make_optimizer(c.optim, 782)
    assert tx.groups == ("task", "distill")
  with pytest.raises(ValueError, match="Unknown pair"):
    mod.get_config("resnet56-resnet20")


# ---- a whole run (loop, checkpoints, resume) -------------------------------------------------
def test_dot_run_end_to_end_resumes_identically(tmp_path, mock_cifar100):
  """KD + DOT through ``train_and_evaluate`` on mock CIFAR-100: the DOT optimiser state (two
  buffers per parameter) is checkpointed mid-run and a resumed run ends on the parameters of an
  uninterrupted one (same tolerance as ``test_train.py``'s resume test)."""
  from conftest import tiny_run_config
  from kdjax.train.loop import train_and_evaluate

  twd = str(tmp_path / "teacher")
  train_and_evaluate(tiny_run_config(num_epochs=1), twd)

  def cfg():
    c = tiny_run_config(num_epochs=2, checkpoint_every_steps=3)
    c.teacher.workdir = twd
    for k, v in preset("dot").items():
      if k == "terms":
        for tk, tv in v.items():
          c.method.terms[tk] = dict(tv)
      else:
        c.method[k] = v
    c.optim.name, c.optim.dot_delta = "dot", 0.075
    return c

  full = train_and_evaluate(cfg(), str(tmp_path / "full"))
  assert full["finished"] and full["last_agreement"] is not None
  assert isinstance(full["state"].opt_state, tuple) and int(full["state"].opt_state.count) == 10

  class Killed(Exception):
    pass

  def kill_at(step):
    if step == 7:
      raise Killed()

  wd = str(tmp_path / "interrupted")
  with pytest.raises(Killed):
    train_and_evaluate(cfg(), wd, _step_hook=kill_at)
  resumed = train_and_evaluate(cfg(), wd)
  for a, b in zip(
    jax.tree_util.tree_leaves((full["state"].params, full["state"].opt_state)),
    jax.tree_util.tree_leaves((resumed["state"].params, resumed["state"].opt_state)),
  ):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  recs = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert any("train/loss/distill" in r for r in recs), recs[:2]
