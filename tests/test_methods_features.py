"""Feature / relational / contrastive method terms (kdjax.methods families), CRD and their configs.

* every new term builds through ``build_method`` and ``Method.loss`` on tap dicts with the shapes
  of real kdjax models (``jax.eval_shape``) and equals its ``kdjax.losses`` function applied by
  hand (with the same connector parameters);
* CRD: golden against RepDistiller's ``ContrastMemory`` / ``ContrastLoss`` (torch, float64,
  ``tools/goldens/make_crd_goldens.py``), memory update, fixed Z, state bookkeeping;
* one real jitted training step (``make_steps``) with FitNet (connector with BN statistics) and
  CRD (stateful) on ``tiny_cnn``;
* ``configs/cifar100/repdistiller.py`` and ``wttm_crd.py``: every method x pair loads, validates,
  builds, and its connectors / losses trace on the real tap shapes.
"""

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import losses, models
from kdjax.config import validate
from kdjax.losses import connectors as conn
from kdjax.losses import contrastive as C
from kdjax.methods import Batch, BuildContext, Outputs, build_method, connector_calls
from kdjax.train import state as state_lib
from kdjax.train.step import make_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "crd_loss.npz")
B = 4
N_DATA = 20


@functools.lru_cache(maxsize=None)
def tap_shapes(name, size=32):
  """Tap shapes (batch 1) of a real kdjax model, by abstract evaluation only."""
  m = models.get(name, num_classes=100)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  _, taps = jax.eval_shape(lambda x: m.apply(m.init(jax.random.PRNGKey(0), x), x), x)
  return {k: tuple(v.shape) for k, v in taps.items()}


def random_outputs(shapes, seed, batch=B):
  rs = np.random.RandomState(seed)
  taps = {k: jnp.asarray(rs.randn(batch, *s[1:]).astype(np.float32)) for k, s in shapes.items()}
  return Outputs(jnp.asarray(rs.randn(batch, 100).astype(np.float32)), taps)


def init_variables(method, s_shapes, t_shapes, seed):
  """``(modules, params, stats)`` of a bound method's connectors with the shapes
  ``Method.init_connectors`` gives (abstract evaluation), filled from numpy: the term-vs-by-hand
  checks need some values, and compiling the random initialisers of every connector (as the
  trainer does once per run) would dominate this file's runtime."""
  modules = method.connectors()
  a_params, a_stats = jax.eval_shape(
    lambda: method.init_connectors(s_shapes, t_shapes, jax.random.PRNGKey(0))[1:]
  )
  params, stats = {}, {}
  for i, k in enumerate(sorted(modules)):
    rs = np.random.RandomState(seed + i)

    def fill(path, a):
      names = [getattr(p, "key", None) for p in path]
      if names[0] == "batch_stats":
        return jnp.zeros(a.shape, a.dtype) if names[-1] == "mean" else jnp.ones(a.shape, a.dtype)
      if names[-1] == "scale":
        return jnp.asarray(1.0 + 0.1 * rs.randn(*a.shape), a.dtype)
      fan_in = int(np.prod(a.shape[:-1])) if len(a.shape) >= 2 else 100
      return jnp.asarray(rs.randn(*a.shape) / np.sqrt(fan_in), a.dtype)

    tree = {"params": a_params[k], **({"batch_stats": a_stats[k]} if k in a_stats else {})}
    cv = jax.tree_util.tree_map_with_path(fill, tree)
    params[k] = cv["params"]
    if "batch_stats" in cv:
      stats[k] = cv["batch_stats"]
  return modules, params, stats


def ctx(n, s_shapes, t_shapes, teacher_variables=None):
  return BuildContext(n, teacher_variables, s_shapes, t_shapes or {})


def run_term(loss, hp, s_name, t_name, *, weight=2.0, ce_weight=0.5, seed=0):
  """Builds a one-term method, binds it to the pair, initialises its connector / state as
  ``init_train_state`` does and evaluates ``Method.loss``. Returns a dict with everything the
  by-hand computation needs."""
  s_shapes, t_shapes = tap_shapes(s_name), tap_shapes(t_name)
  method = build_method(
    dict(name="t", ce_weight=ce_weight, terms={"term": dict(loss=loss, weight=weight, **hp)})
  )
  method = method.bind(s_shapes, t_shapes)
  mods, params, stats = init_variables(method, s_shapes, t_shapes, 100)
  states = method.init_states(ctx(N_DATA, s_shapes, t_shapes), jax.random.PRNGKey(5))
  s_out, t_out = random_outputs(s_shapes, seed), random_outputs(t_shapes, seed + 1)
  t_out = Outputs(t_out.logits, {k: t_out.taps[k] for k in method.teacher_taps})
  labels = jnp.arange(B) % 7
  batch = Batch(labels, jnp.array([3, 7, 11, 19])[:B], 1)
  calls, new_stats = connector_calls(mods, params, stats)
  total, metrics, new_states = method.loss(
    s_out, t_out, batch, connectors=calls, states=states, return_states=True
  )
  ce = -jnp.take_along_axis(jax.nn.log_softmax(s_out.logits), labels[:, None], 1)[:, 0]
  return dict(
    method=method,
    total=total,
    metrics=metrics,
    s=s_out,
    t=t_out,
    batch=batch,
    params=params.get("term"),
    stats=stats.get("term"),
    new_stats=new_stats.get("term"),
    states=states.get("term"),
    new_states=new_states.get("term"),
    ce=ce,
    weight=weight,
    ce_weight=ce_weight,
    module=mods.get("term"),
  )


