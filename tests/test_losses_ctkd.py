"""CTKD (kdjax.losses.ctkd) against our torch transcription of zhengli97/CTKD (``Global_T``, the
gradient-reversal layer, ``DistillKL``, ``CosineDecay``) and logit-standardization-KD's
``DistillKL_logit_stand`` (tools/goldens/make_ctkd_goldens.py, tests/golden/ctkd.npz): the λ
curriculum, the temperature, ``0.9 · KD(τ)`` and its gradients w.r.t. the student logits and the
temperature parameter θ (reversed by λ), for two θ, two λ, with and without standardisation;
1e-5 relative in float64 and 1e-4 in float32 (τ² ≈ 250 times O(1e-2) KL terms; the θ gradient,
a cancelling difference, against its un-cancelled scale)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "ctkd.npz")
TAGS = [f"theta{i}_lam{j}_{v}" for i in (0, 1) for j in (0, 1) for v in ("kd", "ls")]


def _g():
  with np.load(GOLDEN) as f:
    return {k: f[k] for k in f.files}


def _rel(got, want):
  return np.max(np.abs(np.asarray(got, np.float64) - want)) / max(np.max(np.abs(want)), 1e-30)


def _all(s, t, thetas, lams, t_start, t_end, alpha):
  out = {}
  for tag in TAGS:
    i, j, v = int(tag[5]), int(tag[10]), tag[-2:]

    def f(s_, th):
      tau = losses.ctkd_temperature(th, lams[j], t_start=t_start, t_end=t_end)
      return alpha * losses.ctkd(s_, t, tau, standardize=v == "ls").mean(), tau

    (val, tau), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(s, thetas[i])
    out[tag] = (val, tau) + grads
  return out


def test_lambda_curriculum_matches_reference():
  g = _g()
  got = losses.ctkd_lambda(
    jnp.asarray(g["lambda_epochs"]), max_value=0.0, min_value=-1.0, num_loops=10
  )
  # λ in [-1, 0] is (cos + 1) / 2 - 1 in float32: intermediates of size 1 give an absolute error of a
  # few ulp(1) = 1.2e-7 (1.15e-7 measured at epoch 7), so atol is 2 ulp(1); a wrong schedule is off by >1e-3.
  eps32 = float(np.finfo(np.float32).eps)
  np.testing.assert_allclose(got, g["lambda_values"], rtol=1e-6, atol=2 * eps32)
  assert float(got[0]) == 0.0 and float(got[10]) == float(got[12]) == -1.0


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-5), (np.float32, 1e-4)])
def test_ctkd_matches_reference_values_and_gradients(dtype, rtol):
  g = _g()
  t_start, t_end, alpha = (float(v) for v in g["hparams"])
  with jax.enable_x64(dtype == np.float64):
    s = jnp.asarray(g["student"], dtype)
    t = jnp.asarray(g["teacher"], dtype)
    thetas = tuple(jnp.asarray(g[f"theta{i}_lam0_kd/theta"], dtype) for i in (0, 1))
    lams = tuple(jnp.asarray(g[f"theta0_lam{j}_kd/lambda"], dtype) for j in (0, 1))
    got = jax.device_get(
      jax.jit(_all, static_argnums=(4, 5, 6))(s, t, thetas, lams, t_start, t_end, alpha)
    )
  for tag in TAGS:
    val, tau, gs, gth = got[tag]
    assert val.dtype == dtype
    np.testing.assert_allclose(float(tau), g[f"{tag}/temperature"], rtol=rtol)
    np.testing.assert_allclose(float(val), g[f"{tag}/loss"], rtol=rtol)
    assert _rel(gs, g[f"{tag}/grad_student"]) <= rtol, tag
    want = g[f"{tag}/grad_theta"]
    if dtype == np.float64:
      np.testing.assert_allclose(np.asarray(gth, np.float64), want, rtol=rtol)
    else:
      # dL/dθ = λ · t_end · σ'(θ) · dL/dτ, and dL/dτ is a difference of O(L/τ) terms that cancel
      # to ~1e-3 of their size: float32 is measured against that un-cancelled scale.
      th = float(g[f"{tag}/theta"][0])
      sig = 1.0 / (1.0 + np.exp(-th))
      scale = (
        abs(float(g[f"{tag}/lambda"]))
        * t_end
        * sig
        * (1 - sig)
        * abs(float(g[f"{tag}/loss"]))
        / float(g[f"{tag}/temperature"])
      )
      assert np.max(np.abs(np.asarray(gth, np.float64) - want)) <= rtol * scale, tag


def test_gradient_reversal_is_identity_forward_and_scales_backward():
  x = jnp.asarray([0.3, -1.2])
  np.testing.assert_array_equal(losses.gradient_reversal(x, -0.5), x)
  g = jax.grad(lambda a, l: jnp.sum(losses.gradient_reversal(a, l) ** 2), argnums=(0, 1))(x, -0.5)
  np.testing.assert_allclose(g[0], -0.5 * 2 * x, rtol=1e-6)
  assert float(g[1]) == 0.0
