"""KDSVD (kdjax/losses/kdsvd.py, kdjax/methods/kdsvd.py, configs/cifar100/kdsvd.py).

* goldens: our torch transcription of RepDistiller's ``KDSVD`` (tools/goldens/make_kdsvd_goldens.py,
  tests/golden/kdsvd.npz; teacher vectors sign-fixed as kdjax documents), values and gradients
  w.r.t. every student tap, 1e-5 relative in float64; float32 at 5e-5 (measured ~2e-6: float32
  SVD vectors carry ~1e-6 relative error, amplified by the 1/(σ_j² − σ_i²) factors of gaps
  ~20 %; the margin covers other LAPACK builds);
* the SVD backward equals autodiff through ``jnp.linalg.svd`` where singular values are distinct
  (tall, wide and square maps) and central differences where the discarded ones tie, and stays
  finite for repeated and zero singular values (where plain autodiff returns NaN);
* invariances (sign of either input, per-example split), zero teacher gradient;
* bad hyper-parameters / taps -> UserError, at call and at bind time;
* the ``kdsvd`` term through ``build_method`` + ``Method.loss`` on real tap shapes, every config
  pair binds, and one real jitted train step (``init_train_state`` + ``make_steps``, resnet20 ->
  resnet8) whose logged term equals the loss recomputed outside the step.
"""

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import models
from kdjax.errors import UserError
from kdjax.losses.kdsvd import kdsvd, right_singular_vectors
from kdjax.methods import Batch, Outputs, build_method, preset
from kdjax.train.state import init_train_state
from kdjax.train.step import make_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "kdsvd.npz")


def _g():
  with np.load(GOLDEN) as f:
    return {k: f[k] for k in f.files}


def _case(g, tag, dtype):
  n = int(g[f"{tag}/num_taps"])
  fs = [jnp.asarray(g[f"{tag}/student__{i}"], dtype) for i in range(n)]
  ft = [jnp.asarray(g[f"{tag}/teacher__{i}"], dtype) for i in range(n)]
  return fs, ft, int(g[f"{tag}/k"]), int(g[f"{tag}/extra"])


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-5), (np.float32, 5e-5)])
@pytest.mark.parametrize("tag", ["k1", "k2"])
def test_golden_values_and_gradients(tag, dtype, rtol):
  g = _g()
  with jax.enable_x64(dtype == np.float64):
    fs, ft, k, extra = _case(g, tag, dtype)

    @jax.jit
    def run(fs, ft):
      per = kdsvd(fs, ft, k=k, extra=extra)
      grads = jax.grad(lambda fs: kdsvd(fs, ft, k=k, extra=extra).mean())(fs)
      return per, grads

    per, grads = jax.device_get(run(fs, ft))
  assert per.shape == (fs[0].shape[0],) and per.dtype == dtype
  np.testing.assert_allclose(per, g[f"{tag}/per_example"], rtol=rtol)
  np.testing.assert_allclose(per.mean(), g[f"{tag}/loss"], rtol=rtol)
  for i, got in enumerate(grads):
    want = g[f"{tag}/grad__{i}"]
    err = np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want))
    assert err <= rtol, (tag, i, err)


def test_golden_inputs_show_the_teacher_sign_matters():
  """The reference leaves the teacher's sign to LAPACK, and on these inputs torch's own signs give
  another loss: the sign rule is a real decision, not a no-op."""
  g = _g()
  assert not np.isclose(g["k1/loss_lapack_sign"], g["k1/loss"], rtol=1e-3)


def _auto_vectors(x, n):
  return jnp.swapaxes(jnp.linalg.svd(x, full_matrices=False)[2], -1, -2)[..., :n]


@pytest.mark.parametrize("m,n_cols", [(12, 5), (4, 9), (6, 6)])
def test_svd_backward_equals_autodiff_for_distinct_singular_values(m, n_cols):
  rs = np.random.RandomState(m)
  with jax.enable_x64(True):
    x = jnp.asarray(rs.randn(3, m, n_cols))
    nv = min(3, m, n_cols)
    w = jnp.asarray(rs.randn(3, n_cols, nv))

    @jax.jit
    def run(x):
      mine = jax.grad(lambda x: jnp.sum(w * right_singular_vectors(x, nv)))(x)
      auto = jax.grad(lambda x: jnp.sum(w * _auto_vectors(x, nv)))(x)
      return right_singular_vectors(x, nv), _auto_vectors(x, nv), mine, auto

    v, v_auto, mine, auto = jax.device_get(run(x))
  np.testing.assert_allclose(v, v_auto, atol=1e-14)
  np.testing.assert_allclose(mine, auto, rtol=1e-9, atol=1e-12)


