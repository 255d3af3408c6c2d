"""Soft Spearman / Kendall rank-correlation losses (CANDIDATES, kdjax.losses.ranking_corr) against
scipy at low temperature; ranks, invariances, finite gradients; the method terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from kdjax.errors import UserError
from kdjax.losses import ranking_corr as rc
from kdjax.methods import Batch, Outputs, build_method


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def _z(seed, b=5, k=20):
  return np.random.default_rng(seed).standard_normal((b, k))


def test_ranks_match_scipy_with_ties():
  x = np.array([[3.0, 1.0, 2.0, 2.0, -1.0, 3.0]])
  np.testing.assert_array_equal(rc.hard_rank(jnp.asarray(x)), stats.rankdata(x, axis=-1))
  np.testing.assert_allclose(
    rc.soft_rank(jnp.asarray(x), 1e-4), stats.rankdata(x, axis=-1), atol=1e-9
  )
  # the soft ranks always sum to K(K+1)/2, like exact ranks
  z = _z(0)
  np.testing.assert_allclose(rc.soft_rank(jnp.asarray(z), 2.0).sum(-1), 20 * 21 / 2, rtol=1e-12)


def test_values_match_scipy_at_low_temperature():
  zs, zt = _z(1), _z(2)
  sp = np.array([stats.spearmanr(a, b)[0] for a, b in zip(zs, zt)])
  kt = np.array([stats.kendalltau(a, b)[0] for a, b in zip(zs, zt)])
  # min gap between student logits ~1e-3 here; τ = 1e-6 makes the relaxation exact to ~1e-9
  gap = np.min(np.abs(zs[:, :, None] - zs[:, None, :]) + np.eye(20) * 9, axis=(1, 2))
  assert gap.min() > 1e-4
  np.testing.assert_allclose(rc.spearman_loss(zs, zt, temperature=1e-6), 1 - sp, atol=1e-9)
  np.testing.assert_allclose(rc.kendall_loss(zs, zt, temperature=1e-6), 1 - kt, atol=1e-9)
  # larger τ: a genuine relaxation, strictly different but close
  d = np.abs(np.asarray(rc.spearman_loss(zs, zt, temperature=0.3)) - (1 - sp))
  assert d.max() > 1e-4 and d.max() < 0.2


def test_extremes_and_teacher_invariance():
  zs = _z(3)
  np.testing.assert_allclose(rc.spearman_loss(zs, zs, temperature=1e-6), 0.0, atol=1e-9)
  np.testing.assert_allclose(rc.spearman_loss(zs, -zs, temperature=1e-6), 2.0, atol=1e-9)
  np.testing.assert_allclose(rc.kendall_loss(zs, -zs, temperature=1e-6), 2.0, atol=1e-9)
  zt = _z(4)
  for f in (rc.spearman_loss, rc.kendall_loss):
    a = f(zs, zt, temperature=0.5)
    # only the teacher's order matters (temperature / calibration of the teacher)
    np.testing.assert_allclose(f(zs, 7.0 * zt + 3.0, temperature=0.5), a, rtol=1e-12)
    np.testing.assert_allclose(f(zs, np.exp(zt), temperature=0.5), a, rtol=1e-12)


def test_gradients_finite_and_useful():
  zs, zt = jnp.asarray(_z(5)), jnp.asarray(_z(6))
  for f in (rc.spearman_loss, rc.kendall_loss):
    g = jax.grad(lambda z: f(z, zt, temperature=0.5).mean())(zs)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0
    # a gradient step on the student improves the correlation
    assert float(f(zs - 2.0 * g, zt, temperature=0.5).mean()) < float(
      f(zs, zt, temperature=0.5).mean()
    )
    # no gradient reaches the teacher
    assert float(jnp.abs(jax.grad(lambda t: f(zs, t, temperature=0.5).sum())(zt)).max()) == 0
  # ties in the student (all equal) stay finite
  g = jax.grad(lambda z: rc.spearman_loss(z, zt, temperature=0.1).sum())(jnp.zeros_like(zs))
  assert np.all(np.isfinite(g))
  # float32 at K = 100
  z32 = jnp.asarray(3 * _z(7, 4, 100), jnp.float32)
  v, g = jax.value_and_grad(lambda z: rc.spearman_loss(z, z32[::-1], temperature=0.1).mean())(z32)
  assert v.dtype == jnp.float32 and np.isfinite(float(v)) and np.all(np.isfinite(g))


def test_terms():
  m = build_method(
    dict(
      name="c",
      ce_weight=0.0,
      terms=dict(spearman=dict(weight=1.0, temperature=0.5), kendall=dict(weight=1.0)),
    )
  ).bind({}, {})
  zs, zt = jnp.asarray(_z(8)), jnp.asarray(_z(9))
  tot, met = m.loss(Outputs(zs, {}), Outputs(zt, {}), Batch(jnp.zeros(5, jnp.int32), jnp.arange(5)))
  np.testing.assert_allclose(met["spearman"], rc.spearman_loss(zs, zt, temperature=0.5).mean())
  np.testing.assert_allclose(
    tot, rc.spearman_loss(zs, zt, temperature=0.5) + rc.kendall_loss(zs, zt, temperature=0.1)
  )
  with pytest.raises(UserError, match="temperature"):
    build_method(dict(terms=dict(spearman=dict(weight=1.0, temperature=0.0))))
