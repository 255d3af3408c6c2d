"""Two-stage methods (methods.md §7.3): ``config.method.init`` (kdjax.methods.Stage) and the
masked stage optimisers of ``kdjax.train.stages``.

* the student's feature/classifier split (``student_features``) is the classifier alone for every
  CIFAR family;
* AB / FSP init stages change only the selected subset (never the classifier, never the
  teacher), their main stage is CE alone; FT's init stage trains the paraphraser alone (student
  and translator untouched, BN statistics included) by MSE reconstruction, and the main stage
  keeps it frozen while the translator and the student train with the FT loss;
* a tiny end-to-end AB run on mock data, interrupted inside the init stage, at the stage boundary
  and inside the main stage, resumes to the parameters of an uninterrupted run;
* invalid stage configs raise one clear ValueError; the RepDistiller configs' stages resolve.
"""

import functools
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_run_config
from kdjax import models
from kdjax.config import validate
from kdjax.methods import build_method
from kdjax.train import stages
from kdjax.train import state as state_lib
from kdjax.train.loop import train_and_evaluate
from kdjax.train.optim import make_optimizer
from kdjax.train.step import make_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPE = 5


def _np(tree):
  return jax.tree_util.tree_map(np.array, tree)


def _same(a, b):
  return all(
    np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def _changed_leaves(a, b):
  """Set of '/'-joined paths whose value changed."""
  out = set()
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
    if not np.array_equal(x, y):
      out.add("/".join(str(getattr(k, "key", k)) for k in path))
  return out


def _method_cfg(terms=None, init=None, trainable=None, ce_weight=1.0):
  cfg = dict(name="t", ce_weight=ce_weight, terms=terms or {})
  if trainable is not None:
    cfg["trainable"] = trainable
  if init is not None:
    cfg["init"] = init
  return cfg


def _setup(method_cfg, t_width=12):
  """Student tiny_cnn (width 8), teacher tiny_cnn (``t_width``), connectors, plan and both
  stages' jitted steps, built as ``kdjax.train.loop`` builds them."""
  student = models.get("tiny_cnn", num_classes=10)
  teacher = models.get("tiny_cnn", num_classes=10, width=t_width)
  x = jnp.zeros((1, 16, 16, 3))
  tv = teacher.init(jax.random.PRNGKey(1), x)
  built = state_lib.init_train_state(
    student, (teacher, tv), build_method(method_cfg), x, jax.random.PRNGKey(0), num_examples=32
  )
  method, mods, sv = built.method, built.connectors, built.student_variables
  cfg = tiny_run_config()
  tx, _ = make_optimizer(cfg.optim, SPE)
  plan = stages.plan(
    method,
    cfg,
    tx,
    built.params,
    built.batch_stats,
    SPE,
    feature_mask=lambda: stages.student_feature_mask(student, sv, x),
  )
  state = built.create(plan.init_tx if plan.init_steps else plan.main_tx)
  common = dict(
    student=student,
    train_transform=lambda im, r: im.astype(jnp.float32) / 255.0,
    eval_transform=lambda im: im.astype(jnp.float32) / 255.0,
    teacher=teacher,
    connectors=mods,
    steps_per_epoch=SPE,
  )
  init_fns = (
    make_steps(
      method=method.init.method, tx=plan.init_tx, stats_mask=plan.init_stats_mask, **common
    )
    if plan.init_steps
    else None
  )
  main_fns = make_steps(
    method=method,
    tx=plan.main_tx,
    stats_mask=plan.main_stats_mask,
    step_offset=plan.init_steps,
    **common,
  )
  rs = np.random.RandomState(0)
  images = rs.randint(0, 255, (32, 16, 16, 3)).astype(np.uint8)
  labels = rs.randint(0, 10, (32,)).astype(np.int32)
  return dict(
    student=student,
    teacher=teacher,
    tv=tv,
    method=method,
    plan=plan,
    state=state,
    init_fns=init_fns,
    main_fns=main_fns,
    images=images,
    labels=labels,
    mods=mods,
  )


def _run(fns, env, state, n, start=0):
  ms = []
  for i in range(n):
    idx = jnp.arange(8) + 8 * ((start + i) % 4)
    state, m = fns.train_indexed(
      state, env["images"], env["labels"], np.arange(32, dtype=np.int32), idx, env["tv"]
    )
    ms.append(jax.device_get(m))
  return state, ms


def _to_main(env, state):
  """What the loop does at the end of the init stage: a fresh main-stage optimiser state."""
  return state.replace(opt_state=env["plan"].main_tx.init(state.params))


def _ce(env, state, step_in_main):
  idx = np.arange(8) + 8 * (step_in_main % 4)
  x = env["images"][idx].astype(np.float32) / 255.0
  (logits, _), _ = env["student"].apply(
    {"params": state.params["student"], "batch_stats": state.batch_stats["student"]},
    x,
    train=True,
    mutable=["batch_stats"],
  )
  logp = jax.nn.log_softmax(logits)
  return float(-np.mean(np.take_along_axis(np.asarray(logp), env["labels"][idx, None], 1)))


# --------------------------------------------------------------------------------------------
# the student's feature modules
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
  "name,head",
  [
    ("tiny_cnn", "fc"),
    ("resnet8", "fc"),
    ("wrn_16_2", "fc"),
    ("vgg8", "classifier"),
    ("ShuffleV2", "linear"),
  ],
)
def test_student_features_are_everything_but_the_classifier(name, head):
  m = models.get(name, num_classes=100)
  x = jnp.zeros((1, 32, 32, 3))
  v = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), x, train=False))
  mask = stages.student_feature_mask(m, v, x)
  assert set(mask) == set(v["params"])
  frozen = {k for k, sub in mask.items() if not any(jax.tree_util.tree_leaves(sub))}
  assert frozen == {head}
  assert all(all(jax.tree_util.tree_leaves(sub)) for k, sub in mask.items() if k != head)


