"""ReviewKD against our torch transcription of mdistiller ``ReviewKD.py``
(tools/goldens/make_reviewkd_goldens.py, tests/golden/reviewkd.npz): the HCL loss on the
reference's ABF outputs, and the whole ABF chain (kdjax.methods.reviewkd.ReviewKDConnector, with
the torch parameters) + HCL: outputs, loss, gradients w.r.t. the student features and every ABF
parameter, BatchNorm running means; 1e-5 relative in float64, 1e-4 in float32 (the chain is three
convs and two BNs deep per level over O(1) features; float32 rounding is ~1e-6 per op).
Gradients are compared as max |error| / max |reference| per array."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses
from kdjax.methods.reviewkd import ReviewKDConnector, resize_nearest

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "reviewkd.npz")
CASES = ("same", "resize")
# torch name -> (flax module, flax param); convs are (out, in, kh, kw) -> (kh, kw, in, out)
PARAMS = {
  "conv1.0.weight": ("conv1", "kernel"),
  "conv1.1.weight": ("bn1", "scale"),
  "conv1.1.bias": ("bn1", "bias"),
  "conv2.0.weight": ("conv2", "kernel"),
  "conv2.1.weight": ("bn2", "scale"),
  "conv2.1.bias": ("bn2", "bias"),
  "att_conv.0.weight": ("att_conv", "kernel"),
  "att_conv.0.bias": ("att_conv", "bias"),
}


def _g():
  with np.load(GOLDEN) as f:
    return {k: f[k] for k in f.files}


def _to_flax(a):
  return a.transpose(2, 3, 1, 0) if a.ndim == 4 else a


def _max_rel(got, want):
  return np.max(np.abs(np.asarray(got, np.float64) - want)) / max(np.max(np.abs(want)), 1e-30)


def _case(g, tag, dtype):
  n = int(g[f"{tag}/num_levels"])
  s = [jnp.asarray(g[f"{tag}/student{i}"], dtype) for i in range(n)]
  t = [jnp.asarray(g[f"{tag}/teacher{i}"], dtype) for i in range(n)]
  params = {}
  for i in range(n):
    for tname, (mod, p) in PARAMS.items():
      key = f"{tag}/abf{i}/{tname}"
      if key in g:
        params.setdefault(f"abf{i}", {}).setdefault(mod, {})[p] = jnp.asarray(
          _to_flax(g[key]), dtype
        )
  return n, s, t, params


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-5), (np.float32, 1e-4)])
@pytest.mark.parametrize("tag", CASES)
def test_hcl_on_reference_abf_outputs(tag, dtype, rtol):
  g = _g()
  n = int(g[f"{tag}/num_levels"])
  with jax.enable_x64(dtype == np.float64):
    fs = [jnp.asarray(g[f"{tag}/abf_out{i}"], dtype) for i in range(n)]
    ft = [jnp.asarray(g[f"{tag}/teacher{i}"], dtype) for i in range(n)]
    per_ex = jax.jit(losses.hcl)(fs, ft)
    assert per_ex.shape == (fs[0].shape[0],) and per_ex.dtype == dtype
    np.testing.assert_allclose(float(per_ex.mean()), g[f"{tag}/hcl"], rtol=rtol)


# float32 on one case only: each case is a separate (slow on CPU) compilation of the chain
@pytest.mark.parametrize(
  "tag,dtype,rtol",
  [("same", np.float64, 1e-5), ("resize", np.float64, 1e-5), ("same", np.float32, 1e-4)],
)
def test_abf_chain_and_hcl_match_reference_values_and_gradients(tag, dtype, rtol):
  g = _g()
  with jax.enable_x64(dtype == np.float64):
    n, s, t, params = _case(g, tag, dtype)
    conn = ReviewKDConnector()
    # abstract init (cheap): the module builds exactly the reference's parameter set (no more,
    # no fewer, same shapes); BatchNorm starts from mean 0 / var 1 as in torch
    variables = jax.eval_shape(lambda: conn.init(jax.random.PRNGKey(0), s, t, train=True))
    got_shapes = jax.tree.map(lambda a: a.shape, variables["params"])
    assert got_shapes == jax.tree.map(jnp.shape, params)
    stats = jax.tree_util.tree_map_with_path(
      lambda path, a: (jnp.zeros if path[-1].key == "mean" else jnp.ones)(a.shape, a.dtype),
      variables["batch_stats"],
    )

    def loss_fn(p, feats):
      outs, upd = conn.apply(
        {"params": p, "batch_stats": stats}, feats, t, train=True, mutable=["batch_stats"]
      )
      return losses.hcl(outs, t).mean(), (outs, upd["batch_stats"])

    (val, (outs, new_stats)), (gp, gs) = jax.jit(
      jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
    )(params, s)
  np.testing.assert_allclose(float(val), g[f"{tag}/hcl"], rtol=rtol)
  for i in range(n):
    assert outs[i].dtype == dtype
    assert _max_rel(outs[i], g[f"{tag}/abf_out{i}"]) <= rtol, i
    assert _max_rel(gs[i], g[f"{tag}/grad_student{i}"]) <= rtol, i
    for tname, (mod, p) in PARAMS.items():
      key = f"{tag}/abf{i}/{tname}"
      if key in g:
        assert _max_rel(gp[f"abf{i}"][mod][p], _to_flax(g[key + "/grad"])) <= rtol, key
    for bn, tname in (("bn1", "conv1.1"), ("bn2", "conv2.1")):
      assert (
        _max_rel(new_stats[f"abf{i}"][bn]["mean"], g[f"{tag}/abf{i}/{tname}.running_mean"]) <= rtol
      )


def test_hcl_levels_and_zero_on_equal_maps():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(k1, (2, 8, 8, 3))
  b = jax.random.normal(k2, (2, 8, 8, 3))
  np.testing.assert_allclose(losses.hcl([a], [a]), 0.0, atol=0)
  # hand-computed: 8x8 map uses levels 4, 2, 1 with weights 1/2, 1/4, 1/8
  mse = lambda x, y: np.mean((np.asarray(x) - np.asarray(y)) ** 2, axis=(1, 2, 3))
  pool = lambda x, l: np.asarray(x).reshape(2, l, 8 // l, l, 8 // l, 3).mean(axis=(2, 4))
  want = (
    mse(a, b) + sum(w * mse(pool(a, l), pool(b, l)) for w, l in ((0.5, 4), (0.25, 2), (0.125, 1)))
  ) / 1.875
  np.testing.assert_allclose(losses.hcl([a], [b]), want, rtol=1e-5)
  # a 1x1 map keeps only its MSE
  np.testing.assert_allclose(
    losses.hcl([a[:, :1, :1]], [b[:, :1, :1]]), mse(a[:, :1, :1], b[:, :1, :1]), rtol=1e-6
  )


def test_resize_nearest_matches_torch_rule():
  x = jnp.arange(2 * 3 * 3).reshape(1, 3, 3, 2).astype(jnp.float32)
  up = resize_nearest(x, (6, 6))
  np.testing.assert_array_equal(up[0, :, :, 0], np.repeat(np.repeat(x[0, :, :, 0], 2, 0), 2, 1))
  down = resize_nearest(jnp.arange(16.0).reshape(1, 4, 4, 1), (2, 2))
  np.testing.assert_array_equal(down[0, :, :, 0], [[0, 2], [8, 10]])


def test_hcl_rejects_mismatched_maps():
  with pytest.raises(ValueError, match="one teacher map per student map"):
    losses.hcl([jnp.zeros((2, 4, 4, 3))], [])
  with pytest.raises(ValueError, match="stage 0"):
    losses.hcl([jnp.zeros((2, 4, 4, 3))], [jnp.zeros((2, 4, 4, 5))])
