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
CONNECTOR_CLASSES = {name: getattr(C, name) for name in
                     ("ConvReg", "ABConnector", "OHConnector", "Embed", "LinearEmbed",
                      "VIDRegressor", "Paraphraser", "Translator")}


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _close(actual, expected, rtol, what):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
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
                *path, leaf = key[len(head):].split("/")
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
# Pipelines: entry -> (per_example_fn(student, extra), student, extra)
# ----------------------------------------------------------------------------------------------


def _build(eid, dtype):
    e = ENTRIES[eid]
    fn, kw = e["fn"], e["kwargs"]
    s, t = _input(eid, "student", dtype), _input(eid, "teacher", dtype)
    extra = {}

    if fn == "fitnet":
        reg, v = _connector(eid, "reg"), _variables(eid, "reg", dtype)
        per = lambda s, x: losses.fitnet(_apply_train(reg, v, s), t)  # noqa: E731
    elif fn in ("at", "nst", "fsp", "sp", "rkd", "pkt"):
        per = lambda s, x: getattr(losses, fn)(s, t, **kw)  # noqa: E731
    elif fn in ("cc", "cc_gaussian"):
        m_s, m_t = _connector(eid, "embed_s"), _connector(eid, "embed_t")
        v_s, v_t = _variables(eid, "embed_s", dtype), _variables(eid, "embed_t", dtype)
        e_t = m_t.apply(v_t, t)
        per = lambda s, x: getattr(losses, fn)(m_s.apply(v_s, s), e_t, **kw)  # noqa: E731
    elif fn == "vid":
        m, v = _connector(eid, "vid"), _variables(eid, "vid", dtype)
        extra = {"log_scale": v["params"]["log_scale"]}

        def per(s, x):
            params = dict(v["params"], log_scale=x["log_scale"])
            mu, log_scale = m.apply({"params": params}, s, target_hw=t.shape[1:3])
            return losses.vid(mu, log_scale, t, **kw)
    elif fn == "ab":
        mods = [_connector(eid, f"conn{k}") for k in range(len(s))]
        vs = [_variables(eid, f"conn{k}", dtype) for k in range(len(s))]
        per = lambda s, x: losses.ab(  # noqa: E731
            [_apply_train(m, v, f) for m, v, f in zip(mods, vs, s)], t, **kw)
    elif fn == "ft":
        para, trans = _connector(eid, "para"), _connector(eid, "trans")
        factor_t = para.apply(_variables(eid, "para", dtype), t, is_factor=True)
        v = _variables(eid, "trans", dtype)
        per = lambda s, x: losses.ft(_apply_train(trans, v, s), factor_t, **kw)  # noqa: E731
    elif fn == "oh":
        mods = [_connector(eid, f"conn{k}") for k in range(len(s))]
        vs = [_variables(eid, f"conn{k}", dtype) for k in range(len(s))]
        margins = [losses.overhaul_margin(jnp.asarray(A[f"oh__in__bn_scale__{k}"], dtype),
                                          jnp.asarray(A[f"oh__in__bn_bias__{k}"], dtype))
                   for k in range(len(s))]
        per = lambda s, x: losses.oh(  # noqa: E731
            [_apply_train(m, v, f) for m, v, f in zip(mods, vs, s)], t, margins, **kw)
    else:
        raise AssertionError(fn)
    return per, s, extra


@functools.cache
def _results(dtype_name):
    """{eid: (per_example, grads of the mean, grads of the weighted sum)} as float64 numpy."""
    dtype = np.dtype(dtype_name)
    out = {}
    with jax.enable_x64(dtype == np.float64):
        for eid in IDS:
            per, s, extra = _build(eid, dtype)
            w = jnp.asarray(A.get(f"{eid}__weights", np.ones(len(A[f"{eid}__per_example"]))), dtype)

            @jax.jit
            def run(s, extra, w, per=per):
                values = per(s, extra)
                g_mean = jax.grad(lambda a, b: jnp.mean(per(a, b)), argnums=(0, 1))(s, extra)
                g_w = jax.grad(lambda a: jnp.sum(w * per(a, extra)))(s)
                return values, g_mean, g_w

            values, g_mean, g_w = run(s, extra, w)
            assert values.dtype == dtype, (eid, values.dtype)
            out[eid] = jax.tree.map(lambda a: np.asarray(a, np.float64), (values, g_mean, g_w))
    return out


def _flat_student(eid, g):
    n = ENTRIES[eid]["inputs"]["student"]
    return {"student": g} if n is None else {f"student__{k}": g[k] for k in range(n)}


# ----------------------------------------------------------------------------------------------
# Golden tests
# ----------------------------------------------------------------------------------------------


def test_fixture_covers_all_losses():
    assert {e["fn"] for e in ENTRIES.values()} == {
        "fitnet", "at", "sp", "cc", "cc_gaussian", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst",
        "oh"}


@pytest.mark.parametrize("dtype_name,rtol", [("float64", 1e-5), ("float32", 1e-4)])
@pytest.mark.parametrize("eid", IDS)
def test_golden_values_and_gradients(eid, dtype_name, rtol):
    values, (g_s, g_extra), g_w = _results(dtype_name)[eid]
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