def _map_with_singular_values(rs, sig, m, n):
  q1, _ = np.linalg.qr(rs.randn(m, len(sig)))
  q2, _ = np.linalg.qr(rs.randn(n, len(sig)))
  return q1 @ np.diag(sig) @ q2.T


def test_svd_backward_keeps_small_well_separated_values_in_float32():
  """σ = logspace(0, −3, 6) on a 1024 × 6 map in float32: the small values are 4x apart but their
  squares differ by less than eps·1024·σ_max²; the tie rule compares σ (the SVD's accuracy), so
  every coupling is kept and the backward equals float32 autodiff (a rule on σ² differences
  would drop the smallest pair and be ~90 % off)."""
  rs = np.random.RandomState(5)
  sig = np.logspace(0, -3, 6)
  x = jnp.asarray(np.stack([_map_with_singular_values(rs, sig, 1024, 6) for _ in range(2)]))
  x = x.astype(jnp.float32)
  w = jnp.asarray(rs.randn(2, 6, 6), jnp.float32)
  fix = lambda v: v * jnp.sign(jnp.sum(v, axis=-2, keepdims=True))

  @jax.jit
  def run(x):
    mine = jax.grad(lambda x: jnp.sum(w * fix(right_singular_vectors(x, 6))))(x)
    auto = jax.grad(lambda x: jnp.sum(w * fix(_auto_vectors(x, 6))))(x)
    return mine, auto

  mine, auto = jax.device_get(run(x))
  assert np.max(np.abs(mine - auto)) <= 1e-5 * np.max(np.abs(auto))


def test_svd_backward_with_tied_discarded_values_matches_central_differences():
  """σ = (3, 1, 1, 0.5): the top vector is unique and differentiable while 1/(σ_j² − σ_i²) of the
  tied (discarded) pair is unbounded; the tie-safe backward, which drops it, is exact there."""
  rs = np.random.RandomState(1)
  with jax.enable_x64(True):
    x = jnp.asarray(_map_with_singular_values(rs, [3.0, 1.0, 1.0, 0.5], 7, 4)[None])
    w = jnp.asarray(rs.randn(1, 4, 1))

    def f(x):
      v = right_singular_vectors(x, 1)
      return jnp.sum(w * v * jnp.sign(jnp.sum(v)))  # sign-fixed, so differences are smooth

    g = np.asarray(jax.jit(jax.grad(f))(x))
    eps = 1e-6
    dirs = np.eye(x.size).reshape(x.size, *x.shape) * eps
    fp = jax.jit(jax.vmap(lambda d: f(x + d) - f(x - d)))(jnp.asarray(dirs))
    fd = np.asarray(fp).reshape(x.shape) / (2 * eps)
  np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_finite_for_repeated_and_zero_singular_values(dtype):
  rs = np.random.RandomState(2)
  with jax.enable_x64(dtype == np.float64):
    # exactly repeated non-zero values among the used vectors; dead (zero) channels give
    # repeated zero singular values; an all-zero map
    tied = np.stack([_map_with_singular_values(rs, [3.0, 2.0, 2.0, 1.0], 16, 4) for _ in range(2)])
    tap1 = jnp.asarray(tied.reshape(2, 4, 4, 4), dtype)
    tap2 = jnp.asarray(np.abs(rs.randn(2, 2, 2, 8)), dtype).at[..., :3].set(0.0)
    tap2 = tap2.at[1].set(0.0)
    tap3 = jnp.asarray(rs.randn(2, 4, 4, 4), dtype).at[..., 1:3].set(1.0)  # equal columns
    fs = [tap1, tap2, tap1]
    ft = [jnp.asarray(np.abs(rs.randn(*f.shape)), dtype) for f in fs]

    @jax.jit
    def run(fs, ft, tap3):
      val, grads = jax.value_and_grad(lambda fs: kdsvd(fs, ft).mean())(fs)
      g3 = jax.grad(lambda a: kdsvd([fs[0], a], [ft[0], jnp.abs(a)]).mean())(tap3)
      auto = jax.grad(lambda a: jnp.sum(_auto_vectors(a.reshape(2, 4, 8), 4)))(fs[1])
      return val, grads, g3, auto

    val, grads, g3, auto = jax.device_get(run(fs, ft, tap3))
  assert np.isfinite(float(val))
  assert all(np.all(np.isfinite(x)) for x in grads)
  assert float(np.max(np.abs(grads[0]))) > 0  # not finite by being zeroed everywhere
  assert np.all(np.isfinite(g3))
  assert not np.all(np.isfinite(auto))  # what the tie-safe backward avoids


