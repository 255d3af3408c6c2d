"""Golden and property tests for kdjax.losses.features / relational / connectors.

Goldens: tests/golden/feature_losses.{npz,json}, produced by tools/goldens/make_feature_goldens.py
(float64 PyTorch re-implementations of RepDistiller / overhaul-distillation / torchdistill, NCHW,
stored NHWC, connector weights stored in the Flax layout; not run here). For every entry the test
rebuilds the kdjax pipeline (Flax connector with the stored weights, train-mode BatchNorm, then
the loss) and compares the per-example values, their batch mean (the reference loss), the
gradient of the mean w.r.t. the student inputs (and VID's ``log_scale``) and, for losses that
decompose over examples, the gradient of a weighted sum.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses
from kdjax.losses import connectors as C
from kdjax.losses import features as FE

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


def _load():
  with open(os.path.join(GOLDEN_DIR, "feature_losses.json")) as f:
    meta = json.load(f)
  with np.load(os.path.join(GOLDEN_DIR, "feature_losses.npz")) as z:
    arrays = {k: z[k] for k in z.files}
  return {e["id"]: e for e in meta["entries"]}, arrays


ENTRIES, A = _load()
IDS = sorted(ENTRIES)
CONNECTOR_CLASSES = {
  name: getattr(C, name)
  for name in (
    "ConvReg",
    "ABConnector",
    "OHConnector",
    "Embed",
    "LinearEmbed",
    "VIDRegressor",
    "Paraphraser",
    "Translator",
  )
}


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _close(actual, expected, rtol, what):
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
  # absolute floor relative to the array's scale, for entries that are ~0 (gradient elements
  # that cancel; float32 Gram-matrix gradients lose ~1e-6 of the scale there)
  atol = rtol * 1e-1 * max(float(np.max(np.abs(expected))), 1e-30)
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# ----------------------------------------------------------------------------------------------
# Fixture access
# ----------------------------------------------------------------------------------------------


def _input(eid, name, dtype):
  n = ENTRIES[eid]["inputs"][name]
  if n is None:
    return jnp.asarray(A[f"{eid}__in__{name}"], dtype)
  return [jnp.asarray(A[f"{eid}__in__{name}__{k}"], dtype) for k in range(n)]


def _variables(eid, prefix, dtype):
  """{'params': ..., 'batch_stats': ...} of connector ``prefix`` from the flat fixture keys."""
  out = {"params": {}, "batch_stats": {}}
  for col in out:
    head = f"{eid}__{col}__{prefix}/"
    for key, arr in A.items():
      if key.startswith(head):
        node = out[col]
        *path, leaf = key[len(head) :].split("/")
        for p in path:
          node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(arr, dtype)
  return out


def _connector(eid, name):
  cls_name, kwargs = ENTRIES[eid]["connectors"][name]
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return CONNECTOR_CLASSES[cls_name](**kwargs)


def _apply_train(module, variables, *args, **kwargs):
  """Train-mode application (batch statistics); identity connectors have no variables."""
  out, _ = module.apply(variables, *args, train=True, mutable=["batch_stats"], **kwargs)
  return out


# ----------------------------------------------------------------------------------------------
# Pipelines: entry -> per(student, extra, teacher) -> (per_example (B,), {connector outputs}).
# Everything, teacher-side connectors included, runs inside one jitted program per entry and dtype.
# ----------------------------------------------------------------------------------------------


def _build(eid, dtype):
  e = ENTRIES[eid]
  fn, kw = e["fn"], e["kwargs"]
  extra = {}

  if fn == "fitnet":
    reg, v = _connector(eid, "reg"), _variables(eid, "reg", dtype)

    def per(s, x, t):
      out = _apply_train(reg, v, s)
      aux = {"reg": out, "reg_eval": reg.apply(v, s, train=False)}
      return losses.fitnet(out, t), aux
  elif fn in ("at", "nst", "fsp", "sp", "rkd", "pkt"):

    def per(s, x, t):
      return getattr(losses, fn)(s, t, **kw), {}
  elif fn in ("cc", "cc_gaussian"):
    m_s, m_t = _connector(eid, "embed_s"), _connector(eid, "embed_t")
    v_s, v_t = _variables(eid, "embed_s", dtype), _variables(eid, "embed_t", dtype)

    def per(s, x, t):
      e_s = m_s.apply(v_s, s)
      return getattr(losses, fn)(e_s, m_t.apply(v_t, t), **kw), {"embed_s": e_s}
  elif fn == "vid":
    m, v = _connector(eid, "vid"), _variables(eid, "vid", dtype)
    extra = {"log_scale": v["params"]["log_scale"]}

    def per(s, x, t):
      params = dict(v["params"], log_scale=x["log_scale"])
      mu, log_scale = m.apply({"params": params}, s, target_hw=t.shape[1:3])
      return losses.vid(mu, log_scale, t, **kw), {"pred_mean": mu}
  elif fn in ("ab", "oh"):
    n = e["inputs"]["student"]
    mods = [_connector(eid, f"conn{k}") for k in range(n)]
    vs = [_variables(eid, f"conn{k}", dtype) for k in range(n)]
    bn = (
      [
        (
          jnp.asarray(A[f"{eid}__in__bn_scale__{k}"], dtype),
          jnp.asarray(A[f"{eid}__in__bn_bias__{k}"], dtype),
        )
        for k in range(n)
      ]
      if fn == "oh"
      else []
    )

    def per(s, x, t):
      outs = [_apply_train(m, v, f) for m, v, f in zip(mods, vs, s)]
      aux = {f"conn{k}": o for k, o in enumerate(outs)}
      if fn == "ab":
        return losses.ab(outs, t, **kw), aux
      margins = [losses.overhaul_margin(g, b) for g, b in bn]
      aux.update({f"margin__{k}": mg for k, mg in enumerate(margins)})
      return losses.oh(outs, t, margins, **kw), aux
  elif fn == "ft":
    para, trans = _connector(eid, "para"), _connector(eid, "trans")
    v_p, v_t = _variables(eid, "para", dtype), _variables(eid, "trans", dtype)

    def per(s, x, t):
      factor_t, rec = para.apply(v_p, t)
      out = _apply_train(trans, v_t, s)
      aux = {"para_factor": factor_t, "para_rec": rec, "trans": out}
      return losses.ft(out, factor_t, **kw), aux
  else:
    raise AssertionError(fn)
  return per, extra


def _one_entry(per, s, extra, t, w):
  """Per-example values, connector outputs, d mean/d (student, extra), d Σ w·L/d student."""
  values, vjp, aux = jax.vjp(lambda a, c: per(a, c, t), s, extra, has_aux=True)
  cot = jnp.stack([jnp.full_like(values, 1.0 / values.shape[0]), w])
  g_s, g_extra = jax.vmap(vjp)(cot)
  pick = lambda tree, i: jax.tree.map(lambda g: g[i], tree)  # noqa: E731
  return values, aux, (pick(g_s, 0), pick(g_extra, 0)), pick(g_s, 1)


@functools.cache
def _results(dtype_name):
  """{eid: (per_example, connector outputs, grads of the mean, grads of the weighted sum)}.

  All entries of one dtype form ONE jitted program (hyper-parameters are Python constants, the
  usual call path), compiled with LLVM optimisation level 0: on CPU that halves the compile
  time, which dominates this file, and does not change floating-point semantics.
  """
  dtype = np.dtype(dtype_name)
  with jax.enable_x64(dtype == np.float64):
    pers, args = {}, {}
    for eid in IDS:
      pers[eid], extra = _build(eid, dtype)
      b = A[f"{eid}__per_example"].shape[0]
      args[eid] = (
        _input(eid, "student", dtype),
        extra,
        _input(eid, "teacher", dtype),
        jnp.asarray(A.get(f"{eid}__weights", np.ones(b)), dtype),
      )
    fn = jax.jit(lambda args: {eid: _one_entry(pers[eid], *a) for eid, a in args.items()})
    res = fn.lower(args).compile({"xla_backend_optimization_level": 0})(args)
    for eid in IDS:
      assert res[eid][0].dtype == dtype, (eid, res[eid][0].dtype)
    return jax.tree.map(lambda a: np.asarray(a, np.float64), res)


def _flat_student(eid, g):
  n = ENTRIES[eid]["inputs"]["student"]
  return {"student": g} if n is None else {f"student__{k}": g[k] for k in range(n)}


# ----------------------------------------------------------------------------------------------
# Golden tests
# ----------------------------------------------------------------------------------------------


def test_fixture_covers_all_losses():
  assert {e["fn"] for e in ENTRIES.values()} == {
    "fitnet",
    "at",
    "sp",
    "cc",
    "cc_gaussian",
    "vid",
    "rkd",
    "pkt",
    "ab",
    "ft",
    "fsp",
    "nst",
    "oh",
  }


@pytest.mark.parametrize("dtype_name,rtol", [("float64", 1e-5), ("float32", 1e-4)])
@pytest.mark.parametrize("eid", IDS)
def test_golden_values_and_gradients(eid, dtype_name, rtol):
  values, _, (g_s, g_extra), g_w = _results(dtype_name)[eid]
  b = A[f"{eid}__per_example"].shape[0]
  assert values.shape == (b,)
  _close(values, A[f"{eid}__per_example"], rtol, f"{eid} per_example")
  _close(values.mean(), A[f"{eid}__loss"], rtol, f"{eid} loss (batch mean)")
  for key, g in _flat_student(eid, g_s).items():
    _close(g, A[f"{eid}__grad__{key}"], rtol, f"{eid} grad {key}")
  for key, g in g_extra.items():
    _close(g, A[f"{eid}__grad__{key}"], rtol, f"{eid} grad {key}")
  if ENTRIES[eid]["decomposable"]:
    for key, g in _flat_student(eid, g_w).items():
      _close(g, A[f"{eid}__wgrad__{key}"], rtol, f"{eid} weighted grad {key}")


@pytest.mark.parametrize("dtype_name,rtol", [("float64", 1e-7), ("float32", 1e-4)])
def test_connector_outputs_match_torch(dtype_name, rtol):
  """Connector outputs (train-mode BN; ConvReg also eval-mode) and OH margins vs torch."""
  checked = 0
  for eid in IDS:
    for name, actual in _results(dtype_name)[eid][1].items():
      _close(actual, A[f"{eid}__out__{name}"], rtol, f"{eid} {name}")
      checked += 1
  assert checked == 35


# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------


def test_adaptive_avg_pool_matches_torch_windows(x64):
  x = jnp.asarray(np.random.RandomState(0).randn(2, 6, 5, 3))
  y = FE.adaptive_avg_pool(x, (4, 3))
  # torch rule: rows floor(i*6/4)..ceil((i+1)*6/4): [0,2) [1,3) [3,5) [4,6); cols [0,2) [1,4) [3,5)
  rows, cols = [(0, 2), (1, 3), (3, 5), (4, 6)], [(0, 2), (1, 4), (3, 5)]
  expected = np.stack(
    [
      np.stack([np.asarray(x)[:, r0:r1, c0:c1].mean(axis=(1, 2)) for c0, c1 in cols], 1)
      for r0, r1 in rows
    ],
    1,
  )
  np.testing.assert_allclose(y, expected, rtol=1e-12)
  np.testing.assert_allclose(
    FE.adaptive_avg_pool(x[:, :4, :4], (2, 2)),
    np.asarray(x)[:, :4, :4].reshape(2, 2, 2, 2, 2, 3).mean((2, 4)),
    rtol=1e-12,
  )


def test_identical_features_give_zero_loss():
  rng = np.random.RandomState(1)
  f = jnp.asarray(rng.randn(4, 8, 8, 6), jnp.float32)
  e = jnp.asarray(rng.randn(4, 10), jnp.float32)

  @jax.jit
  def zeros(f, e):
    return [
      losses.fitnet(f, f),
      losses.at([f], [f]),
      losses.sp(f, f),
      losses.cc(e, e),
      losses.cc_gaussian(e, e),
      losses.rkd(e, e),
      losses.pkt(e, e),
      losses.ft(f, f),
      losses.fsp([f, f], [f, f]),
      losses.nst([f], [f]),
    ]

  for z in zeros(f, e):
    assert z.shape == (4,)
    np.testing.assert_allclose(z, 0.0, atol=1e-5)


def test_connector_shapes_and_init():
  key = jax.random.PRNGKey(0)
  x = jnp.ones((2, 8, 8, 6))

  def out_shape(m, *args, **kw):
    def f(key):
      v = m.init(key, *args, **kw)
      return m.apply(v, *args, **kw)

    return jax.tree.map(lambda a: a.shape, jax.eval_shape(f, key))

  for t_shape in ((2, 4, 4, 10), (2, 16, 16, 10), (2, 5, 5, 10)):
    assert out_shape(C.ConvReg((2, 8, 8, 6), t_shape), x, train=False) == t_shape
  assert C.conv_reg_kind((2, 8, 8, 6), (2, 4, 4, 10)) == "conv_stride2"
  assert C.conv_reg_kind((2, 4, 4, 6), (2, 8, 8, 10)) == "deconv"
  assert C.conv_reg_kind((2, 8, 8, 6), (2, 8, 8, 10)) == "conv_valid"
  assert jax.eval_shape(C.ABConnector((2, 8, 8, 6), (2, 8, 8, 6)).init, key, x, train=False) == {}
  assert out_shape(C.ABConnector((2, 8, 8, 6), (2, 4, 4, 9)), x, train=False) == (2, 4, 4, 9)
  assert out_shape(C.VIDRegressor(7, 5), x, target_hw=(4, 4)) == ((2, 4, 4, 5), (5,))
  assert out_shape(C.Paraphraser((2, 8, 8, 6)), x) == ((2, 8, 8, 3), (2, 8, 8, 6))
  assert out_shape(C.Translator((2, 8, 8, 6), (2, 8, 8, 10)), x, train=False) == (2, 8, 8, 5)
  assert out_shape(C.OHConnector(10), x, train=False) == (2, 8, 8, 10)
  assert out_shape(C.LinearEmbed(16), jnp.ones((3, 12))) == (3, 16)

  @jax.jit
  def numeric(key):
    vid = C.VIDRegressor(7, 5)
    _, log_scale = vid.apply(vid.init(key, x), x)
    emb = C.Embed(16)
    y = emb.apply(emb.init(key, jnp.ones((3, 12))), jnp.ones((3, 12)))
    return jax.nn.softplus(log_scale) + 1e-5, jnp.linalg.norm(y, axis=1)

  var, norms = numeric(key)
  np.testing.assert_allclose(var, 5.0, rtol=1e-6)  # VID's initial variance
  np.testing.assert_allclose(norms, 1.0, rtol=1e-6)  # Embed output is L2-normalised


def test_overhaul_margin_branches():
  m = losses.overhaul_margin(
    jnp.array([1.0, -1.0, 1.0, 0.0, 0.0]), jnp.array([0.0, 0.0, 4.0, -2.0, 1.0])
  )
  # E[x | x < 0] for N(0, 1) is -sqrt(2/pi); |gamma| is the std; tail < 0.001 -> -3s;
  # gamma = 0 -> min(beta, 0)
  np.testing.assert_allclose(
    m, [-np.sqrt(2 / np.pi), -np.sqrt(2 / np.pi), -3.0, -2.0, 0.0], rtol=1e-6
  )


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------

_F = jnp.zeros((2, 4, 4, 3))
_G = jnp.zeros((2, 4, 4, 5))
_E = jnp.zeros((2, 6))


@pytest.mark.parametrize(
  "call",
  [
    lambda: losses.at([_F], [_F], p=0),
    lambda: losses.at([_F], [_F], p=-1.0),
    lambda: losses.at([_F], [_F], p=float("inf")),
    lambda: losses.at([_F], [_F], p=True),
    lambda: losses.vid(_F, jnp.zeros(3), _F, eps=0.0),
    lambda: losses.ab([_F], [_F], margin=-0.5),
    lambda: losses.ft(_F, _F, p1=0),
    lambda: losses.ft(_F, _F, p2=-2),
    lambda: losses.oh([_F], [_F], [jnp.zeros(3)], scale=-1.0),
    lambda: losses.cc_gaussian(_E, _E, gamma=0.0),
    lambda: losses.cc_gaussian(_E, _E, p_order=0),
    lambda: losses.cc_gaussian(_E, _E, p_order=2.0),
    lambda: losses.rkd(_E, _E, w_dist=-1.0),
    lambda: losses.rkd(_E, _E, w_angle=float("nan")),
    lambda: losses.pkt(_E, _E, eps=0.0),
    lambda: losses.pkt(_E, _E, eps="1e-7"),
    lambda: C.VIDRegressor(4, 4, init_pred_var=0.0),
    lambda: C.VIDRegressor(4, 4, eps=-1.0),
    lambda: C.Paraphraser((2, 4, 4, 1), k=0.5),
  ],
)
def test_invalid_hyperparameters_raise(call):
  with pytest.raises(ValueError):
    call()


@pytest.mark.parametrize(
  "call,shapes",
  [
    (lambda: losses.fitnet(_F, _G), ["(2, 4, 4, 3)", "(2, 4, 4, 5)"]),
    (lambda: losses.at([_F], [jnp.zeros((3, 4, 4, 3))]), ["(2, 4, 4, 3)", "(3, 4, 4, 3)"]),
    (lambda: losses.at([_F], [jnp.zeros((2, 8, 2, 3))]), ["(2, 4, 4, 3)", "(2, 8, 2, 3)"]),
    (lambda: losses.sp(_F, jnp.zeros((3, 4))), ["(2, 4, 4, 3)", "(3, 4)"]),
    (lambda: losses.cc(_E, jnp.zeros((2, 7))), ["(2, 6)", "(2, 7)"]),
    (lambda: losses.cc_gaussian(_E, jnp.zeros((3, 6))), ["(2, 6)", "(3, 6)"]),
    (lambda: losses.rkd(_E, jnp.zeros((3, 6))), ["(2, 6)", "(3, 6)"]),
    (lambda: losses.pkt(_F, _E), ["(2, 4, 4, 3)", "(2, 6)"]),
    (lambda: losses.vid(_F, jnp.zeros(3), _G), ["(2, 4, 4, 3)", "(2, 4, 4, 5)"]),
    (lambda: losses.vid(_F, jnp.zeros(4), _F), ["(4,)", "(2, 4, 4, 3)"]),
    (
      lambda: losses.vid(jnp.zeros((2, 8, 8, 3)), jnp.zeros(3), _F),
      ["(2, 8, 8, 3)", "(2, 4, 4, 3)"],
    ),
    (lambda: losses.ab([_F], [_G]), ["(2, 4, 4, 3)", "(2, 4, 4, 5)"]),
    (lambda: losses.ft(_F, jnp.zeros((3, 4, 4, 3))), ["(2, 4, 4, 3)", "(3, 4, 4, 3)"]),
    (lambda: losses.fsp([_F, _F], [_G, _G]), ["(2, 4, 4, 3)", "(2, 4, 4, 5)"]),
    (lambda: losses.nst([_F], [jnp.zeros((3, 4, 4, 3))]), ["(2, 4, 4, 3)", "(3, 4, 4, 3)"]),
    (lambda: losses.oh([_F], [_G], [jnp.zeros(5)]), ["(2, 4, 4, 3)", "(2, 4, 4, 5)"]),
    (lambda: losses.oh([_F], [_F], [jnp.zeros(4)]), ["(4,)", "(2, 4, 4, 3)"]),
    (lambda: losses.overhaul_margin(jnp.zeros(3), jnp.zeros(4)), ["(3,)", "(4,)"]),
    (lambda: C.ConvReg((2, 4, 4, 3), (2, 6, 6, 5)), ["(2, 4, 4, 3)", "(2, 6, 6, 5)"]),
  ],
)
def test_shape_mismatch_raises_naming_both_shapes(call, shapes):
  with pytest.raises(ValueError) as info:
    call()
  for s in shapes:
    assert s in str(info.value), (str(info.value), s)


def test_list_arguments_validated():
  with pytest.raises(ValueError, match="same length"):
    losses.at([_F, _F], [_F])
  with pytest.raises(ValueError, match="list or tuple"):
    losses.nst(_F, _F)
  with pytest.raises(ValueError, match="same length >= 2"):
    losses.fsp([_F], [_F])
  with pytest.raises(ValueError, match="margins"):
    losses.oh([_F], [_F], [])
  with pytest.raises(ValueError, match="at least 2"):
    losses.cc(jnp.zeros((1, 3)), jnp.zeros((1, 3)))


def test_traced_hyperparameters_match_concrete(x64):
  """Continuous hyper-parameters may be traced (vmapped / scheduled); same values as concrete."""
  conn = [jnp.asarray(A[f"ab__out__conn{k}"]) for k in range(3)]
  t_ab = _input("ab", "teacher", np.float64)
  e_s, e_t = _input("rkd", "student", np.float64), _input("rkd", "teacher", np.float64)
  margins = jnp.array([1.0, 0.5])

  @jax.jit
  def traced(margins, w):
    return (
      jax.vmap(lambda m: losses.ab(conn, t_ab, margin=m))(margins),
      losses.rkd(e_s, e_t, w_dist=w, w_angle=2.0 * w),
      losses.cc_gaussian(e_s, e_t, gamma=w / 100.0),
    )

  ab_v, rkd_v, cc_v = traced(margins, 25.0)
  np.testing.assert_allclose(ab_v[0], A["ab__per_example"], rtol=1e-10)
  np.testing.assert_allclose(ab_v[1], losses.ab(conn, t_ab, margin=0.5), rtol=1e-12)
  np.testing.assert_allclose(rkd_v, A["rkd__per_example"], rtol=1e-10)
  np.testing.assert_allclose(cc_v, losses.cc_gaussian(e_s, e_t, gamma=0.25), rtol=1e-12)
  with pytest.raises(ValueError, match="p2"):
    jax.jit(lambda p: losses.ft(_F, _F, p2=p))(1.0)
