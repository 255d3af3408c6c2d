"""Golden and property tests for kdjax.losses.logits.

KL-family goldens (kd, kl_per_example, ttm, wttm, dkd, dist) come from
tests/golden/logit_losses.{npz,json}, produced by tests/golden/make_logit_goldens.py (PyTorch
re-implementations of RepDistiller / mdistiller / zkxufo/TTM; not run here). Ranking-loss goldens
come from the independent loop-based NumPy reference below (no public reference exists).

Compile time dominates on CPU, so the golden/ranking/property checks are evaluated together in one
jitted, vmapped program per (shape, dtype) (see ``_results``); the usual call path (Python-number
hyper-parameters, ``jax.grad`` of the batch mean) is checked separately on the small case.
"""

from __future__ import annotations

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses
from kdjax.losses import (  # noqa: F401  (the public names under test)
  dist,
  dkd,
  dkd_warmup_factor,
  kd,
  kl_per_example,
  listmle,
  pairwise_ranking,
  pld,
  ttm,
  wttm,
)

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


def _load_golden():
  with open(os.path.join(GOLDEN_DIR, "logit_losses.json")) as f:
    meta = json.load(f)
  with np.load(os.path.join(GOLDEN_DIR, "logit_losses.npz")) as z:
    arrays = {k: z[k] for k in z.files}
  return meta["entries"], arrays


ENTRIES, ARRAYS = _load_golden()
GOLDEN_CASES = ("small", "medium", "large")
STATIC_KEYS = ("form", "t2_scale", "top_k")
FNS = {name: getattr(losses, name) for name in losses.__all__}


def _make_cases():
  cases = {
    c: tuple(ARRAYS[f"{c}__{k}"] for k in ("student", "teacher", "labels", "weights"))
    for c in GOLDEN_CASES
  }
  rng = np.random.RandomState(7)
  # "ties": teacher logits with many exact ties (shape of "small"); "extreme": logits of about
  # ±300 (shape of "medium"/"large"). Shared shapes add no compilation.
  cases["ties"] = (
    2.0 * rng.randn(8, 10),
    np.round(rng.randn(8, 10)),
    rng.randint(0, 10, 8),
    rng.uniform(0.1, 2.0, 8),
  )
  cases["extreme"] = (
    rng.uniform(-300, 300, (16, 100)),
    rng.uniform(-300, 300, (16, 100)),
    rng.randint(0, 100, 16),
    np.ones(16),
  )
  return cases


CASES = _make_cases()
TRANSFORMS = {  # teacher logits derived from (student, teacher)
  "none": lambda s, t: t,
  "identical": lambda s, t: s,
  "scale": lambda s, t: 3.7 * t,
  "shift": lambda s, t: t + 5.0,
  "affine": lambda s, t: 0.25 * t - 2.0,
}


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _call(fn_name, s, t, y, kwargs):
  if fn_name in ("dkd", "pld"):
    return FNS[fn_name](s, t, y, **kwargs)
  return FNS[fn_name](s, t, **kwargs)


