"""TTM monitors (kdjax.methods.monitors): the Rényi-entropy identity of Zheng & Yang (ICLR 2024,
Sec. 3) and the monitor-term mechanism (metrics only, no loss, no gradient)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_run_config
from kdjax import losses, models
from kdjax.errors import UserError
from kdjax.methods import Batch, Outputs, build_method
from kdjax.methods import monitors
from kdjax.train import state as state_lib
from kdjax.train.optim import make_optimizer
from kdjax.train.step import make_steps


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def _logits(seed, b=6, k=10, scale=3.0):
  r = np.random.default_rng(seed)
  return jnp.asarray(scale * r.standard_normal((b, k)), jnp.float64)


def test_renyi_entropy_matches_numpy_and_shannon_limit():
  z = _logits(0)
  q = np.asarray(jax.nn.softmax(z, -1))
  for a in (0.25, 0.5, 2.0):
    ref = np.log(np.sum(q**a, -1)) / (1 - a)
    np.testing.assert_allclose(monitors.renyi_entropy(z, a), ref, rtol=1e-12)
  shannon = -np.sum(q * np.log(q), -1)
  np.testing.assert_allclose(monitors.shannon_entropy(z), shannon, rtol=1e-12)
  # H_α -> H as α -> 1, and H_α is non-increasing in α
  np.testing.assert_allclose(monitors.renyi_entropy(z, 1 - 1e-6), shannon, rtol=1e-5)
  assert np.all(
    np.asarray(monitors.renyi_entropy(z, 0.25)) >= np.asarray(monitors.renyi_entropy(z, 2.0))
  )


@pytest.mark.parametrize("temperature", [2.0, 4.0, 10.0])
def test_ttm_decomposition_identity(temperature):
  """D(p̂‖q) = T·D(p̂‖q_T) − (T−1)·H_{1/T}(q) + (T−1)·H(p̂)  (paper Sec. 3)."""
  zs, zt = _logits(1), _logits(2)
  st = monitors.ttm_statistics(zs, zt, gamma=1.0 / temperature)
  t = temperature
  rhs = t * st["kd_kl"] - (t - 1) * st["renyi"] + (t - 1) * st["teacher_entropy"]
  np.testing.assert_allclose(st["ttm_kl"], rhs, rtol=1e-10, atol=1e-12)
  # the terms are not trivially equal: the identity needs all three
  assert float(jnp.max(jnp.abs(st["ttm_kl"] - t * st["kd_kl"]))) > 1e-2


def test_ttm_equals_kd_plus_renyi_regulariser_in_value_and_gradient():
  """With β = λT/(1−λ): H(y,q) + β·D(p̂‖q) = (1/(1−λ))[L_KD − λT(T−1)H_{1/T}(q)] + const(teacher)."""
  t, lam = 4.0, 0.9
  beta = lam * t / (1 - lam)
  zs, zt = _logits(3), _logits(4)
  y = jnp.arange(zs.shape[0]) % zs.shape[1]

  def ce(z):
    return -jnp.take_along_axis(jax.nn.log_softmax(z, -1), y[:, None], -1)[:, 0]

  def l_ttm(z):
    return ce(z) + beta * losses.ttm(z, zt, gamma=1 / t)

  def l_kd_renyi(z):
    l_kd = (1 - lam) * ce(z) + lam * losses.kd(z, zt, temperature=t, t2_scale=True)
    return (l_kd - lam * t * (t - 1) * monitors.renyi_entropy(z, 1 / t)) / (1 - lam)

  const = lam * t * (t - 1) / (1 - lam) * monitors.shannon_entropy(zt / t)
  np.testing.assert_allclose(l_ttm(zs) - l_kd_renyi(zs), const, rtol=1e-10)
  g1 = jax.grad(lambda z: l_ttm(z).sum())(zs)
  g2 = jax.grad(lambda z: l_kd_renyi(z).sum())(zs)
  np.testing.assert_allclose(g1, g2, rtol=1e-9, atol=1e-12)
  # and the TTM gradient is q − p̂ (paper Sec. 3)
  g = jax.grad(lambda z: losses.ttm(z, zt, gamma=1 / t).sum())(zs)
  np.testing.assert_allclose(g, jax.nn.softmax(zs, -1) - jax.nn.softmax(zt / t, -1), atol=1e-12)


def _method(**terms):
  return build_method(dict(name="m", ce_weight=1.0, terms=terms)).bind({}, {})


def test_monitor_logs_metrics_and_adds_no_loss_or_gradient():
  zs, zt = _logits(5), _logits(6)
  b = Batch(jnp.zeros(zs.shape[0], jnp.int32), jnp.arange(zs.shape[0]))
  plain = _method(ttm=dict(weight=45.0, gamma=0.1))
  mon = _method(ttm=dict(weight=45.0, gamma=0.1), ttm_stats=dict(gamma=0.1), entropy=dict())
  tot0, _ = plain.loss(Outputs(zs, {}), Outputs(zt, {}), b)
  tot1, met = mon.loss(Outputs(zs, {}), Outputs(zt, {}), b)
  np.testing.assert_array_equal(tot0, tot1)
  np.testing.assert_allclose(met["ttm_stats/ttm_kl"], losses.ttm(zs, zt, gamma=0.1).mean())
  np.testing.assert_allclose(met["ttm_stats/entropy"], monitors.shannon_entropy(zs).mean())
  np.testing.assert_allclose(met["entropy/entropy"], met["ttm_stats/entropy"])
  g0 = jax.grad(lambda z: plain.loss(Outputs(z, {}), Outputs(zt, {}), b)[0].sum())(zs)
  g1 = jax.grad(lambda z: mon.loss(Outputs(z, {}), Outputs(zt, {}), b)[0].sum())(zs)
  np.testing.assert_array_equal(g0, g1)


def test_monitor_teacher_need_and_validation():
  # a teacher monitor makes the step run the teacher even beside a CE-only loss
  assert _method(ttm_stats=dict(gamma=0.25)).loss_needs_teacher
  assert not _method(entropy=dict()).loss_needs_teacher
  m = _method(entropy=dict(renyi_alpha=0.5))
  z = _logits(7)
  _, met = m.loss(Outputs(z, {}), None, Batch(jnp.zeros(6, jnp.int32), jnp.arange(6)))
  np.testing.assert_allclose(met["entropy/renyi"], monitors.renyi_entropy(z, 0.5).mean())
  with pytest.raises(UserError, match="monitor"):
    build_method(dict(terms=dict(ttm_stats=dict(weight=1.0, gamma=0.25))))
  with pytest.raises(UserError, match="gamma"):
    build_method(dict(terms=dict(ttm_stats=dict(gamma=2.0))))


def test_train_step_logs_monitor_metrics():
  """Through kdjax.train.step: the monitor's metrics come out of the jitted step, the loss and
  the update are those of the method without it, and a CE-only method with a teacher monitor
  runs the teacher (no step change needed)."""
  with jax.enable_x64(False):
    student = models.get("tiny_cnn", num_classes=10)
    teacher = models.get("tiny_cnn", num_classes=10, width=12)
    x0 = jnp.zeros((1, 16, 16, 3))
    sv = student.init(jax.random.PRNGKey(0), x0)
    tv = teacher.init(jax.random.PRNGKey(1), x0)
    tx, _ = make_optimizer(tiny_run_config().optim, steps_per_epoch=10)
    rs = np.random.RandomState(0)
    images = rs.randint(0, 255, (16, 16, 16, 3)).astype(np.uint8)
    labels = rs.randint(0, 10, (16,)).astype(np.int32)
    out = {}
    for name, terms in (
      ("plain", dict(ttm=dict(weight=45.0, gamma=0.1))),
      ("mon", dict(ttm=dict(weight=45.0, gamma=0.1), ttm_stats=dict(gamma=0.1))),
      ("ce_mon", dict(ttm_stats=dict(gamma=0.25))),
    ):
      method = build_method(dict(name=name, ce_weight=1.0, terms=terms))
      fresh = jax.tree_util.tree_map(jnp.array, sv)  # the step donates its state
      st = state_lib.create(
        {"student": fresh["params"], "connectors": {}},
        {"student": fresh["batch_stats"]},
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
      out[name] = steps.train_indexed(
        st, images, labels, np.arange(16, dtype=np.int32), jnp.arange(8), tv
      )
    (s_plain, m_plain), (s_mon, m_mon), (_, m_ce) = out["plain"], out["mon"], out["ce_mon"]
    np.testing.assert_array_equal(m_plain["loss"], m_mon["loss"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, s_plain.params, s_mon.params)
    np.testing.assert_allclose(m_mon["ttm_stats/ttm_kl"], m_mon["ttm"], rtol=1e-6)
    assert set(m_ce) >= {"ttm_stats/entropy", "ttm_stats/ttm_kl", "agreement"}
    assert float(m_ce["ttm_stats/entropy"]) > 0