def test_default_trainable_keeps_the_normal_path():
  env = _setup(_method_cfg(terms=dict(kd=dict(weight=0.9, temperature=4.0)), ce_weight=0.1))
  plan = env["plan"]
  assert plan.init_steps == 0 and plan.init_tx is None and plan.main_stats_mask is None
  assert env["method"].trainable == ("student", "connectors") and env["method"].init is None
  tx, _ = make_optimizer(tiny_run_config().optim, SPE)
  p = {"student": {"w": jnp.ones(3)}, "connectors": {}}
  out, mask = stages.stage_optimizer(
    tx,
    ("student", "connectors"),
    p,
    {},
    connector_keys=(),
    feature_mask=None,
    where="method.trainable",
  )
  assert out is tx and mask is None  # the very same optimiser: nothing is wrapped


# --------------------------------------------------------------------------------------------
# AB, FSP, FT stages on one jitted step each
# --------------------------------------------------------------------------------------------
AB_INIT = dict(
  epochs=2,
  terms=dict(ab=dict(loss="ab", weight=1.0, margin=1.0)),
  trainable="student_features+connectors",
)


def test_ab_init_trains_features_and_connector_main_is_ce_only():
  env = _setup(_method_cfg(init=AB_INIT, trainable="student"))
  method, state = env["method"], env["state"]
  assert method.terms == () and method.needs_teacher and not method.loss_needs_teacher
  assert method.init.method.ce_weight == 0.0
  tv0, p0, bs0 = _np(env["tv"]), _np(state.params), _np(state.batch_stats)
  state, ms = _run(env["init_fns"], env, state, 3)
  assert set(ms[0]) >= {"ab", "loss"} and ms[0]["loss"] == pytest.approx(ms[0]["ab"], rel=1e-6)
  p1, bs1 = _np(state.params), _np(state.batch_stats)
  changed = _changed_leaves(p0, p1)
  # the classifier is frozen, every feature module and the AB connectors move
  assert not any(c.startswith("student/fc") for c in changed)
  assert {"student/conv0/kernel", "student/bn0/scale"} <= changed
  assert any(c.startswith("connectors/ab/") for c in changed)
  assert _same(tv0, env["tv"])  # teacher untouched
  assert not _same(bs0["student"], bs1["student"])  # feature BNs in training mode
  assert not _same(bs0["connectors"], bs1["connectors"])
  # main stage: CE alone, connectors frozen (unused), classifier trains
  state = _to_main(env, state)
  expected = [_ce(env, state, 0)]
  state, ms = _run(env["main_fns"], env, state, 2)
  assert "ab" not in ms[0] and "agreement" not in ms[0]  # no teacher forward either
  np.testing.assert_allclose(ms[0]["loss"], expected[0], rtol=1e-5)
  np.testing.assert_allclose(ms[0]["loss"], ms[0]["ce"], rtol=1e-6)
  p2, bs2 = _np(state.params), _np(state.batch_stats)
  assert _same(p1["connectors"], p2["connectors"]) and _same(bs1["connectors"], bs2["connectors"])
  assert any(c.startswith("student/fc") for c in _changed_leaves(p1, p2))