def check_value(r, expected, rtol=1e-5, atol=1e-6):
  expected = np.asarray(expected)
  assert expected.shape == (B,)
  np.testing.assert_allclose(float(r["metrics"]["term"]), expected.mean(), rtol=rtol, atol=atol)
  np.testing.assert_allclose(
    np.asarray(r["total"]),
    r["ce_weight"] * np.asarray(r["ce"]) + r["weight"] * expected,
    rtol=rtol,
    atol=atol,
  )


def bn_apply(module, params, stats, *args, **kw):
  v = {"params": params}
  if stats is not None:
    v["batch_stats"] = stats
    return module.apply(v, *args, mutable=["batch_stats"], **kw)[0]
  return module.apply(v, *args, **kw)


HOMO = ("resnet8", "resnet14")  # student, teacher (identical tap shapes)
HETERO = ("vgg8", "resnet8x4")  # 4-stage student vs 3-stage teacher, different widths
PAIRS_UNDER_TEST = [HOMO, HETERO]
STAGES3 = ("stage1", "stage2", "stage3")


# --------------------------------------------------------------------------------------------
# terms == losses by hand
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pair", PAIRS_UNDER_TEST)
def test_fitnet_term_is_mse_of_convreg(pair):
  r = run_term("fitnet", {}, *pair)
  tap = "stage2"
  ss, ts = tap_shapes(pair[0])[tap], tap_shapes(pair[1])[tap]
  reg = bn_apply(
    conn.ConvReg(ss, ts), r["params"]["reg"], r["stats"]["reg"], r["s"].taps[tap], True
  )
  check_value(r, losses.fitnet(reg, r["t"].taps[tap]))
  assert r["method"].teacher_taps == (tap,)
  # the BN running statistics of the regressor were updated in training mode
  assert not np.allclose(r["stats"]["reg"]["bn"]["mean"], r["new_stats"]["reg"]["bn"]["mean"])


def test_fitnet_hint_layer_reads_its_stage():
  for k, tap in ((0, "stem"), (1, "stage1"), (3, "stage3")):
    r = run_term("fitnet", dict(hint_layer=k), *HOMO)
    assert r["method"].teacher_taps == (tap,)
    ss = tap_shapes(HOMO[0])[tap]
    reg = bn_apply(
      conn.ConvReg(ss, ss), r["params"]["reg"], r["stats"]["reg"], r["s"].taps[tap], True
    )
    check_value(r, losses.fitnet(reg, r["t"].taps[tap]))


@pytest.mark.parametrize("pair", PAIRS_UNDER_TEST)
@pytest.mark.parametrize("name", ["at", "nst"])
def test_multistage_terms_sum_over_all_stages(pair, name):
  hp = dict(p=2.0) if name == "at" else {}
  r = run_term(name, hp, *pair)
  s = [r["s"].taps[k] for k in STAGES3]
  t = [r["t"].taps[k] for k in STAGES3]
  check_value(r, getattr(losses, name)(s, t, **hp))


def test_all_layers_of_a_four_stage_pair_read_stage4_and_bad_layers_are_reported():
  r = run_term("at", {}, "vgg8", "vgg13")
  keys = ("stage1", "stage2", "stage3", "stage4")
  assert r["method"].teacher_taps == keys
  check_value(r, losses.at([r["s"].taps[k] for k in keys], [r["t"].taps[k] for k in keys]))
  # 'all' of a 4-stage student and a 3-stage teacher = their common stages 1..3
  m = build_method(dict(terms={"at": dict(weight=1.0)})).bind(
    tap_shapes("vgg8"), tap_shapes("resnet8x4")
  )
  assert m.teacher_taps == STAGES3 and m.student_taps == STAGES3
  m = build_method(dict(terms={"at": dict(weight=1.0, layers=(1, 4))}))
  with pytest.raises(ValueError, match=r"method.terms.at: term at: layers must be .* in 1..3"):
    m.bind(tap_shapes("vgg8"), tap_shapes("resnet8x4"))
  r = run_term("at", dict(layers=(2, 3)), *HOMO)
  assert r["method"].student_taps == ("stage2", "stage3")
  check_value(
    r,
    losses.at(
      [r["s"].taps[k] for k in ("stage2", "stage3")], [r["t"].taps[k] for k in ("stage2", "stage3")]
    ),
  )


@pytest.mark.parametrize("pair", PAIRS_UNDER_TEST)
def test_sp_reads_last_stage(pair):
  r = run_term("sp", {}, *pair)
  check_value(r, losses.sp(r["s"].taps["stage3"], r["t"].taps["stage3"]))
  r4 = run_term("sp", {}, "vgg8", "vgg13")
  check_value(r4, losses.sp(r4["s"].taps["stage4"], r4["t"].taps["stage4"]))