def test_invariances_and_teacher_gradient():
  g = _g()
  with jax.enable_x64(True):
    fs, ft, k, extra = _case(g, "k1", np.float64)

    @jax.jit
    def run(fs, ft):
      f = functools.partial(kdsvd, k=k, extra=extra)
      return dict(
        base=f(fs, ft),
        neg_s=f([-a for a in fs], ft),  # −X has the same singular vectors up to sign
        neg_t=f(fs, [-a for a in ft]),
        one=f([a[1:2] for a in fs], [a[1:2] for a in ft]),  # example 1 alone
        scaled=f([3.0 * a for a in fs], ft),  # scaling leaves the vectors unchanged
        same=f(ft, ft),
        grad_t=jax.grad(lambda ft: f(fs, ft).mean())(ft),
      )

    r = jax.device_get(run(fs, ft))
  for key in ("neg_s", "neg_t", "scaled"):
    np.testing.assert_allclose(r[key], r["base"], rtol=1e-9, err_msg=key)
  np.testing.assert_allclose(r["one"], r["base"][1:2], rtol=1e-12)
  assert all(float(np.max(np.abs(x))) == 0.0 for x in r["grad_t"])
  np.testing.assert_allclose(r["same"], 0.0, atol=1e-20)


def test_bad_arguments_raise_user_error():
  rs = np.random.RandomState(3)
  fs = [jnp.asarray(rs.randn(2, 4, 4, c), jnp.float32) for c in (4, 8)]
  for kw, match in (
    (dict(k=0), "k"),
    (dict(k=1.5), "k"),
    (dict(k=True), "k"),
    (dict(extra=-1), "extra"),
    (dict(extra=None), "extra"),
  ):
    with pytest.raises(UserError, match=match):
      kdsvd(fs, fs, **kw)
  with pytest.raises(UserError, match="length >= 2"):
    kdsvd(fs[:1], fs[:1])
  with pytest.raises(UserError, match="channel"):
    kdsvd(fs, [fs[0], fs[0]])
  with pytest.raises(UserError, match="batch"):
    kdsvd(fs, [f[:1] for f in fs])
  with pytest.raises(UserError, match="4-D"):
    kdsvd([f[0] for f in fs], [f[0] for f in fs])
  with pytest.raises(UserError, match="k <= min"):  # 4 vectors at tap 0 (C = 4), 5 at tap 1
    kdsvd(fs, fs, k=5)
  with pytest.raises(UserError, match="traced"):
    jax.jit(lambda k: kdsvd(fs, fs, k=k))(1)


@functools.cache
def tap_shapes(name):
  m = models.get(name, num_classes=100)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  _, taps = jax.eval_shape(lambda x: m.apply(m.init(jax.random.PRNGKey(0), x), x), x)
  return {k: tuple(v.shape) for k, v in taps.items()}


def _bind(terms, s_name, t_name):
  return build_method(dict(name="t", ce_weight=1.0, terms=terms)).bind(
    tap_shapes(s_name), tap_shapes(t_name)
  )


def test_term_equals_the_loss_and_reads_the_stage_taps():
  m = _bind(dict(kdsvd=dict(weight=2.0)), "resnet8x4", "resnet32x4")
  (term,) = m.terms
  assert term.student_taps == term.teacher_taps == ("stage1", "stage2", "stage3")
  rs = np.random.RandomState(4)
  shapes = tap_shapes("resnet8x4")
  mk = lambda: {k: jnp.asarray(np.abs(rs.randn(2, *shapes[k][1:])), jnp.float32) for k in shapes}
  s_taps, t_taps = mk(), mk()
  s = Outputs(jnp.asarray(rs.randn(2, 100), jnp.float32), s_taps)
  t = Outputs(jnp.zeros((2, 100)), {k: t_taps[k] for k in m.teacher_taps})
  labels = jnp.array([3, 7])
  keys = ("stage1", "stage2", "stage3")

  @jax.jit
  def run(s, t):
    total, metrics = m.loss(s, t, Batch(labels, jnp.arange(2)))
    return total, metrics, kdsvd([s.taps[k] for k in keys], [t.taps[k] for k in keys])

  total, metrics, want = run(s, t)
  np.testing.assert_allclose(metrics["kdsvd"], want.mean(), rtol=1e-5)
  ce = -jax.nn.log_softmax(s.logits)[jnp.arange(2), labels]
  np.testing.assert_allclose(total, ce + 2.0 * want, rtol=1e-5)
  # layers= picks and orders the stages
  m2 = _bind(dict(kdsvd=dict(weight=1.0, layers=(3, 1), k=1, extra=1)), "resnet8x4", "resnet32x4")
  assert m2.terms[0].student_taps == ("stage3", "stage1")
  p = preset("kdsvd")
  assert (p["ce_weight"], p["terms"]) == (1.0, dict(kdsvd=dict(weight=1.0, k=1)))


