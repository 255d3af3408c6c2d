"""SSKD losses against torch goldens (tools/goldens/make_sskd_goldens.py) and their invariants."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses
from kdjax.losses import selfsup

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "golden", "sskd.npz"))
CASES = ("default", "filtered")


def _g(tag, k):
  return GOLDEN[f"{tag}/{k}"]


def _inputs(tag, dtype):
  cast = lambda k: jnp.asarray(_g(tag, k), dtype)
  return (
    cast("s_logits"),
    cast("t_logits"),
    cast("s_rep"),
    cast("t_rep"),
    jnp.asarray(_g(tag, "target")),
  )


@pytest.mark.parametrize("tag", CASES)
@pytest.mark.parametrize("x64", [True, False])
def test_parts_and_gradients_match_torch(tag, x64):
  dtype, rtol = (jnp.float64, 1e-5) if x64 else (jnp.float32, 1e-4)
  with jax.enable_x64(x64):
    s_logits, t_logits, s_rep, t_rep, target = _inputs(tag, dtype)
    ratio_tf, ratio_ss, kd_t, tf_t, ss_t = _g(tag, "hparams")
    b = target.shape[0]
    tf = lambda z: selfsup.sskd_transform_kd(
      z, t_logits, target, temperature=tf_t, ratio=float(ratio_tf)
    ).mean()
    ss = lambda r: selfsup.sskd_similarity(r, t_rep, temperature=ss_t, ratio=float(ratio_ss)).mean()
    head = lambda r: selfsup.sskd_head_ce(r).mean()
    np.testing.assert_allclose(tf(s_logits), _g(tag, "tf"), rtol=rtol)
    np.testing.assert_allclose(ss(s_rep), _g(tag, "ss"), rtol=rtol)
    np.testing.assert_allclose(head(t_rep), _g(tag, "head_ce"), rtol=rtol)
    atol = 1e-12 if x64 else 1e-7
    np.testing.assert_allclose(
      jax.grad(tf)(s_logits), _g(tag, "grad_tf_s_logits"), rtol=rtol, atol=atol
    )
    np.testing.assert_allclose(jax.grad(ss)(s_rep), _g(tag, "grad_ss_s_rep"), rtol=rtol, atol=atol)
    np.testing.assert_allclose(
      jax.grad(head)(t_rep), _g(tag, "grad_head_t_rep"), rtol=rtol, atol=atol
    )
    # The normal-view parts are kdjax's ordinary CE and KD on rows 0, 4, 8, ...
    kd = losses.kd(s_logits[::4], t_logits[::4], temperature=kd_t).mean()
    np.testing.assert_allclose(kd, _g(tag, "kd"), rtol=rtol)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(s_logits[::4]), target[:, None], 1).mean()
    np.testing.assert_allclose(ce, _g(tag, "ce"), rtol=rtol)
    assert selfsup.sskd_transform_kd(s_logits, t_logits, target).shape == (b,)


@pytest.mark.parametrize("tag", CASES)
def test_kept_rows_match_torch(tag):
  with jax.enable_x64(True):
    _, t_logits, _, t_rep, target = _inputs(tag, jnp.float64)
    ratio_tf, ratio_ss, _, tf_t, _ = _g(tag, "hparams")
    _, t_aug = selfsup._split(t_logits, 4, "t")
    p = jax.nn.softmax(t_aug / tf_t, -1)
    keep_tf = selfsup.error_filter(selfsup.target_rank(p, jnp.repeat(target, 3)), float(ratio_tf))
    np.testing.assert_array_equal(keep_tf, _g(tag, "keep_tf"))
    sim, tgt, _ = selfsup._similarity(t_rep, 4, "t")
    keep_ss = selfsup.error_filter(selfsup.target_rank(sim, tgt), float(ratio_ss))
    np.testing.assert_array_equal(keep_ss, _g(tag, "keep_ss"))
  assert not _g("filtered", "keep_tf").all() and not _g("default", "keep_ss").all()


def test_error_filter_rule():
  rank = jnp.array([0, 3, 1, 0, 2, 1, 5, 0])
  # 3 correct, 5 wrong; int(5 * 0.6) = 3 wrong kept: ranks 1, 1, 2 (rows 2, 5, 4).
  np.testing.assert_array_equal(selfsup.error_filter(rank, 0.6), [1, 0, 1, 1, 1, 1, 0, 1])
  assert selfsup.error_filter(rank, 1.0).all()
  np.testing.assert_array_equal(selfsup.error_filter(rank, 0.0), rank == 0)
  # Python's int(w * r) in float64: 10 * 0.7 = 7.000000000000001 -> 7 (float32 would give 6).
  rank10 = jnp.arange(1, 11)
  assert int(selfsup.error_filter(rank10, 0.7).sum()) == 7
  with pytest.raises(ValueError, match="ratio"):
    selfsup.error_filter(rank, 1.5)


def test_per_example_redistribution_and_layout_errors():
  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.standard_normal((12, 5)), jnp.float32)
  t = jnp.asarray(rng.standard_normal((12, 5)), jnp.float32)
  y = jnp.array([0, 1, 2])
  v = selfsup.sskd_transform_kd(s, t, y, ratio=1.0)
  # batchmean over all 9 rows == mean of the (3,) per-example values
  p = jax.nn.softmax(t.reshape(3, 4, 5)[:, 1:] / 4.0, -1)
  logq = jax.nn.log_softmax(s.reshape(3, 4, 5)[:, 1:] / 4.0, -1)
  ref = jnp.sum(p * (jnp.log(p) - logq)) / 9 * 16.0
  np.testing.assert_allclose(v.mean(), ref, rtol=1e-5)
  with pytest.raises(ValueError, match="num_views"):
    selfsup.sskd_transform_kd(s[:10], t[:10], y)
  with pytest.raises(ValueError, match="labels"):
    selfsup.sskd_transform_kd(s, t, jnp.array([0, 1]))
  with pytest.raises(ValueError, match="temperature"):
    selfsup.sskd_similarity(s, t, temperature=0.0)