@pytest.mark.parametrize("pair", PAIRS_UNDER_TEST)
@pytest.mark.parametrize("name,hp", [("rkd", dict(w_dist=25.0, w_angle=50.0)), ("pkt", {})])
def test_pooled_relational_terms(pair, name, hp):
  r = run_term(name, hp, *pair)
  check_value(r, getattr(losses, name)(r["s"].taps["pooled"], r["t"].taps["pooled"], **hp))


@pytest.mark.parametrize("pair", PAIRS_UNDER_TEST)
def test_cc_uses_two_linear_embeds(pair):
  r = run_term("cc", dict(feat_dim=128), *pair)
  p = r["params"]
  e_s = conn.LinearEmbed(128).apply({"params": p["embed_s"]}, r["s"].taps["pooled"])
  e_t = conn.LinearEmbed(128).apply({"params": p["embed_t"]}, r["t"].taps["pooled"])
  assert p["embed_s"]["linear"]["kernel"].shape == (tap_shapes(pair[0])["pooled"][1], 128)
  check_value(r, losses.cc(e_s, e_t))


@pytest.mark.parametrize("pair", PAIRS_UNDER_TEST)
def test_vid_one_regressor_per_stage(pair):
  r = run_term("vid", dict(init_pred_var=5.0, eps=1e-5), *pair)
  expected = 0.0
  for i, k in enumerate(STAGES3):
    ts = tap_shapes(pair[1])[k]
    mu, ls = conn.VIDRegressor(ts[3], ts[3]).apply(
      {"params": r["params"][f"vid{i + 1}"]}, r["s"].taps[k], target_hw=ts[1:3]
    )
    expected = expected + losses.vid(mu, ls, r["t"].taps[k], eps=1e-5)
  check_value(r, expected)


@pytest.mark.parametrize("pair", PAIRS_UNDER_TEST)
def test_ab_connectors_on_preact_stages(pair):
  r = run_term("ab", dict(margin=1.0), *pair)
  keys = tuple(f"preact_{k}" for k in STAGES3)
  outs = []
  for i, k in enumerate(keys):
    c = conn.ABConnector(tap_shapes(pair[0])[k], tap_shapes(pair[1])[k])
    if c.is_identity:
      outs.append(r["s"].taps[k])
    else:
      outs.append(
        bn_apply(c, r["params"][f"ab{i + 1}"], r["stats"][f"ab{i + 1}"], r["s"].taps[k], True)
      )
  check_value(r, losses.ab(outs, [r["t"].taps[k] for k in keys], margin=1.0), rtol=2e-5)
  if pair == HOMO:  # all identity: only the documented placeholder parameter
    assert set(r["params"]) == {"identity_placeholder"}


@pytest.mark.parametrize("pair", PAIRS_UNDER_TEST)
def test_ft_translator_and_trainable_paraphraser(pair):
  hp = dict(k=0.5, paraphraser_recon_weight=0.01)
  r = run_term("ft", hp, *pair)
  ss, ts = tap_shapes(pair[0])["stage3"], tap_shapes(pair[1])["stage3"]
  f_s, f_t = r["s"].taps["stage3"], r["t"].taps["stage3"]
  factor_s = bn_apply(
    conn.Translator(ss, ts, 0.5), r["params"]["translator"], r["stats"]["translator"], f_s, True
  )
  factor_t, recon = conn.Paraphraser(ts, 0.5).apply({"params": r["params"]["paraphraser"]}, f_t)
  expected = losses.ft(factor_s, factor_t) + 0.01 * jnp.mean(
    jnp.square(recon - f_t), axis=(1, 2, 3)
  )
  check_value(r, expected)


def test_fsp_and_oh_terms():
  r = run_term("fsp", {}, *HOMO)
  keys = ("stem",) + STAGES3
  check_value(r, losses.fsp([r["s"].taps[k] for k in keys], [r["t"].taps[k] for k in keys]))
  # FSP needs equal channels: a clear error when the loss is traced
  with pytest.raises(ValueError, match="same number of channels"):
    run_term("fsp", {}, *HETERO)

  r = run_term(
    "oh", dict(scale=1e-3, margins="batch"), *HOMO
  )  # (teacher-BN margins: test_oh_margins.py)
  keys = tuple(f"preact_{k}" for k in STAGES3)
  t_pre = [r["t"].taps[k] for k in keys]
  margins = [
    losses.overhaul_margin(jnp.std(x, axis=(0, 1, 2)), jnp.mean(x, axis=(0, 1, 2))) for x in t_pre
  ]
  outs = [
    bn_apply(
      conn.OHConnector(x.shape[-1]),
      r["params"][f"oh{i + 1}"],
      r["stats"][f"oh{i + 1}"],
      r["s"].taps[k],
      True,
    )
    for i, (k, x) in enumerate(zip(keys, t_pre))
  ]
  check_value(r, losses.oh(outs, t_pre, margins, scale=1e-3))
  assert int(r["states"]["is_set"]) == 0 and int(r["new_states"]["is_set"]) == 1
  for m_new, m in zip(r["new_states"]["margins"], margins):
    np.testing.assert_allclose(m_new, m, rtol=1e-6)


def _init_connectors(m, s_shapes, t_shapes):
  m = m.bind(s_shapes, t_shapes)
  return jax.eval_shape(lambda: m.init_connectors(s_shapes, t_shapes, jax.random.PRNGKey(0))[1:])


