"""Golden and property tests for kdjax.losses.logits.

KL-family goldens (kd, kl_per_example, ttm, wttm, dkd, dist) come from
tests/golden/logit_losses.{npz,json}, produced by tests/golden/make_logit_goldens.py (PyTorch
re-implementations of RepDistiller / mdistiller / zkxufo/TTM; not run here). Ranking-loss goldens
come from the independent loop-based NumPy reference below (no public reference exists).
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
from kdjax.losses import (
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
CASES = ("small", "medium", "large")
FNS = {f: getattr(losses, f) for f in losses.__all__}


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _inputs(case, dtype):
    return (
        np.asarray(ARRAYS[f"{case}__student"], dtype),
        np.asarray(ARRAYS[f"{case}__teacher"], dtype),
        np.asarray(ARRAYS[f"{case}__labels"], np.int32),
        np.asarray(ARRAYS[f"{case}__weights"], dtype),
    )


def _call(fn_name, s, t, y, kwargs):
    fn = FNS[fn_name]
    if fn_name in ("dkd", "pld"):
        return fn(s, t, y, **kwargs)
    return fn(s, t, **kwargs)


def _close(actual, expected, rtol, what):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    # absolute floor relative to the array's scale, for entries that are ~0 (gradients)
    atol = rtol * max(float(np.max(np.abs(expected))), 1e-30) * 1e-2
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def _check_against_golden(entry, dtype, rtol):
    s, t, y, w = _inputs(entry["case"], dtype)
    eid, kwargs = entry["id"], entry["kwargs"]

    def mean_loss(s_):
        return jnp.mean(_call(entry["fn"], s_, t, y, kwargs))

    def weighted_loss(s_):
        return jnp.sum(w * _call(entry["fn"], s_, t, y, kwargs))

    per = _call(entry["fn"], s, t, y, kwargs)
    assert per.shape == (s.shape[0],) and per.dtype == dtype, (per.shape, per.dtype)
    _close(per, ARRAYS[f"{eid}__per_example"], rtol, f"{eid} per_example")
    _close(jnp.mean(per), ARRAYS[f"{eid}__loss"], rtol, f"{eid} loss")
    grad = jax.grad(mean_loss)(s)
    assert grad.dtype == dtype
    _close(grad, ARRAYS[f"{eid}__grad"], rtol, f"{eid} grad")
    if entry["has_wgrad"]:
        _close(jax.grad(weighted_loss)(s), ARRAYS[f"{eid}__wgrad"], rtol, f"{eid} wgrad")


def test_golden_fixture_covers_all_reference_losses():
    fns = {e["fn"] for e in ENTRIES}
    assert fns == {"kd", "kl_per_example", "ttm", "wttm", "dkd", "dist"}
    assert {e["case"] for e in ENTRIES} == set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_golden_float64(x64, case):
    for entry in (e for e in ENTRIES if e["case"] == case):
        _check_against_golden(entry, np.float64, 1e-5)


@pytest.mark.parametrize("case", CASES)
def test_golden_float32(case):
    for entry in (e for e in ENTRIES if e["case"] == case):
        _check_against_golden(entry, np.float32, 1e-4)


def test_jit_matches_eager(x64):
    s, t, y, _ = _inputs("small", np.float64)
    for entry in (e for e in ENTRIES if e["case"] == "small"):
        f = functools.partial(_call, entry["fn"], kwargs=entry["kwargs"])
        np.testing.assert_allclose(jax.jit(f)(s, t, y), f(s, t, y), rtol=1e-12, err_msg=entry["id"])
        _close(jax.jit(f)(s, t, y), ARRAYS[f"{entry['id']}__per_example"], 1e-5, entry["id"])


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
        if wk == 0.0:
            continue
        tail = np.array([s_row[c] for c in order[k:]])
        m = tail.max()
        lse = m + math.log(np.sum(np.exp(tail - m)))
        loss += wk * (lse - s_row[order[k]])
        grad[order[k]] -= wk
        for c, pj in zip(order[k:], np.exp(tail - lse)):
            grad[c] += wk * pj
    return loss, grad


def np_listmle(s, t, top_k=None):
    B, K = s.shape
    k = K if top_k is None else top_k
    out = [_np_pl_row(s[b], _np_teacher_order(t[b]), [1.0] * k) for b in range(B)]
    return np.array([o[0] for o in out]), np.stack([o[1] for o in out])


def np_pairwise(s, t, temperature=1.0, top_k=None):
    B, K = s.shape
    k = K if top_k is None else top_k
    losses_, grads = np.zeros(B), np.zeros((B, K))
    for b in range(B):
        order = _np_teacher_order(t[b])
        pairs = [(order[a], order[c]) for a in range(min(k, K)) for c in range(a + 1, K)]
        for i, j in pairs:
            d = (s[b, i] - s[b, j]) / temperature
            losses_[b] += np.logaddexp(0.0, -d)
            sig = 1.0 / (1.0 + math.exp(d))  # σ(−d)
            grads[b, i] -= sig / temperature
            grads[b, j] += sig / temperature
        losses_[b] /= len(pairs)
        grads[b] /= len(pairs)
    return losses_, grads


def np_pld(s, t, y, teacher_temperature=1.0):
    B, K = s.shape
    out = []
    for b in range(B):
        order = [int(y[b])] + [c for c in _np_teacher_order(t[b]) if c != y[b]]
        z = t[b] / teacher_temperature
        q = np.exp(z - z.max())
        q /= q.sum()
        out.append(_np_pl_row(s[b], order, [q[c] for c in order]))
    return np.array([o[0] for o in out]), np.stack([o[1] for o in out])


RANKING_SPECS = [
    ("listmle", {}),
    ("listmle", {"top_k": 1}),
    ("listmle", {"top_k": 5}),
    ("pairwise_ranking", {}),
    ("pairwise_ranking", {"temperature": 2.0, "top_k": 3}),
    ("pld", {}),
    ("pld", {"teacher_temperature": 4.0}),
]
NP_RANKING = {"listmle": np_listmle, "pairwise_ranking": np_pairwise, "pld": np_pld}


def _ranking_inputs(case, dtype):
    if case == "ties":  # teacher logits with many exact ties
        rng = np.random.RandomState(7)
        s = 2.0 * rng.randn(6, 12)
        t = np.round(rng.randn(6, 12))
        y = rng.randint(0, 12, size=6)
        w = rng.uniform(0.1, 2.0, size=6)
        return s.astype(dtype), t.astype(dtype), y.astype(np.int32), w.astype(dtype)
    return _inputs(case, dtype)


def _np_ranking(fn_name, s, t, y, kwargs):
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    if fn_name == "pld":
        return NP_RANKING[fn_name](s, t, y, **kwargs)
    return NP_RANKING[fn_name](s, t, **kwargs)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-5), (np.float32, 1e-4)])
@pytest.mark.parametrize("case", ["small", "ties", "medium", "large"])
def test_ranking_against_numpy_reference(case, dtype, rtol):
    ctx = jax.enable_x64(True) if dtype == np.float64 else jax.enable_x64(False)
    with ctx:
        s, t, y, w = _ranking_inputs(case, dtype)
        if case in ("medium", "large"):  # keep the O(K²) Python loops cheap
            s, t, y, w = s[:4], t[:4], y[:4], w[:4]
        for fn_name, kwargs in RANKING_SPECS:
            what = f"{fn_name} {kwargs} {case} {np.dtype(dtype).name}"
            exp_val, exp_grad = _np_ranking(fn_name, s, t, y, kwargs)
            per = _call(fn_name, s, t, y, kwargs)
            assert per.shape == (s.shape[0],) and per.dtype == dtype, what
            _close(per, exp_val, rtol, what)
            g = jax.grad(lambda s_: jnp.sum(w * _call(fn_name, s_, t, y, kwargs)))(s)
            _close(g, w[:, None] * exp_grad, rtol, what + " grad")
            gj = jax.jit(jax.grad(lambda s_: jnp.mean(_call(fn_name, s_, t, y, kwargs))))(s)
            _close(gj, exp_grad / s.shape[0], rtol, what + " jit grad")


@pytest.mark.parametrize("fn_name,kwargs", [s for s in RANKING_SPECS if s[0] != "pld"])
def test_ranking_invariant_to_teacher_scale_and_shift(x64, fn_name, kwargs):
    s, t, y, _ = _inputs("medium", np.float64)
    base = _call(fn_name, s, t, y, kwargs)
    for t2 in (3.7 * t, t + 5.0, 0.25 * t - 2.0):
        np.testing.assert_allclose(_call(fn_name, s, t2, y, kwargs), base, rtol=1e-12)


def test_pld_invariant_to_teacher_shift(x64):
    s, t, y, _ = _inputs("medium", np.float64)
    np.testing.assert_allclose(pld(s, t + 5.0, y), pld(s, t, y), rtol=1e-10)


def test_ranking_top_k_full_equals_none(x64):
    s, t, y, _ = _inputs("small", np.float64)
    K = s.shape[1]
    np.testing.assert_allclose(listmle(s, t, top_k=K), listmle(s, t), rtol=1e-12)
    np.testing.assert_allclose(pairwise_ranking(s, t, top_k=K), pairwise_ranking(s, t), rtol=1e-12)
    np.testing.assert_allclose(listmle(s, t, top_k=K - 1), listmle(s, t), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Properties and identities
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kd_zero_at_identical_logits(dtype):
    with jax.enable_x64(dtype == np.float64):
        s, _, _, _ = _inputs("large", dtype)
        for T in (1.0, 4.0):
            v = kd(s, s, temperature=T)
            assert v.dtype == dtype
            np.testing.assert_allclose(v, 0.0, atol=1e-5 if dtype == np.float32 else 1e-12)
            g = jax.grad(lambda z: jnp.mean(kd(z, s, temperature=T)))(s)
            np.testing.assert_allclose(g, 0.0, atol=1e-6 if dtype == np.float32 else 1e-14)


def test_ttm_gamma_one_equals_kd_t1_without_t2(x64):
    for case in CASES:
        s, t, _, _ = _inputs(case, np.float64)
        np.testing.assert_allclose(
            ttm(s, t, gamma=1.0), kd(s, t, temperature=1.0, t2_scale=False), rtol=1e-12
        )


def test_ttm_equals_kl_with_teacher_temperature(x64):
    s, t, _, _ = _inputs("medium", np.float64)
    np.testing.assert_allclose(
        ttm(s, t, gamma=0.25),
        kl_per_example(s, t, teacher_temperature=4.0, student_temperature=1.0, t2_scale=False),
        rtol=1e-10,
    )


def test_wttm_weight_bounds(x64):
    s, t, _, _ = _inputs("medium", np.float64)
    gamma, K = 0.3, s.shape[1]
    u = wttm(s, t, gamma=gamma) / ttm(s, t, gamma=gamma)
    assert np.all(u >= 1.0 - 1e-12) and np.all(u <= K ** (1 - gamma) + 1e-9)


def test_kd_t2_scale_and_kl_forms(x64):
    s, t, _, _ = _inputs("small", np.float64)
    T = 4.0
    np.testing.assert_allclose(kd(s, t, temperature=T, t2_scale=False) * T**2, kd(s, t, temperature=T))
    kw = dict(teacher_temperature=T, student_temperature=T, t2_scale=True)
    kl = kl_per_example(s, t, form="kl", **kw)
    ce = kl_per_example(s, t, form="cross_entropy", **kw)
    p = jax.nn.softmax(t / T)
    entropy = -jnp.sum(p * jax.nn.log_softmax(t / T), axis=-1)
    np.testing.assert_allclose(ce - kl, T**2 * entropy, rtol=1e-10)
    g_kl = jax.grad(lambda z: jnp.mean(kl_per_example(z, t, form="kl", **kw)))(s)
    g_ce = jax.grad(lambda z: jnp.mean(kl_per_example(z, t, form="cross_entropy", **kw)))(s)
    np.testing.assert_allclose(g_kl, g_ce, rtol=1e-10, atol=1e-15)


def test_zero_log_zero_convention():
    # A teacher class with probability exactly 0 contributes 0 even where the student is -inf.
    s = jnp.array([[0.5, -jnp.inf, 1.0], [2.0, 0.0, -1.0]], jnp.float32)
    t = jnp.array([[1.0, -jnp.inf, 0.0], [0.0, -jnp.inf, 3.0]], jnp.float32)
    for form in ("kl", "cross_entropy"):
        f = functools.partial(
            kl_per_example, teacher_temperature=1.0, student_temperature=1.0, t2_scale=False, form=form
        )
        v = f(s, t)
        assert np.all(np.isfinite(v)), (form, v)
        g = jax.grad(lambda z: jnp.sum(f(z, t)))(s)
        assert np.all(np.isfinite(g)), (form, g)


def test_dkd_and_dist_finite_on_extreme_inputs(x64):
    rng = np.random.RandomState(0)
    s = rng.uniform(-300, 300, size=(4, 10))
    t = rng.uniform(-300, 300, size=(4, 10))
    y = np.array([0, 3, 9, 5])
    for dtype in (np.float32, np.float64):
        sd, td = s.astype(dtype), t.astype(dtype)
        for f in (
            lambda z: dkd(z, td, y, alpha=1.0, beta=8.0, temperature=1.0),
            lambda z: dist(z, td),
            lambda z: dist(z[:1], td[:1]),  # B = 1: intra-class Pearson degenerate, still finite
            lambda z: wttm(z, td, gamma=0.1),
        ):
            v, g = jax.value_and_grad(lambda z: jnp.mean(f(z)))(sd)
            assert np.isfinite(v) and np.all(np.isfinite(g))


def test_dist_batch_mean_is_reference_and_intra_is_shared(x64):
    s, t, _, _ = _inputs("small", np.float64)
    inter_only = dist(s, t, beta=1.0, gamma=0.0)
    intra_only = dist(s, t, beta=0.0, gamma=1.0)
    np.testing.assert_allclose(intra_only, np.full_like(intra_only, intra_only[0]))
    assert np.ptp(np.asarray(inter_only)) > 0


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
        (lambda: kl_per_example(_S, _S, teacher_temperature=1.0, student_temperature=0.0, t2_scale=True),
         "student_temperature"),
        (lambda: kl_per_example(_S, _S, teacher_temperature=-2.0, student_temperature=1.0, t2_scale=True),
         "teacher_temperature"),
        (lambda: kl_per_example(_S, _S, teacher_temperature=1.0, student_temperature=1.0, t2_scale=True,
                                form="js"), "form"),
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
    with pytest.raises(ValueError, match=r"student_logits.shape=\(4, 5\).*teacher_logits.shape=\(4, 6\)"):
        fn(_S, np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        fn(_S[0], _S[0])


def test_validation_happens_eagerly_under_jit():
    with pytest.raises(ValueError, match="temperature"):
        jax.jit(lambda s, t: kd(s, t, temperature=0.0))(_S, _S)