def test_fsp_init_trains_student_features_main_is_ce_only():
  env = _setup(
    _method_cfg(
      init=dict(
        epochs=1, terms=dict(fsp=dict(loss="fsp", weight=1.0)), trainable="student_features"
      ),
      trainable="student",
    ),
    t_width=8,
  )
  state = env["state"]
  p0 = _np(state.params)
  state, ms = _run(env["init_fns"], env, state, 2)
  p1 = _np(state.params)
  changed = _changed_leaves(p0, p1)
  assert changed and not any(c.startswith("student/fc") for c in changed)
  assert ms[0]["loss"] == pytest.approx(ms[0]["fsp"], rel=1e-6)
  state = _to_main(env, state)
  expected = _ce(env, state, 0)
  state, ms = _run(env["main_fns"], env, state, 1)
  assert "fsp" not in ms[0]
  np.testing.assert_allclose(ms[0]["loss"], expected, rtol=1e-5)


FT_CFG = _method_cfg(
  terms=dict(ft=dict(loss="ft", weight=200.0, k=0.5, paraphraser_recon_weight=0.0)),
  trainable="student+connectors/ft/translator",
  init=dict(
    epochs=2,
    terms=dict(ft=dict(loss="ft_paraphraser", weight=1.0, k=0.5)),
    trainable="connectors/ft/paraphraser",
    lr=0.01,
  ),
)


def test_ft_init_trains_only_the_paraphraser_then_it_stays_frozen():
  env = _setup(FT_CFG)
  method, state = env["method"], env["state"]
  assert set(env["mods"]) == {"ft"}  # one connector, shared
  assert float(env["plan"].init_schedule(0)) == 0.01
  p0, bs0 = _np(state.params), _np(state.batch_stats)
  # init loss = MSE reconstruction of the teacher's stage2 by the paraphraser (by hand)
  x = env["images"][:8].astype(np.float32) / 255.0
  f_t = env["teacher"].apply(env["tv"], x, train=False)[1]["stage2"]
  _, _, recon = env["mods"]["ft"].apply({"params": p0["connectors"]["ft"]}, (), (f_t,))
  state, ms = _run(env["init_fns"], env, state, 3)
  np.testing.assert_allclose(ms[0]["loss"], float(jnp.mean(jnp.square(recon - f_t))), rtol=1e-5)
  p1, bs1 = _np(state.params), _np(state.batch_stats)
  changed = _changed_leaves(p0, p1)
  assert changed and all(c.startswith("connectors/ft/paraphraser/") for c in changed)
  assert _same(bs0, bs1)  # student and translator BN statistics kept (frozen)
  # main stage: FT loss with the paraphraser frozen; translator + student train
  state = _to_main(env, state)
  state, ms = _run(env["main_fns"], env, state, 2)
  assert {"ft", "ce"} <= set(ms[0])
  np.testing.assert_allclose(ms[0]["loss"], ms[0]["ce"] + 200.0 * ms[0]["ft"], rtol=1e-5)
  p2 = _np(state.params)
  changed = _changed_leaves(p1, p2)
  assert not any(c.startswith("connectors/ft/paraphraser") for c in changed)
  assert any(c.startswith("connectors/ft/translator/") for c in changed)
  assert any(c.startswith("student/fc") for c in changed)
  assert any(c.startswith("student/conv0") for c in changed)