def test_connectors_raise_clear_errors_when_shapes_cannot_be_bridged():
  bad_s = {"stage2": (1, 4, 4, 8), "stem": (1, 8, 8, 8)}
  bad_t = {"stage2": (1, 16, 16, 8), "stem": (1, 8, 8, 8)}
  m = build_method(dict(terms={"fitnet": dict(weight=1.0)}))
  with pytest.raises(ValueError, match="ConvReg cannot bridge student"):
    _init_connectors(m, {"stage1": bad_s["stage2"], **bad_s}, {"stage1": bad_t["stage2"], **bad_t})
  m = build_method(dict(terms={"oh": dict(loss="oh", weight=1.0)}))
  with pytest.raises(ValueError, match="spatial sizes differ"):
    _init_connectors(m, tap_shapes("vgg8"), tap_shapes("resnet8x4"))
  m = build_method(dict(terms={"ab": dict(loss="ab", weight=1.0, layers=(1,))}))
  with pytest.raises(ValueError, match="AB connector cannot bridge"):
    _init_connectors(m, {"preact_stage1": (1, 4, 4, 8)}, {"preact_stage1": (1, 16, 16, 8)})
  with pytest.raises(ValueError, match="unknown hyper-parameter 'hint'"):
    build_method(dict(terms={"fitnet": dict(weight=1.0, hint=3)}))
  with pytest.raises(ValueError, match="feat_dim must be an integer >= 1"):
    build_method(dict(terms={"crd": dict(weight=1.0, feat_dim=0)}))
  s, t = tap_shapes("resnet8"), tap_shapes("resnet14")
  m = build_method(dict(terms={"crd": dict(weight=1.0, nce_t=-1.0)})).bind(s, t)
  with pytest.raises(ValueError, match="nce_t must be a finite number > 0"):
    m.init_states(ctx(10, s, t), jax.random.PRNGKey(0))
  m = build_method(dict(terms={"crd": dict(weight=1.0, negatives="hard")})).bind(s, t)
  with pytest.raises(ValueError, match="negatives must be one of"):
    m.init_states(ctx(10, s, t), jax.random.PRNGKey(0))


# --------------------------------------------------------------------------------------------
# CRD
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pair", PAIRS_UNDER_TEST)
@pytest.mark.parametrize("negatives", ["uniform", "other_class"])
def test_crd_term_matches_pure_loss_and_updates_exactly_the_batch_rows(pair, negatives):
  hp = dict(feat_dim=16, nce_k=9, nce_t=0.07, nce_m=0.5, negatives=negatives)
  r = run_term("crd", hp, *pair)
  st, new = r["states"], r["new_states"]
  assert st["memory_s"].shape == (N_DATA, 16) and float(st["z_s"]) == -1.0
  stdv = 1.0 / np.sqrt(16 / 3)
  assert np.abs(st["memory_s"]).max() <= stdv
  p = r["params"]
  e_s = conn.Embed(16).apply({"params": p["embed_s"]}, r["s"].taps["pooled"])
  e_t = conn.Embed(16).apply({"params": p["embed_t"]}, r["t"].taps["pooled"])
  key = jax.random.split(st["rng"])[1]
  idx = r["batch"].index
  if negatives == "uniform":
    neg = C.crd_sample_negatives(key, B, 9, N_DATA)
  else:
    bank = st["labels"].at[idx].set(r["batch"].labels)
    neg = C.crd_sample_negatives(key, B, 9, N_DATA, labels=r["batch"].labels, label_bank=bank)
    np.testing.assert_array_equal(new["labels"], bank)
    # known same-class indices are never drawn (here: only the batch's own labels are known)
    assert not np.any(np.asarray(bank)[np.asarray(neg)] == np.asarray(r["batch"].labels)[:, None])
  assert neg.shape == (B, 9) and int(neg.min()) >= 0 and int(neg.max()) < N_DATA
  expected, (z_s, z_t) = C.crd(
    e_s, e_t, st["memory_s"], st["memory_t"], idx, neg, nce_t=0.07, num_data=N_DATA, return_z=True
  )
  check_value(r, expected, rtol=2e-5)
  np.testing.assert_allclose(new["z_s"], z_s, rtol=1e-6)
  np.testing.assert_allclose(new["z_t"], z_t, rtol=1e-6)
  assert float(new["z_s"]) > 0 and float(new["z_t"]) > 0
  assert not np.array_equal(new["rng"], st["rng"])
  for name, e in (("memory_s", e_s), ("memory_t", e_t)):
    old, upd = np.asarray(st[name]), np.asarray(new[name])
    changed = np.where(np.any(old != upd, axis=1))[0]
    np.testing.assert_array_equal(changed, np.sort(np.asarray(idx)))
    rows = 0.5 * old[np.asarray(idx)] + 0.5 * np.asarray(e)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    np.testing.assert_allclose(upd[np.asarray(idx)], rows, rtol=1e-5, atol=1e-6)


