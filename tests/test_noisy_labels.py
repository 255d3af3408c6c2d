"""Teacher-free noisy-soft-label control (Ojha et al. App. 11.2): kdjax/losses/noisy_labels.py and
the ``noisy_labels`` term: the soft-label construction against numpy, the noise's determinism and
variance, the term inside a method without a teacher, and one jitted train step with no teacher."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.ojha import noisy_labels as cfg
from kdjax import models
from kdjax.config import validate
from kdjax.losses import noisy_labels as nl
from kdjax.methods import Batch, Outputs, build_method, preset
from kdjax.train.state import init_train_state
from kdjax.train.step import make_steps


def _np_softmax(a, axis=-1):
  a = a - a.max(axis, keepdims=True)
  e = np.exp(a)
  return e / e.sum(axis, keepdims=True)


def test_soft_labels_match_numpy_and_noise_free_case():
  rs = np.random.RandomState(0)
  y = rs.randint(0, 10, 6)
  noise = rs.randn(6, 10).astype(np.float32) * np.sqrt(0.2)
  p = np.asarray(nl.noisy_soft_labels(y, noise, temperature=0.15))
  ref = _np_softmax((np.eye(10)[y] + noise) / 0.15)
  # float32 logits (1 + noise) / 0.15 of size ~10 carry ~1e-6 absolute rounding, i.e. ~1e-6 relative
  # error in every probability (rtol 1e-5); atol 1e-7 only floors the exp(-20)-sized entries.
  np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
  p0 = np.asarray(nl.noisy_soft_labels(y, np.zeros((6, 10), np.float32), temperature=0.15))
  py = np.exp(1 / 0.15) / (np.exp(1 / 0.15) + 9)  # softmax(e_y / 0.15) at the label
  np.testing.assert_allclose(p0[np.arange(6), y], py, rtol=1e-5)


@pytest.mark.parametrize("form,t_s", [("cross_entropy", 1.0), ("cross_entropy", 2.0), ("kl", 2.0)])
def test_loss_matches_numpy(form, t_s):
  rs = np.random.RandomState(1)
  z = rs.randn(5, 7).astype(np.float32) * 3
  y = rs.randint(0, 7, 5)
  noise = rs.randn(5, 7).astype(np.float32) * np.sqrt(0.2)
  got = np.asarray(
    nl.noisy_label_kd(z, y, noise, label_temperature=0.15, student_temperature=t_s, form=form)
  )
  p = _np_softmax((np.eye(7)[y] + noise).astype(np.float64) / 0.15)
  logq = np.log(_np_softmax(z.astype(np.float64) / t_s))
  ref = -(p * logq).sum(1)
  if form == "kl":
    ref += (p * np.log(np.where(p > 0, p, 1))).sum(1)
  np.testing.assert_allclose(got, t_s**2 * ref, rtol=2e-5, atol=1e-5)
  # gradient of the cross-entropy form w.r.t. the student logits: T_s (softmax(z / T_s) − p̃)
  if form == "cross_entropy":
    g = jax.grad(lambda a: nl.noisy_label_kd(a, y, noise, student_temperature=t_s).sum())(z)
    np.testing.assert_allclose(g, t_s * (np.exp(logq) - p), atol=1e-5)


def test_noise_is_per_example_deterministic_and_has_the_variance():
  idx = np.arange(2000)
  a = np.asarray(nl.label_noise(3, idx, 10, variance=0.2))
  np.testing.assert_array_equal(a, np.asarray(nl.label_noise(3, idx, 10, variance=0.2)))
  perm = np.random.RandomState(0).permutation(2000)[:64]
  np.testing.assert_array_equal(np.asarray(nl.label_noise(3, perm, 10, variance=0.2)), a[perm])
  assert not np.allclose(a, np.asarray(nl.label_noise(4, idx, 10, variance=0.2)))
  e1 = np.asarray(nl.label_noise(3, idx[:8], 10, epoch=1))
  e2 = np.asarray(nl.label_noise(3, idx[:8], 10, epoch=2))
  assert not np.allclose(e1, e2) and not np.allclose(e1, a[:8])
  # 20,000 draws: the sample variance's standard error is 0.2 * sqrt(2 / 20000) = 0.002
  assert abs(a.var() - 0.2) < 0.01 and abs(a.mean()) < 0.02


def test_term_in_a_method_needs_no_teacher():
  m = build_method(preset("noisy_labels"))
  assert not m.needs_teacher and m.ce_weight == 0.5
  m = m.bind({}, None)
  rs = np.random.RandomState(2)
  z = jnp.asarray(rs.randn(4, 10).astype(np.float32))
  y = jnp.asarray(rs.randint(0, 10, 4))
  idx = jnp.asarray([5, 9, 100, 7])
  per_ex, metrics = m.loss(Outputs(z, {}), None, Batch(y, idx, 3))
  noise = nl.label_noise(0, idx, 10, variance=0.2)
  term = nl.noisy_label_kd(z, y, noise)
  ce = -jax.nn.log_softmax(z)[jnp.arange(4), y]
  np.testing.assert_allclose(per_ex, 0.5 * ce + 0.5 * term, rtol=1e-5)
  np.testing.assert_allclose(metrics["noisy_labels"], term.mean(), rtol=1e-5)
  # resample=True: the epoch changes the soft labels
  r = build_method(preset("noisy_labels", resample=True)).bind({}, None)
  l1 = r.loss(Outputs(z, {}), None, Batch(y, idx, 1))[0]
  l2 = r.loss(Outputs(z, {}), None, Batch(y, idx, 2))[0]
  assert not np.allclose(l1, l2)


def test_jitted_train_step_without_teacher():
  student = models.get("tiny_cnn", num_classes=10)
  x0 = jnp.zeros((1, 8, 8, 3))
  method = build_method(preset("noisy_labels"))
  tx = optax.sgd(0.1)
  init = init_train_state(student, None, method, x0, jax.random.PRNGKey(0), tx=tx)
  steps = make_steps(
    student=student,
    method=init.method,
    tx=tx,
    train_transform=lambda im, r: im.astype(jnp.float32) / 255.0,
    eval_transform=lambda im: im.astype(jnp.float32) / 255.0,
    teacher=None,
    connectors=init.connectors,
    emit_norms=False,
  )
  rs = np.random.RandomState(0)
  batch = dict(
    image=rs.randint(0, 255, (8, 8, 8, 3)).astype(np.uint8),
    label=rs.randint(0, 10, (8,)).astype(np.int32),
    index=np.arange(8, dtype=np.int32),
  )
  p0 = jax.device_get(init.state.params["student"])  # the step donates its input state
  new_state, metrics = steps.train_batch(init.state, batch, {})
  assert np.isfinite(float(metrics["loss"])) and float(metrics["noisy_labels"]) > 0
  moved = jax.tree_util.tree_map(
    lambda a, b: not np.allclose(a, b), p0, jax.device_get(new_state.params["student"])
  )
  assert any(jax.tree_util.tree_leaves(moved))


def test_control_configs_build_a_teacher_free_method():
  for arg, model in (("imagenet", "resnet18_imagenet"), ("fashion_mnist,quick", "resnet8")):
    c = cfg.get_config(arg)
    validate(c)
    m = build_method(c.method)
    assert c.model == model and not m.needs_teacher and c.teacher.workdir == ""
    (term,) = m.terms
    assert term.spec.name == "noisy_labels" and term.weight == 0.5 and m.ce_weight == 0.5
    assert dict(term.hparams)["noise_variance"] == 0.2
    assert dict(term.hparams)["label_temperature"] == 0.15
  assert cfg.get_config("imagenet").num_epochs == 100
  with pytest.raises(ValueError):
    cfg.get_config("cifar100")