def _connector_outputs(dtype):
    """(what, actual, expected) for every stored connector output."""
    rows = []
    for eid in IDS:
        e = ENTRIES[eid]
        if e["fn"] == "fitnet":
            reg, v = _connector(eid, "reg"), _variables(eid, "reg", dtype)
            s = _input(eid, "student", dtype)
            rows.append((f"{eid} train", _apply_train(reg, v, s), A[f"{eid}__out__reg"]))
            rows.append((f"{eid} eval", reg.apply(v, s, train=False), A[f"{eid}__out__reg_eval"]))
        elif e["fn"] in ("cc", "cc_gaussian"):
            m = _connector(eid, "embed_s")
            rows.append((eid, m.apply(_variables(eid, "embed_s", dtype), _input(eid, "student", dtype)),
                         A[f"{eid}__out__embed_s"]))
        elif e["fn"] == "vid":
            m, t = _connector(eid, "vid"), _input(eid, "teacher", dtype)
            mu, _ = m.apply(_variables(eid, "vid", dtype), _input(eid, "student", dtype),
                            target_hw=t.shape[1:3])
            rows.append((eid, mu, A[f"{eid}__out__pred_mean"]))
        elif e["fn"] in ("ab", "oh"):
            for k, f in enumerate(_input(eid, "student", dtype)):
                m = _connector(eid, f"conn{k}")
                rows.append((f"{eid} conn{k}", _apply_train(m, _variables(eid, f"conn{k}", dtype), f),
                             A[f"{eid}__out__conn{k}"]))
            if e["fn"] == "oh":
                for k in range(len(ENTRIES[eid]["connectors"])):
                    rows.append((f"oh margin {k}", losses.overhaul_margin(
                        jnp.asarray(A[f"oh__in__bn_scale__{k}"], dtype),
                        jnp.asarray(A[f"oh__in__bn_bias__{k}"], dtype)), A[f"oh__out__margin__{k}"]))
        elif e["fn"] == "ft":
            para, trans = _connector(eid, "para"), _connector(eid, "trans")
            factor, rec = para.apply(_variables(eid, "para", dtype), _input(eid, "teacher", dtype))
            rows.append((f"{eid} paraphraser factor", factor, A[f"{eid}__out__para_factor"]))
            rows.append((f"{eid} paraphraser reconstruction", rec, A[f"{eid}__out__para_rec"]))
            rows.append((f"{eid} translator", _apply_train(trans, _variables(eid, "trans", dtype),
                                                           _input(eid, "student", dtype)),
                         A[f"{eid}__out__trans"]))
    return rows


@pytest.mark.parametrize("dtype_name,rtol", [("float64", 1e-7), ("float32", 1e-4)])
def test_connector_outputs_match_torch(dtype_name, rtol):
    dtype = np.dtype(dtype_name)
    with jax.enable_x64(dtype == np.float64):
        rows = _connector_outputs(dtype)
        for what, actual, expected in rows:
            assert actual.dtype == dtype, what
            _close(actual, expected, rtol, what)
    assert len(rows) >= 30


def test_static_call_path_under_jit(x64):
    """Python-float hyper-parameters through jit, value_and_grad of the mean (the usual path)."""
    picks = ["at_p2", "rkd", "pkt", "sp", "nst", "fsp"]

    @jax.jit
    def run(inputs):
        return {eid: jax.value_and_grad(
            lambda s, eid=eid: jnp.mean(getattr(losses, ENTRIES[eid]["fn"])(
                s, inputs[eid][1], **ENTRIES[eid]["kwargs"])))(inputs[eid][0]) for eid in picks}

    res = run({eid: (_input(eid, "student", np.float64), _input(eid, "teacher", np.float64))
               for eid in picks})
    for eid, (value, grad) in res.items():
        _close(value, A[f"{eid}__loss"], 1e-10, eid)
        for key, g in _flat_student(eid, grad).items():
            _close(g, A[f"{eid}__grad__{key}"], 1e-9, eid)


# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------


def test_adaptive_avg_pool_matches_torch_windows(x64):
    x = jnp.asarray(np.random.RandomState(0).randn(2, 6, 5, 3))
    y = FE.adaptive_avg_pool(x, (4, 3))
    # torch rule: rows floor(i*6/4)..ceil((i+1)*6/4): [0,2) [1,3) [3,5) [4,6); cols [0,2) [1,4) [3,5)
    rows, cols = [(0, 2), (1, 3), (3, 5), (4, 6)], [(0, 2), (1, 4), (3, 5)]
    expected = np.stack([np.stack([np.asarray(x)[:, r0:r1, c0:c1].mean(axis=(1, 2))
                                   for c0, c1 in cols], 1) for r0, r1 in rows], 1)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_allclose(FE.adaptive_avg_pool(x[:, :4, :4], (2, 2)),
                               np.asarray(x)[:, :4, :4].reshape(2, 2, 2, 2, 2, 3).mean((2, 4)),
                               rtol=1e-12)