def test_crd_second_call_keeps_z_fixed():
  s_shapes, t_shapes = tap_shapes("resnet8"), tap_shapes("resnet14")
  method = build_method(dict(terms={"crd": dict(weight=0.8, feat_dim=8, nce_k=5)}))
  method = method.bind(s_shapes, t_shapes)
  mods, params, stats = init_variables(method, s_shapes, t_shapes, 0)
  states = method.init_states(ctx(N_DATA, s_shapes, t_shapes), jax.random.PRNGKey(1))
  calls, _ = connector_calls(mods, params, stats)
  outs = []
  for seed in (0, 1):
    s_out, t_out = random_outputs(s_shapes, seed), random_outputs(t_shapes, seed + 10)
    _, _, states = method.loss(
      s_out,
      t_out,
      Batch(jnp.zeros(B, jnp.int32), jnp.arange(B) + seed),
      connectors=calls,
      states=states,
      return_states=True,
    )
    outs.append((float(states["crd"]["z_s"]), float(states["crd"]["z_t"])))
  assert outs[0] == outs[1] and outs[0][0] > 0


def _golden():
  return dict(np.load(GOLDEN))


@pytest.mark.parametrize("score_mode", ["table", "gather"])
def test_crd_golden_against_repdistiller(score_mode):
  g = _golden()
  n = int(g["num_data"])
  with jax.enable_x64(True):
    ms, mt = jnp.asarray(g["memory_s0"]), jnp.asarray(g["memory_t0"])
    z_s = z_t = -1.0
    for k in (1, 2):

      def f(es, et):
        return C.crd(
          es,
          et,
          ms,
          mt,
          g[f"index{k}"],
          g[f"contrast_idx{k}"],
          nce_t=float(g["nce_t"]),
          num_data=n,
          z_s=z_s,
          z_t=z_t,
          score_mode=score_mode,
        )

      es, et = jnp.asarray(g[f"embed_s{k}"]), jnp.asarray(g[f"embed_t{k}"])
      pe = f(es, et)
      assert pe.dtype == jnp.float64
      np.testing.assert_allclose(np.mean(pe), g[f"loss{k}"], rtol=1e-5)
      np.testing.assert_allclose(pe, g[f"per_example{k}"], rtol=1e-5)
      gs, gt = jax.grad(lambda a, b: jnp.mean(f(a, b)), argnums=(0, 1))(es, et)
      np.testing.assert_allclose(gs, g[f"grad_s{k}"], rtol=1e-5, atol=1e-12)
      np.testing.assert_allclose(gt, g[f"grad_t{k}"], rtol=1e-5, atol=1e-12)
      _, (zs_new, zt_new) = C.crd(
        es,
        et,
        ms,
        mt,
        g[f"index{k}"],
        g[f"contrast_idx{k}"],
        nce_t=float(g["nce_t"]),
        num_data=n,
        z_s=z_s,
        z_t=z_t,
        return_z=True,
      )
      np.testing.assert_allclose([zs_new, zt_new], [g["z_s"], g["z_t"]], rtol=1e-10)
      z_s, z_t = zs_new, zt_new
      ms = C.crd_update_memory(ms, es, g[f"index{k}"], momentum=float(g["nce_m"]))
      mt = C.crd_update_memory(mt, et, g[f"index{k}"], momentum=float(g["nce_m"]))
      np.testing.assert_allclose(ms, g[f"memory_s{k}"], rtol=1e-10, atol=1e-12)
      np.testing.assert_allclose(mt, g[f"memory_t{k}"], rtol=1e-10, atol=1e-12)


def test_crd_float32_matches_golden_and_memory_gets_no_gradient():
  g = _golden()
  ms, mt = jnp.asarray(g["memory_s0"], jnp.float32), jnp.asarray(g["memory_t0"], jnp.float32)
  es, et = jnp.asarray(g["embed_s1"], jnp.float32), jnp.asarray(g["embed_t1"], jnp.float32)
  f = lambda a, b, m1, m2: jnp.mean(
    C.crd(a, b, m1, m2, g["index1"], g["contrast_idx1"], nce_t=0.07, num_data=int(g["num_data"]))
  )
  np.testing.assert_allclose(f(es, et, ms, mt), g["loss1"], rtol=1e-4)
  gm1, gm2 = jax.grad(f, argnums=(2, 3))(es, et, ms, mt)
  assert float(jnp.abs(gm1).max()) == 0.0 and float(jnp.abs(gm2).max()) == 0.0


def test_crd_queue_term_and_fifo():
  hp = dict(feat_dim=8, queue_size=6, nce_t=0.1)
  r = run_term("crd_queue", hp, *HOMO)
  st, new = r["states"], r["new_states"]
  p = r["params"]
  e_s = conn.Embed(8).apply({"params": p["embed_s"]}, r["s"].taps["pooled"])
  e_t = conn.Embed(8).apply({"params": p["embed_t"]}, r["t"].taps["pooled"])
  assert float(st["num_data"]) == N_DATA
  expected = C.crd_queue(e_s, e_t, st["queue_s"], st["queue_t"], nce_t=0.1, num_data=N_DATA)
  check_value(r, expected, rtol=2e-5)

  # by hand: anchor, positive = the other network's embedding, negatives = the other queue
  def view(anchor, positive, queue):
    lg = jnp.concatenate([jnp.sum(anchor * positive, 1, keepdims=True), anchor @ queue.T], 1) / 0.1
    return lg - (jax.nn.logsumexp(lg) - np.log(lg.size) + np.log(N_DATA))

  by_hand = C.crd_nce(view(e_s, e_t, st["queue_t"]), N_DATA) + C.crd_nce(
    view(e_t, e_s, st["queue_s"]), N_DATA
  )
  np.testing.assert_allclose(expected, by_hand, rtol=1e-5)
  np.testing.assert_allclose(new["queue_s"][:B], e_s, rtol=1e-6)
  np.testing.assert_array_equal(new["queue_s"][B:], st["queue_s"][B:])
  assert int(new["ptr"]) == B
  q, ptr = C.crd_enqueue(new["queue_s"], e_s, new["ptr"])  # wraps around
  assert int(ptr) == (2 * B) % 6
  np.testing.assert_allclose(q[B:], e_s[: 6 - B], rtol=1e-6)
  np.testing.assert_allclose(q[: 2 * B - 6], e_s[6 - B :], rtol=1e-6)


