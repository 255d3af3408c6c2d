"""kdjax.models.fold_bn: the folded teacher equals the unfolded one in inference mode.

Every BatchNorm gets random running statistics and affine parameters (a fresh init has mean 0,
var 1, scale 1, bias 0, where folding would be nearly the identity). Tolerance: folding re-rounds
each folded kernel once (``W * s`` cast to float32, relative error <= 2^-24 per weight) and changes
the order of two float32 operations per BN; through a network of depth <= 50 such O(eps32)
relative changes add up to ~1e-6 of an output's scale (observed: <= 2e-6 of max |output| for
ResNet50, <= 1.2e-6 for the models below). The bound is 1e-5 * max |output| for the logits and
every tap: ~80 float32 ulps of the scale, an order of magnitude above the observed error and
three below any real mistake (a BN skipped or applied twice changes outputs by O(1) relative).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import models
from kdjax.errors import UserError
from kdjax.models.fold_bn import find_foldable, fold_bn

RTOL = 1e-5


def _randomize_bn(variables, seed=0):
  rs = np.random.RandomState(seed)

  def stats(path, a):
    key = path[-1].key
    if key == "mean":
      return jnp.asarray(0.3 * rs.randn(*a.shape), a.dtype)
    return jnp.asarray(rs.uniform(0.3, 2.0, a.shape), a.dtype)

  def params(path, a):  # BN scale/bias (conv kernels have 'kernel' as their last key)
    keys = [getattr(p, "key", "") for p in path]
    if keys[-1] == "scale":
      return jnp.asarray(rs.uniform(0.5, 1.5, a.shape), a.dtype)
    if keys[-1] == "bias":
      return jnp.asarray(0.2 * rs.randn(*a.shape), a.dtype)
    return a

  return {
    "params": jax.tree_util.tree_map_with_path(params, variables["params"]),
    "batch_stats": jax.tree_util.tree_map_with_path(stats, variables["batch_stats"]),
  }


def _compare(ref, got):
  (rl, rt), (gl, gt) = ref, got
  assert set(rt) == set(gt)
  for name, a, b in [("logits", rl, gl)] + [(k, rt[k], gt[k]) for k in sorted(rt)]:
    a, b = np.asarray(a), np.asarray(b)
    scale = float(np.abs(a).max())
    assert scale > 0, name
    err = float(np.abs(a - b).max())
    assert err <= RTOL * scale, f"{name}: max |diff| {err:.3g} > {RTOL} x {scale:.3g}"


# (model, input HWC, expected number of folded BNs / total BNs)
CASES = [
  ("resnet8", (32, 32, 3), 9, 9),  # every conv -> BN pair, shortcut BN included
  ("wrn_16_1", (32, 32, 3), 6, 13),  # pre-activation: only bn2 follows a conv
  ("vgg8", (32, 32, 3), 5, 5),  # convolutions with a bias of their own
  ("MobileNetV2", (32, 32, 3), 53, 53),  # depthwise (grouped) convolutions
]


@pytest.mark.parametrize("name,hwc,n_fold,n_bn", CASES, ids=[c[0] for c in CASES])
def test_folded_model_equals_unfolded_in_inference(name, hwc, n_fold, n_bn):
  m = models.get(name, num_classes=10)
  x = jnp.asarray(np.random.RandomState(1).randn(3, *hwc).astype(np.float32))
  v = _randomize_bn(m.init(jax.random.PRNGKey(0), x[:1]))
  fm, fv = fold_bn(m, v, x[:1])
  total = sum(
    1 for p, _ in jax.tree_util.tree_flatten_with_path(v["batch_stats"])[0] if p[-1].key == "mean"
  )
  assert total == n_bn
  assert len(fm.folded) == n_fold
  # Folded BNs are gone from the variables; the unfolded ones keep their statistics.
  left = sum(
    1
    for p, _ in jax.tree_util.tree_flatten_with_path(fv.get("batch_stats", {}))[0]
    if p[-1].key == "mean"
  )
  assert left == n_bn - n_fold
  ref = jax.jit(lambda v, x: m.apply(v, x, train=False))(v, x)
  got = jax.jit(lambda v, x: fm.apply(v, x, train=False))(fv, x)
  _compare(ref, got)


def test_wrn_keeps_the_raw_stem_tap_and_shortcut_unfolded():
  """WRN's ``stem`` tap is the raw conv1 output, also the first block's shortcut: conv1 feeds
  more than its BN, so block1_0/bn1 must not be folded into it."""
  m = models.get("wrn_16_1", num_classes=10)
  v = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  folded = find_foldable(m, v, jnp.zeros((1, 32, 32, 3)))
  assert ("block1_0", "bn1") not in folded
  assert all(path[-1] == "bn2" for path in folded)


class _TwoUses(nn.Module):
  """conv -> BN, and the same conv output also added to the BN's output (a shortcut)."""

  @nn.compact
  def __call__(self, x, train=False):
    z = nn.Conv(4, (3, 3), padding=1, use_bias=False)(x)
    y = nn.BatchNorm(use_running_average=not train)(z)
    z2 = nn.Conv(4, (1, 1), use_bias=True, name="c2")(nn.relu(y + z))
    y2 = nn.BatchNorm(use_running_average=not train, name="bn2")(z2)
    return y2.mean((1, 2)), {"pre": y2}


def test_sole_consumer_rule_on_a_shortcut():
  m = _TwoUses()
  x = jnp.asarray(np.random.RandomState(0).randn(2, 6, 6, 3).astype(np.float32))
  v = _randomize_bn(m.init(jax.random.PRNGKey(0), x))
  fm, fv = fold_bn(m, v, x[:1])
  assert set(fm.folded) == {("bn2",)}  # the first BN's conv output also feeds the shortcut
  _compare(m.apply(v, x), fm.apply(fv, x))


def test_apply_stage_and_inference_only():
  m = models.get("resnet8", num_classes=10)
  x = jnp.asarray(np.random.RandomState(2).randn(2, 32, 32, 3).astype(np.float32))
  v = _randomize_bn(m.init(jax.random.PRNGKey(0), x[:1]))
  fm, fv = fold_bn(m, v, x[:1])
  assert fm.num_stages == m.num_stages
  h_ref, _ = m.apply(v, x, False, method="apply_stem")
  h_got, _ = fm.apply(fv, x, False, method="apply_stem")
  ref = jax.jit(lambda v, h: m.apply(v, h, 1, False, method="apply_stage"))(v, h_ref)
  got = jax.jit(lambda v, h: fm.apply(v, h, 1, False, method="apply_stage"))(fv, h_got)
  np.testing.assert_allclose(
    np.asarray(got[0]), np.asarray(ref[0]), atol=RTOL * float(np.abs(np.asarray(ref[0])).max())
  )
  with pytest.raises(UserError, match="inference-only"):
    fm.apply(fv, x, train=True)