def test_identical_features_give_zero_loss():
    rng = np.random.RandomState(1)
    f = jnp.asarray(rng.randn(4, 8, 8, 6), jnp.float32)
    e = jnp.asarray(rng.randn(4, 10), jnp.float32)
    zero = [losses.fitnet(f, f), losses.at([f], [f]), losses.sp(f, f), losses.cc(e, e),
            losses.cc_gaussian(e, e), losses.rkd(e, e), losses.pkt(e, e), losses.ft(f, f),
            losses.fsp([f, f], [f, f]), losses.nst([f], [f])]
    for z in zero:
        assert z.shape == (4,)
        np.testing.assert_allclose(z, 0.0, atol=1e-5)


def test_connector_shapes_and_init():
    key = jax.random.PRNGKey(0)
    x = jnp.ones((2, 8, 8, 6))
    for t_shape, out in (((2, 4, 4, 10), (2, 4, 4, 10)), ((2, 16, 16, 10), (2, 16, 16, 10)),
                         ((2, 5, 5, 10), (2, 5, 5, 10))):
        m = C.ConvReg((2, 8, 8, 6), t_shape)
        v = m.init(key, x, train=False)
        assert m.apply(v, x, train=False).shape == out
    assert C.conv_reg_kind((2, 8, 8, 6), (2, 4, 4, 10)) == "conv_stride2"
    assert C.conv_reg_kind((2, 4, 4, 6), (2, 8, 8, 10)) == "deconv"
    assert C.conv_reg_kind((2, 8, 8, 6), (2, 8, 8, 10)) == "conv_valid"
    ab_id = C.ABConnector((2, 8, 8, 6), (2, 8, 8, 6))
    assert ab_id.init(key, x, train=False) == {}
    vid = C.VIDRegressor(7, 5)
    v = vid.init(key, x, target_hw=(4, 4))
    mu, log_scale = vid.apply(v, x, target_hw=(4, 4))
    assert mu.shape == (2, 4, 4, 5)
    np.testing.assert_allclose(jax.nn.softplus(log_scale) + 1e-5, 5.0, rtol=1e-6)
    para = C.Paraphraser((2, 8, 8, 6))
    factor, rec = para.apply(para.init(key, x), x)
    assert factor.shape == (2, 8, 8, 3) and rec.shape == x.shape
    trans = C.Translator((2, 8, 8, 6), (2, 8, 8, 10))
    assert trans.apply(trans.init(key, x, train=False), x, train=False).shape == (2, 8, 8, 5)
    emb = C.Embed(16)
    y = emb.apply(emb.init(key, jnp.ones((3, 12))), jnp.ones((3, 12)))
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=1), 1.0, rtol=1e-6)
    oh_c = C.OHConnector(10)
    assert oh_c.apply(oh_c.init(key, x, train=False), x, train=False).shape == (2, 8, 8, 10)


def test_overhaul_margin_branches():
    m = losses.overhaul_margin(jnp.array([1.0, -1.0, 1.0, 0.0, 0.0]),
                               jnp.array([0.0, 0.0, 4.0, -2.0, 1.0]))
    # E[x | x < 0] for N(0, 1) is -sqrt(2/pi); |gamma| is the std; tail < 0.001 -> -3s;
    # gamma = 0 -> min(beta, 0)
    np.testing.assert_allclose(m, [-np.sqrt(2 / np.pi), -np.sqrt(2 / np.pi), -3.0, -2.0, 0.0],
                               rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------

_F = jnp.zeros((2, 4, 4, 3))
_G = jnp.zeros((2, 4, 4, 5))
_E = jnp.zeros((2, 6))


@pytest.mark.parametrize("call", [
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
])
def test_invalid_hyperparameters_raise(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("call,shapes", [
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
    (lambda: losses.vid(jnp.zeros((2, 8, 8, 3)), jnp.zeros(3), _F), ["(2, 8, 8, 3)", "(2, 4, 4, 3)"]),
    (lambda: losses.ab([_F], [_G]), ["(2, 4, 4, 3)", "(2, 4, 4, 5)"]),
    (lambda: losses.ft(_F, jnp.zeros((3, 4, 4, 3))), ["(2, 4, 4, 3)", "(3, 4, 4, 3)"]),
    (lambda: losses.fsp([_F, _F], [_G, _G]), ["(2, 4, 4, 3)", "(2, 4, 4, 5)"]),
    (lambda: losses.nst([_F], [jnp.zeros((3, 4, 4, 3))]), ["(2, 4, 4, 3)", "(3, 4, 4, 3)"]),
    (lambda: losses.oh([_F], [_G], [jnp.zeros(5)]), ["(2, 4, 4, 3)", "(2, 4, 4, 5)"]),
    (lambda: losses.oh([_F], [_F], [jnp.zeros(4)]), ["(4,)", "(2, 4, 4, 3)"]),
    (lambda: losses.overhaul_margin(jnp.zeros(3), jnp.zeros(4)), ["(3,)", "(4,)"]),
    (lambda: C.ConvReg((2, 4, 4, 3), (2, 6, 6, 5)), ["(2, 4, 4, 3)", "(2, 6, 6, 5)"]),
])
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