# --------------------------------------------------------------------------------------------
# a real jitted training step: FitNet (connector with BN stats) + CRD (stateful)
# --------------------------------------------------------------------------------------------
def test_jitted_step_with_fitnet_and_crd_moves_connectors_and_memory():
  student = models.get("tiny_cnn", num_classes=10, width=8)
  teacher = models.get("tiny_cnn", num_classes=10, width=12)
  x0 = jnp.zeros((1, 16, 16, 3))
  tv = teacher.init(jax.random.PRNGKey(1), x0)
  method = build_method(
    dict(
      name="fitnet_crd",
      ce_weight=1.0,
      terms=dict(
        fitnet=dict(weight=1.0), crd=dict(weight=0.8, feat_dim=16, nce_k=7, negatives="other_class")
      ),
    )
  )
  n = 32
  tx = optax.sgd(0.1, momentum=0.9)
  built = state_lib.init_train_state(
    student, (teacher, tv), method, x0, jax.random.PRNGKey(0), tx=tx, num_examples=n
  )
  state = built.state
  assert set(state.batch_stats["connectors"]) == {"fitnet"}
  before = jax.tree_util.tree_map(np.array, (state.params, state.batch_stats, state.method_state))
  steps = make_steps(
    student=student,
    method=built.method,
    tx=tx,
    train_transform=lambda im, r: im.astype(jnp.float32) / 255.0,
    eval_transform=lambda im: im.astype(jnp.float32) / 255.0,
    teacher=teacher,
    connectors=built.connectors,
  )
  rs = np.random.RandomState(0)
  images = rs.randint(0, 255, (n, 16, 16, 3)).astype(np.uint8)
  labels = rs.randint(0, 10, (n,)).astype(np.int32)
  ds_index = np.arange(n, dtype=np.int32)[::-1].copy()  # dataset index != position
  pos = np.array([0, 5, 9, 30, 12, 3, 21, 17], np.int32)
  new_state, metrics = steps.train_indexed(state, images, labels, ds_index, pos, tv)
  p0, bs0, ms_before = before
  assert np.isfinite(float(metrics["loss"])) and "crd" in metrics and "fitnet" in metrics
  for k in ("fitnet", "crd"):
    moved = jax.tree_util.tree_map(
      lambda a, b: not np.allclose(a, b), p0["connectors"][k], new_state.params["connectors"][k]
    )
    if k == "fitnet":  # the conv bias before BN has an exactly-zero gradient (BN removes it)
      assert not moved["reg"]["conv"].pop("bias")
    assert all(jax.tree_util.tree_leaves(moved)), (k, moved)
  assert not np.allclose(
    bs0["connectors"]["fitnet"]["reg"]["bn"]["mean"],
    new_state.batch_stats["connectors"]["fitnet"]["reg"]["bn"]["mean"],
  )
  crd0, crd1 = ms_before["crd"], jax.device_get(new_state.method_state["crd"])
  rows = np.sort(ds_index[pos])
  for name in ("memory_s", "memory_t"):
    changed = np.where(np.any(np.asarray(crd0[name]) != np.asarray(crd1[name]), axis=1))[0]
    np.testing.assert_array_equal(changed, rows)
  assert float(crd1["z_s"]) > 0 and float(crd1["z_t"]) > 0
  np.testing.assert_array_equal(np.asarray(crd1["labels"])[ds_index[pos]], labels[pos])


# --------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------
_MODULES = {}