# --------------------------------------------------------------------------------------------
# config-time errors
# --------------------------------------------------------------------------------------------
BAD_INIT = [
  (
    dict(epochs=2, terms=dict(ab=dict(loss="ab", weight=1.0)), trainable="student", lrr=0.1),
    r"Unknown key\(s\) \['lrr'\] in config.method.init",
  ),
  (dict(epochs=-1), r"method.init.epochs must be an integer >= 0"),
  (dict(epochs=2.5), r"method.init.epochs must be an integer >= 0"),
  (dict(epochs=2, trainable="student"), r"the init stage has no loss"),
  (dict(epochs=2, terms=dict(ab=dict(loss="ab", weight=1.0))), r"method.init.trainable is not set"),
  (
    dict(epochs=2, terms=dict(ab=dict(loss="ab", weight=1.0)), trainable="student_feature"),
    r"unknown selector 'student_feature'. Did you mean 'student_features'",
  ),
  (
    dict(epochs=2, terms=dict(ab=dict(loss="ab", weight=1.0)), trainable="student+"),
    r"method.init.trainable = 'student\+': give one or more selectors",
  ),
  (
    dict(epochs=2, terms=dict(ab=dict(loss="abb", weight=1.0)), trainable="student"),
    r"method.init.terms.ab: unknown loss 'abb'",
  ),
  (
    dict(epochs=2, terms=dict(ab=dict(loss="ab", weight=1.0, margn=1.0)), trainable="student"),
    r"method.init.terms.ab: unknown hyper-parameter 'margn'",
  ),
  (
    dict(epochs=2, terms=dict(ab=dict(loss="ab", weight=1.0)), trainable="student", lr=-1.0),
    r"method.init.lr \(0 = optim.lr\) must be a finite number >= 0",
  ),
]


@pytest.mark.parametrize("init,match", BAD_INIT)
def test_invalid_init_stage_is_one_clear_error(init, match):
  with pytest.raises(ValueError, match=match):
    build_method(_method_cfg(init=init))


def test_invalid_stage_configs_at_build_time():
  with pytest.raises(ValueError, match=r"method.trainable: unknown selector 'students'"):
    build_method(_method_cfg(trainable="students"))
  # a path that does not exist, and a selection of nothing: before anything is compiled
  with pytest.raises(
    ValueError,
    match=r"method.init.trainable: no parameters at "
    r"'connectors/ft/paraphrazer': connectors/ft has "
    r"\['paraphraser', 'translator'\]",
  ):
    _setup(dict(FT_CFG, init=dict(FT_CFG["init"], trainable="connectors/ft/paraphrazer")))
  with pytest.raises(
    ValueError,
    match=r"method.init.trainable = 'connectors' selects no "
    r"parameters",
  ):
    _setup(
      _method_cfg(
        init=dict(epochs=1, terms=dict(fsp=dict(loss="fsp", weight=1.0)), trainable="connectors")
      ),
      t_width=8,
    )
  # the init term shares the main term's connector: both must build the same module
  bad = dict(
    FT_CFG,
    init=dict(FT_CFG["init"], terms=dict(ft=dict(loss="ft_paraphraser", weight=1.0, k=0.25))),
  )
  with pytest.raises(
    ValueError,
    match=r"method.init.terms.ft and method.terms.ft share the "
    r"connector 'ft'",
  ):
    _setup(bad)
  # config schema: a typo in the init block is caught by validate()
  cfg = tiny_run_config()
  cfg.method.init.epoch = 3
  with pytest.raises(ValueError, match=r"Did you mean 'method.init.epochs'"):
    validate(cfg)


