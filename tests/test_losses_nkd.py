"""NKD (kdjax.losses.nkd) against our torch transcription of yzd-v/cls_KD ``NKDLoss``
(tools/goldens/make_nkd_goldens.py, tests/golden/nkd.npz): values and gradients w.r.t. the
student logits at the reference's CIFAR-100 (T 3, γ 3.5) and ImageNet (T 1, γ 1.5) settings,
1e-5 relative in float64 and 1e-4 in float32 (O(10-100) sums of O(1) terms); the ``nkd`` term."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses
from kdjax.methods import Batch, Outputs, build_method, preset

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "nkd.npz")


def _g():
  with np.load(GOLDEN) as f:
    return {k: f[k] for k in f.files}


def _all(s, t, y, settings):
  """All settings' values and gradients in one jitted program (``settings``: a static tuple)."""
  out = {}
  for name, (temp, gamma) in settings:
    fn = lambda a: losses.nkd(a, t, y, temperature=temp, gamma=gamma).mean()
    out[name + "/per_ex"] = losses.nkd(s, t, y, temperature=temp, gamma=gamma)
    out[name], out[name + "/grad_student"] = jax.value_and_grad(fn)(s)
  return out


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-5), (np.float32, 1e-4)])
@pytest.mark.parametrize("tag", ["small", "cifar100"])
def test_nkd_matches_reference_values_and_gradients(tag, dtype, rtol):
  g = _g()
  settings = {
    "cifar": tuple(map(float, g["settings"][0])),
    "imagenet": tuple(map(float, g["settings"][1])),
  }
  with jax.enable_x64(dtype == np.float64):
    s = jnp.asarray(g[f"{tag}/student"], dtype)
    t = jnp.asarray(g[f"{tag}/teacher"], dtype)
    y = jnp.asarray(g[f"{tag}/labels"], jnp.int32)
    got = jax.device_get(jax.jit(_all, static_argnums=3)(s, t, y, tuple(settings.items())))
  for name in settings:
    assert got[name + "/per_ex"].shape == (s.shape[0],)
    assert got[name + "/per_ex"].dtype == dtype
    np.testing.assert_allclose(float(got[name]), g[f"{tag}/{name}"], rtol=rtol)
    want = g[f"{tag}/{name}/grad_student"]
    err = np.max(np.abs(np.asarray(got[name + "/grad_student"], np.float64) - want))
    assert err / np.max(np.abs(want)) <= rtol, name


def test_nkd_properties():
  rs = np.random.RandomState(0)
  s = jnp.asarray(rs.randn(4, 10), jnp.float32)
  y = jnp.asarray(rs.randint(0, 10, 4), jnp.int32)
  # γ = 0 leaves the target part  −p_y log q_y
  p_y = jax.nn.softmax(3.0 * s)[jnp.arange(4), y]
  np.testing.assert_allclose(
    losses.nkd(s, 3.0 * s, y, gamma=0.0), -p_y * jax.nn.log_softmax(s)[jnp.arange(4), y], rtol=1e-6
  )
  # the non-target part depends on the non-target logits only: moving the target logit of
  # both sides changes only the target part
  bump = 5.0 * jax.nn.one_hot(y, 10)
  a = losses.nkd(s, 2.0 * s, y, temperature=3.0, gamma=1.0) - losses.nkd(
    s, 2.0 * s, y, temperature=3.0, gamma=0.0
  )
  b = losses.nkd(s + bump, 2.0 * s + bump, y, temperature=3.0, gamma=1.0) - losses.nkd(
    s + bump, 2.0 * s + bump, y, temperature=3.0, gamma=0.0
  )
  np.testing.assert_allclose(a, b, rtol=1e-5)
  with pytest.raises(ValueError, match="temperature"):
    losses.nkd(s, s, y, temperature=0.0)


def test_nkd_term_and_preset():
  m = build_method(preset("nkd"))
  assert m.ce_weight == 1.0 and m.terms[0].hparams == dict(temperature=3.0, gamma=3.5)
  rs = np.random.RandomState(1)
  s = Outputs(jnp.asarray(rs.randn(6, 100), jnp.float32), {})
  t = Outputs(jnp.asarray(2.0 * rs.randn(6, 100), jnp.float32), {})
  y = jnp.asarray(rs.randint(0, 100, 6), jnp.int32)
  _, metrics = m.bind({}, {}).loss(s, t, Batch(y, jnp.arange(6)))
  want = losses.nkd(s.logits, t.logits, y, temperature=3.0, gamma=3.5).mean()
  np.testing.assert_allclose(float(metrics["nkd"]), float(want), rtol=1e-6)
