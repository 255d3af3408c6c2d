"""ITRD against our torch transcription of zkxufo/TTM ``ITLoss`` (tools/goldens/make_itrd_goldens.py):
values and gradients w.r.t. the student feature and the embed, 1e-5 relative in float64 and
1e-4 in float32; the ``itrd`` method term (connector from tap shapes, config-time errors); and
one real jitted train step (``make_steps``, ``tiny_cnn``) whose embed update is the hand-computed
ITRD gradient."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses
from kdjax.methods import Batch, Outputs, build_method

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "itrd.npz")


def _g():
  with np.load(GOLDEN) as f:
    return {k: f[k] for k in f.files}


def _total(f_s, w, b, f_t, alpha, corr_weight, mi_weight):
  emb = f_s @ w.T + b
  return losses.itrd(
    f_s, emb, f_t, alpha=alpha, corr_weight=corr_weight, mi_weight=mi_weight
  ).mean()


# widen 16 -> 24 and same 24 -> 24 at the zkxufo/TTM defaults (α 1.5, λ_corr 2, λ_mutual 1);
# alpha101 32 -> 24 at α 1.01 and mi_off 24 -> 40 at α 1.01, λ_mutual 0 (TTM Appendix A.5)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-5), (np.float32, 1e-4)])
@pytest.mark.parametrize("tag", ["widen", "same", "alpha101", "mi_off"])
def test_itrd_matches_reference_values_and_gradients(tag, dtype, rtol):
  g = _g()
  alpha, corr_weight, mi_weight = (float(v) for v in g[f"{tag}/hparams"])
  with jax.enable_x64(dtype == np.float64):
    a = {k: jnp.asarray(g[f"{tag}/{k}"], dtype) for k in ("f_s", "f_t", "w", "bias")}
    b = a["f_s"].shape[0]
    emb = a["f_s"] @ a["w"].T + a["bias"]
    corr = losses.itrd_correlation(emb, a["f_t"], alpha=alpha)
    f_mi = a["f_s"] if a["f_s"].shape == a["f_t"].shape else emb
    mi = losses.itrd_mutual_information(f_mi, a["f_t"])
    assert corr.shape == mi.shape == (b,)
    assert corr.dtype == mi.dtype == dtype
    np.testing.assert_allclose(float(corr.mean()), g[f"{tag}/corr"], rtol=rtol)
    np.testing.assert_allclose(float(mi.mean()), g[f"{tag}/mi"], rtol=rtol)
    val, grads = jax.value_and_grad(_total, argnums=(0, 1, 2))(
      a["f_s"], a["w"], a["bias"], a["f_t"], alpha, corr_weight, mi_weight
    )
    np.testing.assert_allclose(float(val), g[f"{tag}/total"], rtol=rtol)
    for got, key in zip(grads, ("grad_f_s", "grad_w", "grad_bias")):
      want = g[f"{tag}/{key}"]
      # The bias gradient is exactly 0 in theory for equal widths (standardisation removes it,
      # and the MI part uses the raw feature): measure it against the weight gradient's scale.
      scale = max(np.max(np.abs(want)), 1e-3 * np.max(np.abs(g[f"{tag}/grad_w"])))
      err = np.max(np.abs(np.asarray(got, np.float64) - want)) / scale
      assert err <= rtol, (key, err)


def test_itrd_perfect_correlation_and_self_mi():
  f = jax.random.normal(jax.random.PRNGKey(0), (16, 8))
  assert np.isfinite(float(losses.itrd_correlation(f, 2.0 * f + 1.0, alpha=1.5)[0]))
  # c = 1 exactly gives log2(0) = -inf in the reference too; nearly-equal features -> very low
  near = losses.itrd_correlation(
    f, f + 1e-3 * jax.random.normal(jax.random.PRNGKey(1), f.shape), alpha=1.5
  )
  far = losses.itrd_correlation(f, jax.random.normal(jax.random.PRNGKey(2), f.shape), alpha=1.5)
  assert float(near[0]) < float(far[0]) - 10


def test_itrd_term_builds_connector_from_taps_and_runs():
  m = build_method(
    dict(
      name="wttm+itrd",
      ce_weight=1.0,
      terms=dict(
        wttm=dict(weight=1.0, gamma=0.1),
        itrd=dict(weight=1.0, corr_weight=2.0, mi_weight=1.0, alpha=1.5),
      ),
    )
  )
  s_shapes, t_shapes = {"pooled": (4, 16)}, {"pooled": (4, 24)}
  m = m.bind(s_shapes, t_shapes)
  mods, params, _ = m.init_connectors(s_shapes, t_shapes, jax.random.PRNGKey(0))
  mod, params = mods["itrd"], {"params": params["itrd"]}
  assert params["params"]["linear"]["kernel"].shape == (16, 24)  # student -> teacher width
  rs = np.random.RandomState(0)
  s = Outputs(
    jnp.asarray(rs.randn(4, 10), jnp.float32), {"pooled": jnp.asarray(rs.randn(4, 16), jnp.float32)}
  )
  t = Outputs(
    jnp.asarray(rs.randn(4, 10), jnp.float32), {"pooled": jnp.asarray(rs.randn(4, 24), jnp.float32)}
  )
  per_ex, metrics = m.loss(
    s,
    t,
    Batch(jnp.zeros(4, jnp.int32), jnp.arange(4)),
    connectors={"itrd": lambda *a, **kw: mod.apply(params, *a, **kw)},
  )
  emb = mod.apply(params, (s.taps["pooled"],), (t.taps["pooled"],))
  want = losses.itrd(s.taps["pooled"], emb, t.taps["pooled"]).mean()
  assert float(metrics["itrd"]) == pytest.approx(float(want), rel=1e-6)
  assert per_ex.shape == (4,)


@pytest.mark.parametrize(
  "hp,msg",
  [
    (dict(alpha=0.0), "alpha"),
    (dict(alpha=-1.5), "alpha"),
    (dict(mi_weight=-1.0), "mi_weight"),
    (dict(corr_weight=-2.0), "corr_weight"),
    (dict(alhpa=1.0), "alpha"),
  ],
)
def test_itrd_bad_hyperparameters_fail_at_config_time(hp, msg):
  with pytest.raises(ValueError, match=msg):
    build_method(dict(terms=dict(itrd=dict(weight=1.0, **hp))))


@pytest.mark.parametrize("t_width", [12, 8])  # pooled 32 -> 48 (embed in MI) and 32 -> 32
def test_jitted_train_step_with_itrd_updates_embed_by_the_itrd_gradient(t_width):
  from kdjax import models
  from kdjax.train import state as state_lib
  from kdjax.train.step import make_steps
  import optax

  student = models.get("tiny_cnn", num_classes=10, width=8)
  teacher = models.get("tiny_cnn", num_classes=10, width=t_width)
  x0 = jnp.zeros((1, 16, 16, 3))
  tv = teacher.init(jax.random.PRNGKey(1), x0)
  hp = dict(corr_weight=2.0, mi_weight=1.0, alpha=1.01)
  w_itrd, lr = 0.7, 0.1
  method = build_method(
    dict(
      name="wttm_itrd",
      ce_weight=1.0,
      terms=dict(wttm=dict(weight=2.0, gamma=0.3), itrd=dict(weight=w_itrd, **hp)),
    )
  )
  tx = optax.sgd(lr)
  built = state_lib.init_train_state(
    student, (teacher, tv), method, x0, jax.random.PRNGKey(0), tx=tx
  )
  state, mod = built.state, built.connectors["itrd"]
  assert set(built.connectors) == {"itrd"}
  d_s, d_t = built.student_shapes["pooled"][-1], built.teacher_shapes["pooled"][-1]
  assert state.params["connectors"]["itrd"]["linear"]["kernel"].shape == (d_s, d_t)
  p0 = jax.tree_util.tree_map(np.array, state.params)
  sv = jax.tree_util.tree_map(np.array, built.student_variables)  # the step donates the state
  # signed inputs: with x/255 an untrained tiny_cnn teacher has dead pooled channels, whose zero
  # batch std makes the standardisation 0/0 (NaN, as in the reference)
  to_float = lambda im: im.astype(jnp.float32) / 127.5 - 1.0
  steps = make_steps(
    student=student,
    method=built.method,
    tx=tx,
    train_transform=lambda im, r: to_float(im),
    eval_transform=to_float,
    teacher=teacher,
    connectors=built.connectors,
  )
  rs = np.random.RandomState(0)
  n = 16
  images = rs.randint(0, 255, (n, 16, 16, 3)).astype(np.uint8)
  labels = rs.randint(0, 10, (n,)).astype(np.int32)
  pos = np.array([0, 5, 9, 3, 12, 7, 1, 14], np.int32)
  new_state, metrics = steps.train_indexed(
    state, images, labels, np.arange(n, dtype=np.int32), pos, tv
  )
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["itrd"]))

  # by hand: the same forward (student in train mode, teacher in eval mode), the ITRD loss alone
  x = to_float(images[pos])
  (_, s_taps), _ = student.apply(sv, x, train=True, mutable=["batch_stats"])
  _, t_taps = teacher.apply(tv, x, train=False)
  f_s, f_t = s_taps["pooled"], t_taps["pooled"]
  assert float(jnp.min(jnp.std(f_t, axis=0))) > 0

  def itrd_mean(cp):
    return losses.itrd(f_s, mod.apply({"params": cp}, (f_s,), (f_t,)), f_t, **hp).mean()

  val, g = jax.value_and_grad(itrd_mean)(p0["connectors"]["itrd"])
  assert float(metrics["itrd"]) == pytest.approx(float(val), rel=1e-5)
  # CE and WTTM do not reach the embed: its SGD update is -lr * w_itrd * dITRD/dembed
  got = jax.tree_util.tree_map(
    lambda a, b: (np.asarray(a) - b) / -lr,
    new_state.params["connectors"]["itrd"],
    p0["connectors"]["itrd"],
  )
  # Tolerance from the quantity's scale: the float32 update p1 = p0 - lr*u is rounded to p1's
  # ulp, so (p1 - p0) / -lr carries an absolute error of up to eps32 * |p| / lr (~2e-7 here for
  # |p| ~ 0.18, the same size as the smallest gradients); on top, the step's and the by-hand
  # gradient differ by float32 operation order (~1e-4 of the largest gradient).
  eps32 = float(np.finfo(np.float32).eps)
  for leaf_got, leaf_want, leaf_p in zip(
    jax.tree_util.tree_leaves(got),
    jax.tree_util.tree_leaves(g),
    jax.tree_util.tree_leaves(p0["connectors"]["itrd"]),
  ):
    rounding = 2 * eps32 * float(np.max(np.abs(leaf_p))) / lr
    atol = rounding + 2e-4 * w_itrd * float(np.max(np.abs(leaf_want)))
    np.testing.assert_allclose(leaf_got, w_itrd * np.asarray(leaf_want), rtol=0, atol=atol)
  kernels = jax.tree_util.tree_leaves(
    jax.tree_util.tree_map(
      lambda a, b: not np.allclose(a, b),
      p0["connectors"]["itrd"],
      new_state.params["connectors"]["itrd"],
    )
  )
  assert any(kernels)  # the embed is trained
  moved = jax.tree_util.tree_map(
    lambda a, b: not np.allclose(a, b), p0["student"], new_state.params["student"]
  )
  assert all(jax.tree_util.tree_leaves(moved))