# --------------------------------------------------------------------------------------------
# end to end: init stage + main stage on mock data, interrupted and resumed
# --------------------------------------------------------------------------------------------
def _tree_allclose(a, b, **kw):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def _ab_run_config(teacher_wd, **over):
  cfg = tiny_run_config(num_epochs=2, checkpoint_every_steps=3, **over)
  cfg.teacher.workdir = teacher_wd
  cfg.method.name = "ab_two_stage"
  cfg.method.trainable = "student"
  cfg.method.init.epochs = 2
  cfg.method.init.terms.ab = dict(loss="ab", weight=1.0, margin=1.0)
  cfg.method.init.trainable = "student_features+connectors"
  cfg.method.init.lr = 0.02
  return cfg


def test_two_stage_run_resumes_inside_and_across_stages(tmp_path, mock_cifar100):
  twd = str(tmp_path / "teacher")
  train_and_evaluate(tiny_run_config(num_epochs=1, model_kwargs=dict(width=12)), twd)
  full = train_and_evaluate(_ab_run_config(twd), str(tmp_path / "full"))
  assert full["finished"] and full["step"] == full["total_steps"] == 20  # (2 + 2) x 5 steps
  assert full["init_epochs"] == 2 and full["last_top1"] is not None

  class Killed(Exception):
    pass

  def kill_at(n):
    def hook(step):
      if step == n:
        raise Killed()

    return hook

  wd = str(tmp_path / "interrupted")
  with pytest.raises(Killed):  # inside the init stage (resumes from step 6)
    train_and_evaluate(_ab_run_config(twd), wd, _step_hook=kill_at(7))
  part = train_and_evaluate(_ab_run_config(twd, max_steps=10), wd)  # stops at the boundary
  assert part["step"] == 10 and not part["finished"] and part["last_top1"] is None
  with open(os.path.join(wd, "checkpoints", "10", "meta", "metadata")) as fh:
    assert json.load(fh)["stage"] == "main"  # saved with the main stage's optimiser state
  with pytest.raises(Killed):  # inside the main stage (resumes from step 12)
    train_and_evaluate(_ab_run_config(twd), wd, _step_hook=kill_at(14))
  resumed = train_and_evaluate(_ab_run_config(twd), wd)
  assert resumed["step"] == 20 and resumed["finished"]
  # Same float32 program on the restored state: bit-exact on CPU; rtol 1e-6 (~8 float32 ulp) allows
  # only a re-fused reduction, atol 1e-7 entries near 0 (their rounding is ~eps32*|lr*grad| << 1e-7).
  _tree_allclose(full["state"].params, resumed["state"].params, rtol=1e-6, atol=1e-7)
  _tree_allclose(full["state"].batch_stats, resumed["state"].batch_stats, rtol=1e-6, atol=1e-7)
  _tree_allclose(full["state"].opt_state, resumed["state"].opt_state, rtol=1e-6, atol=1e-7)
  assert resumed["last_top1"] == pytest.approx(full["last_top1"])

  recs = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  init_recs = [r for r in recs if "init/loss" in r]
  assert init_recs and all(
    "init/ab" in r and r["init/lr"] == pytest.approx(0.02) for r in init_recs
  )
  assert max(r["step"] for r in init_recs) <= 10
  train_recs = [r for r in recs if "train/loss" in r]
  assert train_recs and min(r["step"] for r in train_recs) > 10
  assert all("train/ab" not in r for r in train_recs)
  # the main stage's lr schedule counts from its own first epoch (milestone 1 -> x0.1 after 5)
  lrs = {r["step"]: r["train/lr"] for r in train_recs}
  assert lrs.get(12) == pytest.approx(0.05) and lrs.get(20) == pytest.approx(0.005)
  tests = [r for r in recs if "test/top1" in r]
  assert [r["test/epoch"] for r in tests] == [1, 2]  # main-stage epochs only
  assert min(r["step"] for r in tests) == 15

  # resuming with another init length is refused before anything is compiled
  with pytest.raises(ValueError, match=r"method.init.epochs \(2 -> 3\)"):
    cfg = _ab_run_config(twd)
    cfg.method.init.epochs = 3
    train_and_evaluate(cfg, wd)


