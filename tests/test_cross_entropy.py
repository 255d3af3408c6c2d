"""kdjax.losses.cross_entropy: the one CE (method CE, SFTN branches, online peers)."""

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import losses


def _numpy_ce(z, y):
  z = z - z.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -np.take_along_axis(logp, y[:, None], -1)[:, 0]


def test_labels_and_one_hot_targets_agree_with_numpy():
  z = jax.random.normal(jax.random.PRNGKey(0), (6, 5)) * 3
  y = jnp.array([0, 4, 2, 2, 1, 3])
  ref = _numpy_ce(np.asarray(z, np.float64), np.asarray(y))
  # float32 log_softmax rounds at eps * max|z| (~1.2e-7 * 9 here): absolute tolerance 4x that.
  atol = 4 * np.finfo(np.float32).eps * float(jnp.abs(z).max())
  np.testing.assert_allclose(losses.cross_entropy(z, y), ref, rtol=1e-6, atol=atol)
  np.testing.assert_allclose(
    losses.cross_entropy(z, jax.nn.one_hot(y, 5)), ref, rtol=1e-6, atol=atol
  )


def test_leading_axes_broadcast_labels_and_soft_targets():
  z = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 7))  # K peers x B x C
  y = jnp.array([1, 0, 6, 3])
  out = losses.cross_entropy(z, y)
  assert out.shape == (3, 4)
  for k in range(3):
    np.testing.assert_allclose(out[k], losses.cross_entropy(z[k], y), rtol=1e-6)
  soft = jnp.full((4, 7), 1 / 7)  # uniform target
  np.testing.assert_allclose(
    losses.cross_entropy(z[0], soft), -jax.nn.log_softmax(z[0]).mean(-1), rtol=1e-6
  )