@pytest.mark.parametrize(
  "terms,pair,match",
  [
    (dict(kdsvd=dict(weight=1.0, layers=(2,))), ("resnet8x4", "resnet32x4"), "two stages"),
    (dict(kdsvd=dict(weight=1.0, layers="last")), ("resnet8x4", "resnet32x4"), "layers"),
    (dict(kdsvd=dict(weight=1.0, layers=(1, 9))), ("resnet8x4", "resnet32x4"), "layers"),
    (dict(kdsvd=dict(weight=1.0, k=0)), ("resnet8x4", "resnet32x4"), "k"),
    (dict(kdsvd=dict(weight=1.0, extra=-2)), ("resnet8x4", "resnet32x4"), "extra"),
    (dict(kdsvd=dict(weight=1.0)), ("wrn_16_2", "resnet32x4"), "channel counts"),
  ],
)
def test_bad_term_hyperparameters_raise_at_bind(terms, pair, match):
  with pytest.raises(UserError, match=match):
    _bind(terms, *pair)


def _config_module():
  spec = importlib.util.spec_from_file_location(
    "cfg_kdsvd", os.path.join(ROOT, "configs", "cifar100", "kdsvd.py")
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_every_config_pair_builds_and_binds():
  cfg = _config_module()
  assert "no published CIFAR-100 number" in cfg.__doc__
  for pair, (teacher, student, published) in cfg.PAIRS.items():
    c = cfg.get_config(pair)
    m = build_method(c.method)
    (term,) = m.terms
    assert (m.ce_weight, term.spec.name, term.weight, dict(term.hparams)) == (
      1.0,
      "kdsvd",
      1.0,
      dict(k=1),
    )
    assert c.model == student and c.teacher.workdir.endswith(f"teacher_{teacher}")
    assert (c.optim.lr, c.num_epochs, tuple(c.optim.milestones)) == (0.05, 240, (150, 180, 210))
    assert published is None
    bound = m.bind(tap_shapes(student), tap_shapes(teacher))
    assert len(bound.terms[0].student_taps) >= 3
  with pytest.raises(ValueError, match="Unknown pair"):
    cfg.get_config("resnet32x4-ShuffleV2")


def test_jitted_train_step():
  student = models.get("tiny_cnn", num_classes=100)
  teacher = models.get("tiny_cnn", num_classes=100)
  x0 = jnp.zeros((1, 32, 32, 3))
  tv = teacher.init(jax.random.PRNGKey(1), x0, train=False)
  method = build_method(preset("kdsvd"))
  tx = optax.sgd(0.1)
  init = init_train_state(student, (teacher, tv), method, x0, jax.random.PRNGKey(0), tx=tx)
  assert init.method.terms[0].student_taps == ("stage1", "stage2")
  p0 = jax.device_get(init.state.params)
  bs0 = jax.device_get(init.state.batch_stats)
  transform = lambda im: im.astype(jnp.float32) / 255.0 - 0.5
  steps = make_steps(
    student=student,
    method=init.method,
    tx=tx,
    train_transform=lambda im, r: transform(im),
    eval_transform=transform,
    teacher=teacher,
    connectors=init.connectors,
    emit_norms=False,
  )
  rs = np.random.RandomState(0)
  batch = dict(
    image=rs.randint(0, 255, (8, 32, 32, 3)).astype(np.uint8),
    label=rs.randint(0, 100, (8,)).astype(np.int32),
    index=np.arange(8, dtype=np.int32),
  )
  new_state, metrics = steps.train_batch(init.state, batch, tv)
  assert np.isfinite(float(metrics["loss"])) and float(metrics["kdsvd"]) > 0
  keys = ("stage1", "stage2")

  @jax.jit
  def outside(images):  # the term on the same student (train mode) and teacher taps
    x = transform(images)
    sv = {"params": p0["student"], "batch_stats": bs0["student"]}
    s_taps = student.apply(sv, x, train=True, mutable=["batch_stats"])[0][1]
    t_taps = teacher.apply(tv, x, train=False)[1]
    return kdsvd([s_taps[k] for k in keys], [t_taps[k] for k in keys]).mean()

  want = outside(batch["image"])
  np.testing.assert_allclose(float(metrics["kdsvd"]), float(want), rtol=1e-4)
  leaves = jax.tree_util.tree_leaves(
    jax.tree_util.tree_map(
      lambda a, b: bool(np.all(np.isfinite(b))) and not np.allclose(a, b),
      p0["student"],
      jax.device_get(new_state.params["student"]),
    )
  )
  assert all(leaves)