# --------------------------------------------------------------------------------------------
# RepDistiller configs
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _rd():
  spec = importlib.util.spec_from_file_location(
    "cfg_repdistiller_stages", os.path.join(ROOT, "configs", "cifar100", "repdistiller.py")
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.parametrize(
  "arg",
  [
    "ab:resnet32x4-resnet8x4",
    "ft:resnet32x4-resnet8x4",
    "fsp:resnet32x4-resnet8x4",
    "ab:vgg13-MobileNetV2",
    "ft:vgg13-vgg8",
    "ft:wrn_40_2-ShuffleV1",
  ],
)
def test_repdistiller_two_stage_configs_resolve(arg):
  method_name, pair = arg.split(":")
  t_name, s_name = pair.split("-")
  cfg = _rd().get_config(arg)
  validate(cfg)
  method = build_method(cfg.method)
  assert method.init.epochs == 30 and method.init.method.ce_weight == 0.0
  assert [t.weight for t in method.init.method.terms] == [1.0]  # beta not applied
  if method_name in ("ab", "fsp"):
    assert method.terms == () and method.trainable == ("student",)
  else:
    assert [(t.key, t.weight) for t in method.terms] == [("ft", 200.0)]
    assert method.trainable == ("student", "connectors/ft/translator")
    assert method.init.lr == (0.01 if s_name in ("resnet8x4",) else cfg.optim.lr)
  # the trainable selectors resolve on the real models' (abstract) parameters
  s_mod = models.get(s_name, num_classes=100)
  t_mod = models.get(t_name, num_classes=100)
  x = jnp.zeros((1, 32, 32, 3))
  sv = jax.eval_shape(lambda: s_mod.init(jax.random.PRNGKey(0), x, train=False))
  tv = jax.eval_shape(lambda: t_mod.init(jax.random.PRNGKey(0), x, train=False))
  s_shapes = state_lib.tap_shapes(s_mod, sv, x)
  t_shapes = state_lib.tap_shapes(t_mod, tv, x)
  method = method.bind(s_shapes, t_shapes)
  c_params, _ = jax.eval_shape(
    lambda: method.init_connectors(s_shapes, t_shapes, jax.random.PRNGKey(0))[1:]
  )
  params = {"student": sv["params"], "connectors": c_params}
  feats = functools.partial(stages.student_feature_mask, s_mod, sv, x)
  main = stages.trainable_mask(
    method.trainable, params, connector_keys=method.connector_keys(), feature_mask=feats
  )
  init = stages.trainable_mask(
    method.init.trainable,
    params,
    connector_keys=method.init.method.connector_keys(),
    feature_mask=feats,
    where="method.init.trainable",
  )
  head = {
    "resnet8x4": "fc",
    "MobileNetV2": "classifier",
    "vgg8": "classifier",
    "ShuffleV1": "linear",
  }[s_name]
  if method_name == "ft":
    assert not any(jax.tree_util.tree_leaves(init["student"]))
    assert all(jax.tree_util.tree_leaves(init["connectors"]["ft"]["paraphraser"]))
    assert not any(jax.tree_util.tree_leaves(init["connectors"]["ft"]["translator"]))
    assert not any(jax.tree_util.tree_leaves(main["connectors"]["ft"]["paraphraser"]))
    assert all(jax.tree_util.tree_leaves(main["connectors"]["ft"]["translator"]))
  else:
    assert not any(jax.tree_util.tree_leaves(init["student"][head]))
    assert all(jax.tree_util.tree_leaves({k: v for k, v in init["student"].items() if k != head}))
    assert all(jax.tree_util.tree_leaves(init["connectors"])) and (
      method_name == "fsp" or init["connectors"]
    )
    assert not any(jax.tree_util.tree_leaves(main["connectors"]))
  assert all(jax.tree_util.tree_leaves(main["student"]))