def _rid(fn, kwargs, case, transform="none"):
  return json.dumps([fn, kwargs, case, transform], sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Everything is evaluated in ONE jitted program per (input shape, dtype): hyper-parameters other
# than form / t2_scale / top_k are traced and vmapped over. Programs: float64 (8, 10), float64
# (16, 100) and float32 (16, 100); the float32 checks use the (16, 100) cases (incl. the ±20 one).
# ----------------------------------------------------------------------------------------------

RANKING_SPECS = [
  ("listmle", {}),
  ("listmle", {"top_k": 5}),
  ("pairwise_ranking", {"temperature": 1.0}),
  ("pairwise_ranking", {"temperature": 2.0, "top_k": 3}),
  ("pld", {"teacher_temperature": 1.0}),
  ("pld", {"teacher_temperature": 4.0}),
]
RANKING_CASES = ("small", "ties", "medium", "large")
FLOAT32_CASES = ("medium", "large", "extreme")


def _requests(dtype_name):
  if dtype_name == "float32":
    req = [(e["fn"], e["kwargs"], e["case"], "none") for e in ENTRIES if e["case"] in FLOAT32_CASES]
    req += [
      (fn, kw, c, "none")
      for c in RANKING_CASES
      if c in FLOAT32_CASES
      for fn, kw in RANKING_SPECS
      if "top_k" not in kw
    ]
    req += [("kd", {"temperature": T}, "large", "identical") for T in (1.0, 4.0)]
    req += [(fn, kw, "extreme", "none") for fn, kw in EXTREME_SPECS]
    return _dedupe(req)
  req = [(e["fn"], e["kwargs"], e["case"], "none") for e in ENTRIES]
  req += [(fn, kw, c, "none") for c in RANKING_CASES for fn, kw in RANKING_SPECS]
  req += [
    (fn, kw, "medium", tr)
    for fn, kw in RANKING_SPECS
    if fn != "pld"
    for tr in ("scale", "shift", "affine")
  ]
  req += [("pld", kw, "medium", "shift") for fn, kw in RANKING_SPECS if fn == "pld"]
  req += [("kd", {"temperature": T}, "large", "identical") for T in (1.0, 4.0)]
  req += [("kd", {"temperature": 1.0, "t2_scale": False}, c, "none") for c in GOLDEN_CASES]
  req += [("kd", {"temperature": 4.0, "t2_scale": False}, "small", "none")]
  req += [
    (
      "kl_per_example",
      {"teacher_temperature": 4.0, "student_temperature": 4.0, "t2_scale": True, "form": f},
      "small",
      "none",
    )
    for f in ("kl", "cross_entropy")
  ]
  req += [
    ("ttm", {"gamma": 0.25}, "medium", "none"),
    (
      "kl_per_example",
      {"teacher_temperature": 4.0, "student_temperature": 1.0, "t2_scale": False, "form": "kl"},
      "medium",
      "none",
    ),
  ]
  req += [
    ("dist", {"beta": b, "gamma": g, "temperature": 4.0}, "small", "none")
    for b, g in ((0.0, 1.0), (1.0, 0.0))
  ]
  req += [(fn, kw, "extreme", "none") for fn, kw in EXTREME_SPECS]
  return _dedupe(req)


def _dedupe(req):
  seen, out = set(), []
  for r in req:
    if _rid(*r) not in seen:
      seen.add(_rid(*r))
      out.append(r)
  return out


EXTREME_SPECS = [
  ("kd", {"temperature": 4.0}),
  ("kd", {"temperature": 1.0}),
  ("ttm", {"gamma": 0.1}),
  ("wttm", {"gamma": 0.1}),
  ("dkd", {"alpha": 1.0, "beta": 8.0, "temperature": 1.0}),
  ("dist", {"beta": 1.0, "gamma": 1.0, "temperature": 1.0}),
  ("listmle", {}),
  ("pairwise_ranking", {"temperature": 1.0}),
  ("pld", {"teacher_temperature": 1.0}),
]


def _group_key(fn, kwargs):
  static = {k: v for k, v in kwargs.items() if k in STATIC_KEYS}
  traced = sorted(k for k in kwargs if k not in STATIC_KEYS)
  return json.dumps([fn, static, traced], sort_keys=True)


# Test-speed only: skipping XLA's backend (LLVM) optimisations cuts the compile time of this large
# program on CPU; it changes results at most by rounding.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
def _evaluate_groups(batch):
  out = {}
  for key, (s, t, y, w, h) in batch.items():
    fn, static_kw, names = json.loads(key)

    def one(s, t, y, c, h, fn=fn, static_kw=static_kw, names=names):
      kw = dict(static_kw, **{n: h[i] for i, n in enumerate(names)})
      per, vjp = jax.vjp(lambda z: _call(fn, z, t, y, kw), s)
      return per, vjp(c)[0]  # values, d Σ_b c_b·L_b / ds

    out[key] = jax.vmap(one)(s, t, y, w, h)
  return out


def _cotangent(fn, w):
  # One backward pass per entry (half the compile time of two): the gradient of Σ_b w_b·L_b.
  # For losses that decompose per example, row b of d mean(L)/ds is row b of that gradient
  # divided by B·w_b (checked against the reference's own batch-mean gradient). DIST's intra
  # term couples the rows, so it gets the uniform 1/B cotangent (the batch mean) directly.
  return np.full_like(w, 1.0 / w.shape[0]) if fn == "dist" else w


@functools.cache
def _results(dtype_name):
  """{request id: (per_example, grad of batch mean, grad of Σ w·L or None)} as float64 numpy."""
  dtype = np.dtype(dtype_name)
  groups = {}
  for fn, kw, case, tr in _requests(dtype_name):
    s, t, y, w = CASES[case]
    groups.setdefault(s.shape, {}).setdefault(_group_key(fn, kw), []).append(
      (
        _rid(fn, kw, case, tr),
        s,
        TRANSFORMS[tr](s, t),
        y,
        _cotangent(fn, w),
        [kw[k] for k in sorted(kw) if k not in STATIC_KEYS],
      )
    )
  results = {}
  with jax.enable_x64(dtype == np.float64):
    for by_key in groups.values():
      batch = {
        key: (
          np.stack([r[1] for r in rows]).astype(dtype),
          np.stack([r[2] for r in rows]).astype(dtype),
          np.stack([r[3] for r in rows]).astype(np.int32),
          np.stack([r[4] for r in rows]).astype(dtype),
          np.asarray([r[5] for r in rows], dtype).reshape(len(rows), -1),
        )
        for key, rows in by_key.items()
      }
      out = _evaluate_groups(batch)
      for key, rows in by_key.items():
        per, grad = out[key]
        assert per.dtype == dtype and grad.dtype == dtype, (key, per.dtype, grad.dtype)
        for i, r in enumerate(rows):
          c = np.asarray(r[4], np.float64)
          g = np.asarray(grad[i], np.float64)
          if json.loads(key)[0] == "dist":
            results[r[0]] = (np.asarray(per[i], np.float64), g, None)
          else:
            results[r[0]] = (np.asarray(per[i], np.float64), g / (c.shape[0] * c[:, None]), g)
  return results


def _get(dtype_name, fn, kwargs, case, transform="none"):
  return _results(dtype_name)[_rid(fn, kwargs, case, transform)]


def _close(actual, expected, rtol, what):
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  # absolute floor relative to the array's scale, for entries that are ~0 (gradients)
  atol = rtol * 1e-2 * max(float(np.max(np.abs(expected))), 1e-30)
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# ----------------------------------------------------------------------------------------------
# Golden tests against the PyTorch references
# ----------------------------------------------------------------------------------------------


def test_golden_fixture_covers_all_reference_losses():
  assert {e["fn"] for e in ENTRIES} == {"kd", "kl_per_example", "ttm", "wttm", "dkd", "dist"}
  assert {e["case"] for e in ENTRIES} == set(GOLDEN_CASES)


@pytest.mark.parametrize("dtype_name,rtol", [("float64", 1e-5), ("float32", 1e-4)])
def test_golden_values_and_gradients(dtype_name, rtol):
  for e in ENTRIES:
    if dtype_name == "float32" and e["case"] not in FLOAT32_CASES:
      continue
    eid = e["id"]
    per, g_mean, g_w = _get(dtype_name, e["fn"], e["kwargs"], e["case"])
    assert per.shape == (CASES[e["case"]][0].shape[0],)
    _close(per, ARRAYS[f"{eid}__per_example"], rtol, f"{eid} per_example")
    _close(per.mean(), ARRAYS[f"{eid}__loss"], rtol, f"{eid} loss (batch mean)")
    _close(g_mean, ARRAYS[f"{eid}__grad"], rtol, f"{eid} grad of the batch mean")
    if e["has_wgrad"]:
      _close(g_w, ARRAYS[f"{eid}__wgrad"], rtol, f"{eid} weighted grad")


def test_static_hyperparameters_under_jit(x64):
  """The usual call path (Python-float hyper-parameters, jit) matches the goldens too."""
  picks = {}
  for e in ENTRIES:
    if e["case"] == "small":
      picks.setdefault(e["fn"], e)
  s, t, y, _ = CASES["small"]

  @jax.jit
  def run(s, t, y):
    return {
      fn: jax.value_and_grad(lambda z: jnp.mean(_call(fn, z, t, y, e["kwargs"])))(s)
      for fn, e in picks.items()
    }

  for fn, (value, grad) in run(s, t, y).items():
    eid = picks[fn]["id"]
    _close(value, ARRAYS[f"{eid}__loss"], 1e-10, eid)
    _close(grad, ARRAYS[f"{eid}__grad"], 1e-10, eid)


def test_ranking_static_path_and_top_k_identities(x64):
  """Python-int top_k under jit; top_k = K (and K − 1 for ListMLE) equal the full list."""
  s, t, y, _ = CASES["small"]
  K = s.shape[1]

  @jax.jit
  def run(s, t, y):
    return {
      "listmle": listmle(s, t),
      "listmle_K": listmle(s, t, top_k=K),
      "listmle_K-1": listmle(s, t, top_k=K - 1),
      "listmle_5": listmle(s, t, top_k=5),
      "pairwise": pairwise_ranking(s, t),
      "pairwise_K": pairwise_ranking(s, t, top_k=K),
      "pairwise_3": pairwise_ranking(s, t, temperature=2.0, top_k=3),
      "pld": pld(s, t, y),
    }

  out = run(s, t, y)
  np.testing.assert_allclose(out["listmle_K"], out["listmle"], rtol=1e-12)
  np.testing.assert_allclose(out["listmle_K-1"], out["listmle"], rtol=1e-12)  # last term is 0
  np.testing.assert_allclose(out["pairwise_K"], out["pairwise"], rtol=1e-12)
  for name, (fn, kw) in {
    "listmle": RANKING_SPECS[0],
    "listmle_5": RANKING_SPECS[1],
    "pairwise": RANKING_SPECS[2],
    "pairwise_3": RANKING_SPECS[3],
    "pld": RANKING_SPECS[4],
  }.items():
    _close(out[name], _get("float64", fn, kw, "small")[0], 1e-12, name)


# ----------------------------------------------------------------------------------------------
# Ranking losses: independent NumPy reference (explicit loops, analytic gradients)
# ----------------------------------------------------------------------------------------------


def _np_teacher_order(t_row):
  # descending teacher logit; ties: lower class index first
  return sorted(range(len(t_row)), key=lambda c: (-t_row[c], c))


def _np_pl_row(s_row, order, weights):
  """Σ_k weights[k]·(−s[o_k] + log Σ_{j≥k} exp s[o_j]) and its gradient w.r.t. s."""
  loss, grad = 0.0, np.zeros_like(s_row)
  for k, wk in enumerate(weights):
    tail = s_row[np.asarray(order[k:])]
    m = tail.max()
    lse = m + math.log(np.sum(np.exp(tail - m)))
    loss += wk * (lse - s_row[order[k]])
    grad[order[k]] -= wk
    grad[np.asarray(order[k:])] += wk * np.exp(tail - lse)
  return loss, grad


def np_listmle(s, t, top_k=None):
  k = s.shape[1] if top_k is None else top_k
  out = [_np_pl_row(s[b], _np_teacher_order(t[b]), [1.0] * k) for b in range(s.shape[0])]
  return np.array([o[0] for o in out]), np.stack([o[1] for o in out])


def np_pairwise(s, t, temperature=1.0, top_k=None):
  B, K = s.shape
  k = K if top_k is None else top_k
  losses_, grads = np.zeros(B), np.zeros((B, K))
  for b in range(B):
    order = _np_teacher_order(t[b])
    pairs = [(order[a], order[c]) for a in range(k) for c in range(a + 1, K)]
    for i, j in pairs:
      d = (s[b, i] - s[b, j]) / temperature
      losses_[b] += max(-d, 0.0) + math.log1p(math.exp(-abs(d)))  # log(1 + e^{-d})
      sig = 0.5 * (1.0 - math.tanh(0.5 * d))  # σ(−d)
      grads[b, i] -= sig / temperature
      grads[b, j] += sig / temperature
    losses_[b] /= len(pairs)
    grads[b] /= len(pairs)
  return losses_, grads


def np_pld(s, t, y, teacher_temperature=1.0):
  out = []
  for b in range(s.shape[0]):
    order = [int(y[b])] + [c for c in _np_teacher_order(t[b]) if c != y[b]]
    z = t[b] / teacher_temperature
    q = np.exp(z - z.max())
    q /= q.sum()
    out.append(_np_pl_row(s[b], order, [q[c] for c in order]))
  return np.array([o[0] for o in out]), np.stack([o[1] for o in out])


NP_RANKING = {"listmle": np_listmle, "pairwise_ranking": np_pairwise, "pld": np_pld}


@pytest.mark.parametrize(
  "case,dtype_name,rtol",
  [(c, "float64", 1e-5) for c in RANKING_CASES]
  + [(c, "float32", 1e-4) for c in RANKING_CASES if c in FLOAT32_CASES],
)
def test_ranking_against_numpy_reference(case, dtype_name, rtol):
  s, t, y, w = CASES[case]
  # the reference sees the same (rounded) inputs as the JAX computation
  s = s.astype(dtype_name).astype(np.float64)
  t = t.astype(dtype_name).astype(np.float64)
  w = w.astype(dtype_name).astype(np.float64)
  for fn, kw in RANKING_SPECS:
    if dtype_name == "float32" and "top_k" in kw:
      continue  # float32: the full-list specs only (compile time)
    what = f"{fn} {kw} {case} {dtype_name}"
    args = (s, t, y) if fn == "pld" else (s, t)
    exp_val, exp_grad = NP_RANKING[fn](*args, **kw)
    per, g_mean, g_w = _get(dtype_name, fn, kw, case)
    _close(per, exp_val, rtol, what)
    _close(g_mean, exp_grad / s.shape[0], rtol, what + " grad of mean")
    _close(g_w, w[:, None] * exp_grad, rtol, what + " grad of weighted sum")


@pytest.mark.parametrize("fn,kwargs", [spec for spec in RANKING_SPECS if spec[0] != "pld"])
def test_ranking_invariant_to_teacher_scale_and_shift(fn, kwargs):
  base = _get("float64", fn, kwargs, "medium")
  for tr in ("scale", "shift", "affine"):
    other = _get("float64", fn, kwargs, "medium", tr)
    np.testing.assert_allclose(other[0], base[0], rtol=1e-12, err_msg=tr)
    np.testing.assert_allclose(other[1], base[1], rtol=1e-12, atol=1e-15, err_msg=tr)


def test_pld_invariant_to_teacher_shift():
  for fn, kw in RANKING_SPECS:
    if fn == "pld":
      base = _get("float64", fn, kw, "medium")
      np.testing.assert_allclose(_get("float64", fn, kw, "medium", "shift")[0], base[0], rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Properties and identities
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype_name,atol", [("float32", 1e-5), ("float64", 1e-12)])
def test_kd_zero_at_identical_logits(dtype_name, atol):
  for T in (1.0, 4.0):
    per, g_mean, _ = _get(dtype_name, "kd", {"temperature": T}, "large", "identical")
    np.testing.assert_allclose(per, 0.0, atol=atol)
    np.testing.assert_allclose(g_mean, 0.0, atol=atol)


def test_ttm_gamma_one_equals_kd_t1_without_t2():
  for case in GOLDEN_CASES:
    a = _get("float64", "ttm", {"gamma": 1.0}, case)
    b = _get("float64", "kd", {"temperature": 1.0, "t2_scale": False}, case)
    for x, y in zip(a, b):
      _close(x, y, 1e-13, case)


def test_ttm_equals_kl_with_teacher_temperature_one_over_gamma():
  a = _get("float64", "ttm", {"gamma": 0.25}, "medium")
  b = _get(
    "float64",
    "kl_per_example",
    {"teacher_temperature": 4.0, "student_temperature": 1.0, "t2_scale": False, "form": "kl"},
    "medium",
  )
  for x, y in zip(a, b):
    _close(x, y, 1e-10, "ttm vs kl")


def test_wttm_weight_bounds():
  gamma, K = 0.1, 100
  for case in ("medium", "large"):
    u = (
      _get("float64", "wttm", {"gamma": gamma}, case)[0]
      / _get("float64", "ttm", {"gamma": gamma}, case)[0]
    )
    assert np.all(u >= 1.0 - 1e-12) and np.all(u <= K ** (1 - gamma) + 1e-9), u


def test_kd_t2_scale_and_kl_forms():
  T = 4.0
  with_t2 = _get("float64", "kd", {"temperature": T}, "small")
  without = _get("float64", "kd", {"temperature": T, "t2_scale": False}, "small")
  for x, y in zip(with_t2, without):
    _close(x, T**2 * y, 1e-12, "t2_scale")
  kw = {"teacher_temperature": T, "student_temperature": T, "t2_scale": True}
  kl = _get("float64", "kl_per_example", dict(kw, form="kl"), "small")
  ce = _get("float64", "kl_per_example", dict(kw, form="cross_entropy"), "small")
  z = CASES["small"][1] / T
  log_p = z - z.max(1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
  entropy = -(np.exp(log_p) * log_p).sum(1)
  _close(ce[0] - kl[0], T**2 * entropy, 1e-10, "cross_entropy − kl = T²·H(p_t)")
  _close(ce[1], kl[1], 1e-10, "same gradient")


def test_dist_intra_class_term_is_shared_equally():
  intra_only = _get("float64", "dist", {"beta": 0.0, "gamma": 1.0, "temperature": 4.0}, "small")
  inter_only = _get("float64", "dist", {"beta": 1.0, "gamma": 0.0, "temperature": 4.0}, "small")
  np.testing.assert_allclose(intra_only[0], np.full(8, intra_only[0][0]), rtol=1e-14)
  assert np.ptp(inter_only[0]) > 0


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_finite_on_extreme_logits(dtype_name):
  for fn, kw in EXTREME_SPECS:
    per, g_mean, g_w = _get(dtype_name, fn, kw, "extreme")
    assert np.all(np.isfinite(per)) and np.all(np.isfinite(g_mean)), fn


def test_zero_log_zero_convention():
  # A teacher class with probability exactly 0 contributes 0 even where the student is -inf.
  s = jnp.array([[0.5, -jnp.inf, 1.0], [2.0, 0.0, -1.0]], jnp.float32)
  t = jnp.array([[1.0, -jnp.inf, 0.0], [0.0, -jnp.inf, 3.0]], jnp.float32)

  @jax.jit
  def run(s, t):
    out = {}
    for form in ("kl", "cross_entropy"):
      f = functools.partial(
        kl_per_example, teacher_temperature=1.0, student_temperature=1.0, t2_scale=False, form=form
      )
      out[form] = (f(s, t), jax.grad(lambda z: jnp.sum(f(z, t)))(s))
    out["dist_b1"] = jax.value_and_grad(lambda z: jnp.mean(dist(z, jnp.array([[1.0, 2.0, 3.0]]))))(
      s[1:]
    )
    return out

  for name, (v, g) in run(s, t).items():
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(g)), (name, v, g)


def test_dkd_warmup_factor():
  assert dkd_warmup_factor(1, 20) == pytest.approx(0.05)
  assert dkd_warmup_factor(20, 20) == 1.0
  assert dkd_warmup_factor(35, 20) == 1.0
  assert float(jax.jit(lambda e: dkd_warmup_factor(e, 20))(jnp.asarray(10))) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="warmup"):
    dkd_warmup_factor(1, 0)
  with pytest.raises(ValueError, match="epoch"):
    dkd_warmup_factor(-1, 20)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------

_S = np.zeros((4, 5), np.float32)
_Y = np.zeros((4,), np.int32)


@pytest.mark.parametrize(
  "call,match",
  [
    (lambda: kd(_S, _S, temperature=0.0), "temperature"),
    (lambda: kd(_S, _S, temperature=-1.0), "temperature"),
    (lambda: kd(_S, _S, temperature=float("nan")), "temperature"),
    (lambda: kd(_S, _S, temperature=4.0, t2_scale=1), "t2_scale"),
    (
      lambda: kl_per_example(
        _S, _S, teacher_temperature=1.0, student_temperature=0.0, t2_scale=True
      ),
      "student_temperature",
    ),
    (
      lambda: kl_per_example(
        _S, _S, teacher_temperature=-2.0, student_temperature=1.0, t2_scale=True
      ),
      "teacher_temperature",
    ),
    (
      lambda: kl_per_example(
        _S, _S, teacher_temperature=1.0, student_temperature=1.0, t2_scale=True, form="js"
      ),
      "form",
    ),
    (lambda: ttm(_S, _S, gamma=0.0), "gamma"),
    (lambda: wttm(_S, _S, gamma=-0.1), "gamma"),
    (lambda: dkd(_S, _S, _Y, alpha=-1.0, beta=8.0, temperature=4.0), "alpha"),
    (lambda: dkd(_S, _S, _Y, alpha=1.0, beta=8.0, temperature=0.0), "temperature"),
    (lambda: dkd(_S, _S, _Y[:3], alpha=1.0, beta=8.0, temperature=4.0), r"labels.shape=\(3,\)"),
    (lambda: dkd(_S, _S, _Y.astype(np.float32), alpha=1.0, beta=8.0, temperature=4.0), "integer"),
    (lambda: dkd(_S[:, :1], _S[:, :1], _Y, alpha=1.0, beta=8.0, temperature=4.0), "2 classes"),
    (lambda: dist(_S, _S, temperature=0.0), "temperature"),
    (lambda: dist(_S, _S, beta=-1.0), "beta"),
    (lambda: listmle(_S, _S, top_k=0), "top_k"),
    (lambda: listmle(_S, _S, top_k=6), "top_k"),
    (lambda: listmle(_S, _S, top_k=2.0), "top_k"),
    (lambda: pairwise_ranking(_S, _S, temperature=0.0), "temperature"),
    (lambda: pairwise_ranking(_S, _S, top_k=True), "top_k"),
    (lambda: pld(_S, _S, _Y, teacher_temperature=0.0), "teacher_temperature"),
  ],
)
def test_hyperparameter_validation(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.parametrize(
  "fn",
  [
    lambda s, t: kd(s, t, temperature=4.0),
    lambda s, t: ttm(s, t, gamma=0.1),
    lambda s, t: wttm(s, t, gamma=0.1),
    lambda s, t: dkd(s, t, _Y, alpha=1.0, beta=8.0, temperature=4.0),
    lambda s, t: dist(s, t),
    lambda s, t: listmle(s, t),
    lambda s, t: pairwise_ranking(s, t),
    lambda s, t: pld(s, t, _Y),
  ],
)
def test_shape_mismatch_names_both_shapes(fn):
  with pytest.raises(
    ValueError, match=r"student_logits.shape=\(4, 5\).*teacher_logits.shape=\(4, 6\)"
  ):
    fn(_S, np.zeros((4, 6), np.float32))
  with pytest.raises(ValueError, match="2-D"):
    fn(_S[0], _S[0])


def test_validation_happens_eagerly_under_jit():
  with pytest.raises(ValueError, match="temperature"):
    jax.jit(lambda s, t: kd(s, t, temperature=0.0))(_S, _S)
