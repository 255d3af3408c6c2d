"""The ``lskd`` / ``lsdkd`` terms (kdjax/methods/lskd.py) and configs/cifar100/lskd.py:

* every config cell (14 KD+LS, 14 DKD+LS) builds with the recipe of its docstring (CE weight,
  τ, kd weight, α = w, β = w·β₀, warm-up, lr) and the presets are the reference's defaults;
* the terms are the losses (Z-scored KD / DKD), DKD's warm-up applied by epoch;
* one real jitted train step (``init_train_state`` + ``make_steps``) for resnet20 -> resnet8 with
  both terms: finite loss, the logged terms equal the losses recomputed on the same forward pass,
  and the student's parameters move.
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import losses, models
from kdjax.errors import UserError
from kdjax.methods import Batch, Outputs, build_method, preset
from kdjax.train.state import init_train_state
from kdjax.train.step import make_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_module():
  spec = importlib.util.spec_from_file_location(
    "cfg_lskd", os.path.join(ROOT, "configs", "cifar100", "lskd.py")
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


L = _config_module()


def test_every_config_cell_builds_with_its_recipe():
  assert len(L.KD_PAIRS) == len(L.DKD_PAIRS) == 14 and set(L.KD_PAIRS) == set(L.DKD_PAIRS)
  for pair, (teacher, student, tau, w, published) in L.KD_PAIRS.items():
    c = L.get_config(f"kd:{pair}")
    m = build_method(c.method)
    (term,) = m.terms
    assert (m.ce_weight, term.spec.name, term.weight) == (0.1, "lskd", w)
    assert dict(term.hparams) == dict(temperature=tau)
    assert c.model == student and c.teacher.workdir.endswith(f"teacher_{teacher}")
    assert c.optim.lr == (0.01 if student in L.LOW_LR else 0.05)
    assert 68 < published < 78
  for pair, (teacher, student, tau, w, beta0, published) in L.DKD_PAIRS.items():
    c = L.get_config(f"dkd:{pair}")
    m = build_method(c.method)
    (term,) = m.terms
    assert (m.ce_weight, term.spec.name, term.weight) == (1.0, "lsdkd", 1.0)
    assert dict(term.hparams) == dict(alpha=w, beta=w * beta0, temperature=tau, warmup_epochs=20)
    assert c.model == student and tuple(c.optim.milestones) == (150, 180, 210)
    assert 69 < published < 79
  # the README command's defaults (--base-temp 2 --kd-weight 9) on mdistiller's α 1, β 8
  assert preset("lskd")["terms"]["lskd"] == dict(weight=9.0, temperature=2.0)
  assert preset("lsdkd")["terms"]["lsdkd"] == dict(
    weight=1.0, alpha=9.0, beta=72.0, temperature=2.0, warmup_epochs=20
  )
  for bad in ("resnet32x4-resnet8x4", "ctkd:resnet32x4-resnet8x4", "kd:resnet8-resnet8"):
    with pytest.raises(ValueError):
      L.get_config(bad)


def test_terms_are_the_standardised_losses_with_warmup():
  rs = np.random.RandomState(0)
  s = Outputs(jnp.asarray(rs.randn(6, 100), jnp.float32), {})
  t = Outputs(jnp.asarray(4.0 * rs.randn(6, 100) + 1.0, jnp.float32), {})
  y = jnp.asarray(rs.randint(0, 100, 6), jnp.int32)
  m = build_method(
    dict(
      ce_weight=0.0,
      terms=dict(
        lskd=dict(weight=1.0, temperature=3.0),
        lsdkd=dict(weight=1.0, alpha=2.0, beta=5.0, temperature=2.0, warmup_epochs=20),
      ),
    )
  )
  for epoch, factor in ((1, 0.05), (10, 0.5), (30, 1.0)):
    _, metrics = m.bind({}, {}).loss(s, t, Batch(y, jnp.arange(6), epoch))
    np.testing.assert_allclose(
      float(metrics["lskd"]),
      float(losses.lskd(s.logits, t.logits, temperature=3.0).mean()),
      rtol=1e-6,
    )
    want = factor * losses.lsdkd(s.logits, t.logits, y, alpha=2.0, beta=5.0, temperature=2.0)
    np.testing.assert_allclose(float(metrics["lsdkd"]), float(want.mean()), rtol=1e-5)
  with pytest.raises((UserError, ValueError), match="warmup_epochs"):
    bad = build_method(dict(terms=dict(lsdkd=dict(weight=1.0, warmup_epochs=-1))))
    bad.bind({}, {}).loss(s, t, Batch(y, jnp.arange(6), 1))


def test_jitted_train_step_with_lskd_and_lsdkd():
  student = models.get("resnet8", num_classes=100)
  teacher = models.get("resnet20", num_classes=100)
  x0 = jnp.zeros((1, 32, 32, 3))
  tv = teacher.init(jax.random.PRNGKey(1), x0, train=False)
  method = build_method(
    dict(
      name="ls",
      ce_weight=0.1,
      terms=dict(
        lskd=dict(weight=9.0, temperature=2.0),
        lsdkd=dict(weight=1.0, alpha=9.0, beta=72.0, temperature=2.0, warmup_epochs=20),
      ),
    )
  )
  tx = optax.sgd(0.05, momentum=0.9)
  init = init_train_state(student, (teacher, tv), method, x0, jax.random.PRNGKey(0), tx=tx)
  assert init.connectors == {}
  p0 = jax.device_get(init.state.params)
  bs0 = jax.device_get(init.state.batch_stats)
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
  new_state, metrics = steps.train_batch(init.state, batch, tv)
  assert np.isfinite(float(metrics["loss"]))
  x = batch["image"].astype(np.float32) / 255.0 - 0.5
  z_s = student.apply(
    {"params": p0["student"], "batch_stats": bs0["student"]}, x, train=True, mutable=["batch_stats"]
  )[0][0]
  z_t = teacher.apply(tv, x, train=False)[0]
  np.testing.assert_allclose(
    float(metrics["lskd"]), float(losses.lskd(z_s, z_t, temperature=2.0).mean()), rtol=1e-4
  )
  want = 0.05 * losses.lsdkd(z_s, z_t, batch["label"], alpha=9.0, beta=72.0, temperature=2.0)
  np.testing.assert_allclose(float(metrics["lsdkd"]), float(want.mean()), rtol=1e-4)
  moved = jax.tree_util.tree_map(
    lambda a, b: not np.allclose(a, b), p0["student"], jax.device_get(new_state.params["student"])
  )
  assert all(jax.tree_util.tree_leaves(moved))