def _load(name):
  if name not in _MODULES:
    spec = importlib.util.spec_from_file_location(
      f"cfg_{name}", os.path.join(ROOT, "configs", "cifar100", f"{name}.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _MODULES[name] = mod
  return _MODULES[name]


ALL_13 = (
  "wrn_40_2-wrn_16_2",
  "wrn_40_2-wrn_40_1",
  "resnet56-resnet20",
  "resnet110-resnet20",
  "resnet110-resnet32",
  "resnet32x4-resnet8x4",
  "vgg13-vgg8",
  "vgg13-MobileNetV2",
  "ResNet50-MobileNetV2",
  "ResNet50-vgg8",
  "resnet32x4-ShuffleV1",
  "resnet32x4-ShuffleV2",
  "wrn_40_2-ShuffleV1",
)
LOW_LR = ("MobileNetV2", "ShuffleV1", "ShuffleV2")
RD_WEIGHTS = {
  "kd": (0.1, 0.9),
  "fitnet": (1, 100),
  "at": (1, 1000),
  "sp": (1, 3000),
  "cc": (1, 0.02),
  "vid": (1, 1),
  "rkd": (1, 1),
  "pkt": (1, 30000),
  "ab": (1, 1),
  "ft": (1, 200),
  "fsp": (1, 50),
  "nst": (1, 50),
  "crd": (1, 0.8),
}


def _trace_method(method, s_name, t_name):
  """Bound to the pair, connectors initialised, states initialised and the loss traced
  (abstractly) on the real tap shapes: every shape error surfaces here."""
  s_shapes, t_shapes = tap_shapes(s_name), tap_shapes(t_name)
  method = method.bind(s_shapes, t_shapes)

  def run():
    mods, params, stats = method.init_connectors(s_shapes, t_shapes, jax.random.PRNGKey(0))
    states = method.init_states(ctx(64, s_shapes, t_shapes), jax.random.PRNGKey(0))
    s = Outputs(jnp.zeros((2, 100)), {k: jnp.ones((2,) + v[1:]) for k, v in s_shapes.items()})
    t = Outputs(
      jnp.zeros((2, 100)), {k: jnp.ones((2,) + t_shapes[k][1:]) for k in method.teacher_taps}
    )
    calls, _ = connector_calls(mods, params, stats)
    return method.loss(
      s, t, Batch(jnp.zeros(2, jnp.int32), jnp.arange(2)), connectors=calls, states=states
    )[0]

  out = jax.eval_shape(run)
  assert out.shape == (2,)


@pytest.mark.parametrize("method", list(RD_WEIGHTS))
def test_repdistiller_configs_every_pair(method):
  mod = _load("repdistiller")
  assert set(mod.PAIRS) == set(ALL_13) and tuple(mod.METHOD_ORDER) == tuple(RD_WEIGHTS)
  for pair in ALL_13:
    teacher, student = pair.split("-")
    published = mod.PAIRS[pair][4][method]
    line = [l for l in mod.__doc__.splitlines() if l.strip().startswith(pair + " ")]
    assert len(line) == 1
    col = 2 + mod.METHOD_ORDER.index(method)
    assert line[0].split()[1 + col] == ("-" if published is None else f"{published:.2f}")
    if published is None:
      assert method == "fsp"
      with pytest.raises(ValueError, match="N/A"):
        mod.get_config(f"{method}:{pair}")
      continue
    assert 55 < published < 80
    cfg = mod.get_config(f"{method}:{pair}")
    validate(cfg)
    m = build_method(cfg.method)
    r, b = RD_WEIGHTS[method]
    assert m.ce_weight == r and m.needs_teacher
    assert cfg.model == student and cfg.teacher.workdir == f"runs/cifar100/teacher_{teacher}"
    assert cfg.optim.lr == (0.01 if student in LOW_LR else 0.05)
    assert cfg.num_epochs == 240 and tuple(cfg.optim.milestones) == (150, 180, 210)
    assert cfg.batch_size == 64
    weights = {t.key: t.weight for t in m.terms}
    if method == "kd":
      assert weights == {"kd": 0.9}
    elif method in ("ab", "fsp"):  # init stage only (weight 1); the main stage is CE alone
      assert weights == {} and m.trainable == ("student",)
    else:
      assert weights == {method: b}
    if method in ("ab", "ft", "fsp"):  # RepDistiller's 30-epoch init stage (test_stages.py)
      assert m.init.epochs == 30 and m.init.method.ce_weight == 0.0
      assert {t.key: t.weight for t in m.init.method.terms} == {method: 1.0}
    else:
      assert m.init is None and m.trainable == ("student", "connectors")
    if method in ("at", "nst", "vid"):  # layers='all' = RepDistiller's feat[1:-1] of the pair
      n = len(m.bind(tap_shapes(student), tap_shapes(teacher)).terms[0].student_taps)
      assert n == min(
        models.get(student, num_classes=100).num_stages,
        models.get(teacher, num_classes=100).num_stages,
      )
      assert n == (4 if any(f in pair for f in ("vgg", "MobileNet", "ResNet50")) else 3)
    _trace_method(m, student, teacher)
    if m.init is not None:
      _trace_method(m.init.method, student, teacher)


def test_repdistiller_config_rejects_bad_arguments():
  mod = _load("repdistiller")
  with pytest.raises(ValueError, match="METHOD:TEACHER-STUDENT"):
    mod.get_config("resnet32x4-resnet8x4")
  with pytest.raises(ValueError, match="Unknown pair"):
    mod.get_config("crd:resnet32x4-resnet20")
  cfg = mod.get_config("fitnet:vgg13-MobileNetV2")
  assert "loss" not in cfg.method.terms.fitnet and cfg.method.terms.fitnet.hint_layer == 2
  assert mod.get_config("crd:resnet32x4-resnet8x4").method.terms.crd.nce_k == 16384


@pytest.mark.parametrize("pair", ALL_13)
def test_wttm_crd_configs(pair):
  mod = _load("wttm_crd")
  assert set(mod.PAIRS) == set(ALL_13)
  teacher, student, gamma, beta, published = mod.PAIRS[pair]
  cfg = mod.get_config(pair)
  validate(cfg)
  m = build_method(cfg.method)
  assert m.ce_weight == 1.0
  assert {t.key: (t.spec.name, t.weight) for t in m.terms} == {
    "crd": ("crd", 0.8),
    "wttm": ("wttm", beta),
  }
  assert dict(cfg.method.terms.wttm) == dict(weight=beta, gamma=gamma)
  assert cfg.model == student and cfg.optim.lr == (0.01 if student in LOW_LR else 0.05)
  line = [l for l in mod.__doc__.splitlines() if l.strip().startswith(pair + " ")]
  assert len(line) == 1 and f"{published:.2f}" in line[0]
  assert line[0].split()[1:3] == [f"{gamma:g}", f"{beta:g}"]
  assert mod.PAIRS["vgg13-vgg8"][2:4] == (0.2, 4.0)  # the zkxufo/TTM README command
  _trace_method(m, student, teacher)


@pytest.mark.parametrize(
  "pair", ["resnet32x4-resnet8x4", "vgg13-MobileNetV2", "wrn_40_2-ShuffleV1"]
)
@pytest.mark.parametrize("itrd_only", [False, True])
def test_wttm_itrd_configs(pair, itrd_only):
  mod = _load("wttm_itrd")
  assert set(mod.PAIRS) == set(ALL_13)
  gamma, beta, pub_wttm_itrd, pub_itrd = mod.PAIRS[pair]
  cfg = mod.get_config(("itrd:" if itrd_only else "") + pair)
  validate(cfg)
  m = build_method(cfg.method)
  want = {"itrd": ("itrd", 1.0)} if itrd_only else {"itrd": ("itrd", 1.0), "wttm": ("wttm", beta)}
  assert {t.key: (t.spec.name, t.weight) for t in m.terms} == want
  line = [l for l in mod.__doc__.splitlines() if l.strip().startswith(pair + " ")]
  assert len(line) == 1 and line[0].split()[1:5] == [
    f"{gamma:g}",
    f"{beta:g}",
    f"{pub_wttm_itrd:.2f}",
    f"{pub_itrd:.2f}",
  ]
  teacher = pair.split("-")[0]
  _trace_method(m, cfg.model, teacher)


def test_wttm_itrd_rejects_unknown_pair():
  with pytest.raises(ValueError, match="Unknown pair"):
    _load("wttm_itrd").get_config("itrd:resnet8-resnet8")


ITRD_MI_OFF = ("ResNet50-MobileNetV2", "ResNet50-vgg8", "wrn_40_2-ShuffleV1")


@pytest.mark.parametrize("pair", ALL_13)
def test_itrd_configs_per_pair_hyperparameters(pair):
  """TTM paper Appendix A.5 (methods.md §3.2): β_corr 2, β_mi 0 for three pairs (1 otherwise),
  α_it 1.01 same-architecture / 1.5 different-architecture, μ = -b = 1; ``itrd.py:PAIR`` is
  ``wttm_itrd.py:itrd:PAIR``; docstring columns carry λ_mi, α_it and the published numbers."""
  wi, it = _load("wttm_itrd"), _load("itrd")
  assert set(it.PAIRS) == set(ALL_13)
  teacher, student = pair.split("-")
  mi, alpha = (0.0 if pair in ITRD_MI_OFF else 1.0), (1.01 if pair in ALL_13[:7] else 1.5)
  want = dict(weight=1.0, corr_weight=2.0, mi_weight=mi, alpha=alpha)
  for cfg in (wi.get_config(pair), wi.get_config("itrd:" + pair), it.get_config(pair)):
    validate(cfg)
    assert cfg.method.terms.itrd.to_dict() == want
    assert cfg.model == student and cfg.teacher.workdir == f"runs/cifar100/teacher_{teacher}"
    assert cfg.optim.lr == (0.01 if student in LOW_LR else 0.05) and cfg.num_epochs == 240
    assert build_method(cfg.method).terms  # builds
  assert it.get_config(pair).to_dict() == wi.get_config("itrd:" + pair).to_dict()
  line = [l for l in wi.__doc__.splitlines() if l.strip().startswith(pair + " ")]
  assert len(line) == 1 and line[0].split()[5:7] == [f"{mi:g}", f"{alpha:g}"]
  line = [l for l in it.__doc__.splitlines() if l.strip().startswith(pair + " ")]
  assert len(line) == 1
  cols = line[0].split()
  assert cols[1:4] == [f"{mi:g}", f"{alpha:g}", f"{wi.PAIRS[pair][3]:.2f}"]
  assert it.PAIRS[pair] == wi.PAIRS[pair][3]
  assert cols[4] == (f"{it.README_ITRD[pair]:.2f}" if pair in it.README_ITRD else "=")
  assert "launch.distill --config configs/cifar100/itrd.py:" in it.__doc__


def test_itrd_config_rejects_unknown_pair_and_traces_an_mi_off_pair():
  it = _load("itrd")
  with pytest.raises(ValueError, match="Unknown pair"):
    it.get_config("resnet8-resnet8")
  cfg = it.get_config("ResNet50-vgg8")  # λ_mi 0, embed 512 -> 2048
  _trace_method(build_method(cfg.method), "vgg8", "ResNet50")
