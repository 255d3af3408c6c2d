"""Logit standardisation (kdjax.losses.standardize) against our torch transcription of
sunshangquan/logit-standardization-KD (tools/goldens/make_lskd_goldens.py, tests/golden/lskd.npz):
the Z-scores, KD+LS at τ = 2, 3 and DKD+LS (α 9, β 72, τ 2) and their gradients w.r.t. student (and,
for KD+LS, teacher) logits, 1e-5 relative in float64; 1e-4 in float32 (the losses are O(1)-O(100) sums of
O(1e-2) terms: float32 rounding of the exps and the std is about 1e-6 relative per op). Plus the
invariances the paper claims and the zero-variance guard."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "lskd.npz")
CASES = ("small", "cifar", "scales")


def _g():
  with np.load(GOLDEN) as f:
    return {k: f[k] for k in f.files}


def _max_rel(got, want):
  got = np.asarray(got, np.float64)
  return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)


def _all(s, t, y, temps, alpha, beta, t_dkd):
  """Every checked quantity of one case, in one jitted program (compile time dominates)."""
  fns = {f"lskd_T{int(T)}": (lambda a, b, T=T: losses.lskd(a, b, temperature=T)) for T in temps}
  fns["lsdkd"] = lambda a, b: losses.lsdkd(a, b, y, alpha=alpha, beta=beta, temperature=t_dkd)
  out = {"z_student": losses.standardize_logits(s), "z_teacher": losses.standardize_logits(t)}
  for name, fn in fns.items():
    out[name + "/per_ex"] = fn(s, t)
    val, (gs, gt) = jax.value_and_grad(lambda a, b: fn(a, b).mean(), argnums=(0, 1))(s, t)
    out[name], out[name + "/grad_student"], out[name + "/grad_teacher"] = val, gs, gt
  return out


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-5), (np.float32, 1e-4)])
@pytest.mark.parametrize("tag", CASES)
def test_standardised_losses_match_reference_values_and_gradients(tag, dtype, rtol):
  g = _g()
  alpha, beta, t_dkd = (float(v) for v in g["dkd_hparams"])
  temps = tuple(float(T) for T in g["kd_temps"])
  with jax.enable_x64(dtype == np.float64):
    s = jnp.asarray(g[f"{tag}/student"], dtype)
    t = jnp.asarray(g[f"{tag}/teacher"], dtype)
    y = jnp.asarray(g[f"{tag}/labels"], jnp.int32)
    fn = jax.jit(_all, static_argnums=(3, 4, 5, 6))
    got = jax.device_get(fn(s, t, y, temps, alpha, beta, t_dkd))
  for side in ("student", "teacher"):
    assert got[f"z_{side}"].dtype == dtype
    assert _max_rel(got[f"z_{side}"], g[f"{tag}/z_{side}"]) <= rtol
  for name in [f"lskd_T{int(T)}" for T in temps] + ["lsdkd"]:
    per_ex = got[name + "/per_ex"]
    assert per_ex.shape == (s.shape[0],) and per_ex.dtype == dtype
    np.testing.assert_allclose(float(got[name]), g[f"{tag}/{name}"], rtol=rtol)
    assert _max_rel(got[name + "/grad_student"], g[f"{tag}/{name}/grad_student"]) <= rtol, name
    if f"{tag}/{name}/grad_teacher" in g:  # KD+LS only (torch's DKD one is NaN)
      assert _max_rel(got[name + "/grad_teacher"], g[f"{tag}/{name}/grad_teacher"]) <= rtol, name
    else:
      assert np.all(np.isfinite(got[name + "/grad_teacher"]))


def test_standardisation_makes_kd_invariant_to_logit_scale_and_shift():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  s = jax.random.normal(k1, (8, 100))
  t = 3.0 * jax.random.normal(k2, (8, 100))
  base = losses.lskd(s, t, temperature=2.0)
  # Any positive affine map of either side leaves the loss unchanged (up to the 1e-7 eps)...
  moved = losses.lskd(0.2 * s - 4.0, 7.0 * t + 30.0, temperature=2.0)
  np.testing.assert_allclose(moved, base, rtol=1e-5)
  # ... which plain KD is not: the check can fail.
  assert not np.allclose(
    losses.kd(0.2 * s - 4.0, t, temperature=2.0), losses.kd(s, t, temperature=2.0), rtol=1e-2
  )
  # The student matching the teacher up to an affine map gives zero loss.
  np.testing.assert_allclose(losses.lskd(0.5 * t + 1.0, t, temperature=2.0), 0.0, atol=1e-5)


def test_standardised_rows_have_zero_mean_unit_unbiased_std():
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 10)) * 5.0 + 2.0
  z = np.asarray(losses.standardize_logits(x), np.float64)
  np.testing.assert_allclose(z.mean(-1), 0.0, atol=1e-6)
  np.testing.assert_allclose(z.std(-1, ddof=1), 1.0, rtol=1e-5)
  zb = np.asarray(losses.standardize_logits(x, ddof=0), np.float64)
  np.testing.assert_allclose(zb.std(-1), 1.0, rtol=1e-5)


def test_constant_row_gives_finite_values_and_gradients():
  s = jnp.concatenate([jnp.full((1, 10), 3.0), jax.random.normal(jax.random.PRNGKey(2), (1, 10))])
  t = jax.random.normal(jax.random.PRNGKey(3), (2, 10))
  z = losses.standardize_logits(s)
  np.testing.assert_array_equal(z[0], 0.0)
  val, grad = jax.value_and_grad(lambda a: losses.lskd(a, t, temperature=2.0).mean())(s)
  assert np.isfinite(float(val)) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("kw,msg", [(dict(eps=-1.0), "eps"), (dict(ddof=2), "ddof")])
def test_bad_arguments_raise(kw, msg):
  with pytest.raises(ValueError, match=msg):
    losses.standardize_logits(jnp.ones((2, 3)), **kw)
