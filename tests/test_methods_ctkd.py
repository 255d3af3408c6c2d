"""The ``ctkd`` term (kdjax/methods/ctkd.py) and configs/cifar100/ctkd.py: every cell builds with
its recipe; one real jitted train step (``init_train_state`` + ``make_steps``, resnet20 ->
resnet8) in which the temperature parameter θ moves by −lr · λ · dL/dθ of the
KD term recomputed outside the step (the reversed gradient, at λ = −1), and the student moves too."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import losses, models
from kdjax.errors import UserError
from kdjax.methods import build_method, preset
from kdjax.train.state import init_train_state
from kdjax.train.step import make_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_module():
  spec = importlib.util.spec_from_file_location(
    "cfg_ctkd", os.path.join(ROOT, "configs", "cifar100", "ctkd.py")
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


C = _config_module()


def test_every_config_cell_builds_with_its_recipe():
  assert len(C.PAIRS) == 14
  for pair, (teacher, student, p_ctkd, p_ls) in C.PAIRS.items():
    for variant, weight, std in (("kd", 0.9, False), ("ls", 9.0, True)):
      c = C.get_config(f"{variant}:{pair}")
      m = build_method(c.method)
      (term,) = m.terms
      assert (m.ce_weight, term.spec.name, term.weight) == (0.1, "ctkd", weight)
      assert dict(term.hparams) == dict(standardize=std)
      assert c.model == student and c.teacher.workdir.endswith(f"teacher_{teacher}")
      assert c.optim.lr == (0.01 if student in C.LOW_LR else 0.05)
    assert 68 < p_ctkd < p_ls < 78
  for bad in ("resnet56-resnet20", "dkd:resnet56-resnet20", "kd:resnet8-resnet8"):
    with pytest.raises(ValueError):
      C.get_config(bad)
  with pytest.raises(UserError, match="t_end"):
    m = build_method(dict(terms=dict(ctkd=dict(weight=1.0, t_end=-1.0)))).bind({}, {})
    m.init_connectors({}, {}, jax.random.PRNGKey(0))


def test_jitted_train_step_moves_theta_by_the_reversed_gradient():
  student = models.get("resnet8", num_classes=100)
  teacher = models.get("resnet20", num_classes=100)
  x0 = jnp.zeros((1, 32, 32, 3))
  tv = teacher.init(jax.random.PRNGKey(1), x0, train=False)
  method = build_method(preset("ctkd"))
  lr = 5.0  # large, so that θ's one-step change (lr · 2e-4) is ~1e4 ulp of a float32 θ ≈ 1
  tx = optax.sgd(lr)
  init = init_train_state(student, (teacher, tv), method, x0, jax.random.PRNGKey(0), tx=tx)
  p0 = jax.device_get(init.state.params)
  bs0 = jax.device_get(init.state.batch_stats)
  np.testing.assert_array_equal(p0["connectors"]["ctkd"]["global_t"], [1.0])
  steps = make_steps(
    student=student,
    method=init.method,
    tx=tx,
    train_transform=lambda im, r: im.astype(jnp.float32) / 255.0 - 0.5,
    eval_transform=lambda im: im.astype(jnp.float32) / 255.0 - 0.5,
    teacher=teacher,
    connectors=init.connectors,
    emit_norms=False,
  )
  rs = np.random.RandomState(0)
  batch = dict(
    image=rs.randint(0, 255, (8, 32, 32, 3)).astype(np.uint8),
    label=rs.randint(0, 100, (8,)).astype(np.int32),
    index=np.arange(8, dtype=np.int32),
  )
  # a state at step 20 (epoch 21, λ = −1 after the 10-epoch curriculum), so that θ's step is
  # far above float32 resolution
  state = init.state.replace(step=jnp.asarray(20, jnp.int32))
  new_state, metrics = steps.train_batch(state, batch, tv)
  assert np.isfinite(float(metrics["loss"]))
  x = batch["image"].astype(np.float32) / 255.0 - 0.5
  z_s = student.apply(
    {"params": p0["student"], "batch_stats": bs0["student"]}, x, train=True, mutable=["batch_stats"]
  )[0][0]
  z_t = teacher.apply(tv, x, train=False)[0]
  lam = losses.ctkd_lambda(21)  # = −1: the curriculum's end

  def term(theta):
    tau = losses.ctkd_temperature(theta, lam)
    return 0.9 * losses.ctkd(z_s, z_t, tau).mean()

  theta0 = jnp.asarray(p0["connectors"]["ctkd"]["global_t"])
  np.testing.assert_allclose(float(metrics["ctkd"]), float(term(theta0)) / 0.9, rtol=1e-4)
  g = jax.grad(term)(theta0)  # already reversed (× λ) by the GRL
  assert float(lam) < 0 and float(g[0]) != 0.0
  step = np.asarray(
    jax.device_get(new_state.params["connectors"]["ctkd"]["global_t"]), np.float64
  ) - np.asarray(theta0, np.float64)
  # g carries float32 cancellation error (~1e-3 relative, see test_losses_ctkd.py)
  np.testing.assert_allclose(step, -lr * np.asarray(g, np.float64), rtol=1e-2)
  # reversed: θ ascends the KD loss (dL/dθ without the GRL is g / λ)
  assert np.sign(step[0]) == np.sign(float(g[0]) / float(lam))
  moved = jax.tree_util.tree_map(
    lambda a, b: not np.allclose(a, b), p0["student"], jax.device_get(new_state.params["student"])
  )
  assert all(jax.tree_util.tree_leaves(moved))
