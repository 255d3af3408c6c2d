"""Config validation, declarative methods and the optimiser/schedule conventions."""

import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import losses
from kdjax.config import base_config, parse_which, validate
from kdjax.methods import Batch, Outputs, build_method, term_names
from kdjax.train.optim import make_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_validate_rejects_typos_with_suggestion():
  c = base_config()
  c.optim.milestone = (1, 2)
  with pytest.raises(ValueError, match="optim.milestone.*optim.milestones"):
    validate(c)
  validate(base_config())


def test_parse_which():
  assert parse_which("final") == "final" and parse_which("epoch:60") == {"epoch": 60}
  assert parse_which("step:12") == {"step": 12}
  with pytest.raises(ValueError):
    parse_which("latest-ish")


@pytest.mark.parametrize(
  "bad, match",
  [
    (dict(terms=dict(kdd=dict(weight=1.0))), "unknown loss 'kdd'.*'kd'"),
    (
      dict(terms=dict(kd=dict(weight=-1.0, temperature=4.0))),
      "weight must be a finite number >= 0",
    ),
    (dict(terms=dict(kd=dict(weight=1.0, temprature=4.0))), "temprature.*'temperature'"),
    (dict(terms=dict(kd=dict(weight=1.0, temperature=0.0))), "method.terms.kd"),
    (dict(terms=dict(kd=dict(temperature=4.0))), "no 'weight'"),
    (dict(ce_weight=-0.1), "ce_weight"),
    (dict(label_smoothing=1.5), "label_smoothing"),
    (dict(cew=1.0), "Unknown key"),
  ],
)
def test_build_method_rejects_bad_config(bad, match):
  with pytest.raises(ValueError, match=match):
    build_method(bad)


def test_method_loss_is_ce_plus_weighted_terms():
  m = build_method(
    dict(
      ce_weight=0.1,
      terms=dict(
        kd=dict(weight=0.9, temperature=4.0), kd_t1=dict(loss="kd", weight=0.5, temperature=1.0)
      ),
    )
  )
  rs = np.random.RandomState(0)
  s, t = rs.randn(6, 7).astype(np.float32), rs.randn(6, 7).astype(np.float32)
  y = rs.randint(0, 7, 6)
  total, metrics = m.loss(Outputs(s, {}), Outputs(t, {}), Batch(y, np.arange(6)))
  ce = -jax.nn.log_softmax(s)[np.arange(6), y]
  expect = (
    0.1 * ce + 0.9 * losses.kd(s, t, temperature=4.0) + 0.5 * losses.kd(s, t, temperature=1.0)
  )
  np.testing.assert_allclose(total, expect, rtol=1e-6)
  assert set(metrics) == {"ce", "kd", "kd_t1"} and m.needs_teacher


def test_method_without_terms_is_supervised_and_label_smoothing():
  m = build_method(dict(label_smoothing=0.1))
  assert not m.needs_teacher
  s = np.array([[2.0, 0.0, -1.0]], np.float32)
  total, _ = m.loss(Outputs(s, {}), None, Batch(np.array([0]), np.array([0])))
  expect = optax.softmax_cross_entropy(
    s, optax.smooth_labels(jax.nn.one_hot(np.array([0]), 3), 0.1)
  )
  np.testing.assert_allclose(total, expect, rtol=1e-6)


def test_missing_taps_are_reported_at_config_time():
  from kdjax.methods.registry import register_term, _TERMS

  if "_needs_stage9" not in _TERMS:
    register_term("_needs_stage9", student_taps=("stage9",))(
      lambda s, t, b: jnp.zeros(s.logits.shape[0])
    )
  m = build_method(dict(terms=dict(_needs_stage9=dict(weight=1.0))))
  with pytest.raises(ValueError, match="needs student taps \\['stage9'\\]"):
    m.check_shapes({"stage1": (1, 2)}, {})


def test_kd_term_registered():
  assert "kd" in term_names()


def _sgd_lrs(cfg, steps_per_epoch, epochs):
  _, sched = make_optimizer(cfg, steps_per_epoch)
  return [float(sched(e * steps_per_epoch)) for e in range(epochs)]


def test_multistep_schedule_matches_repdistiller_epochs():
  # RepDistiller: steps = sum(epoch > [150,180,210]) with epochs from 1 -> epoch 151 first decayed,
  # i.e. 0-based epoch 150.
  cfg = base_config().optim
  lrs = _sgd_lrs(cfg, 10, 240)
  assert lrs[149] == pytest.approx(0.05) and lrs[150] == pytest.approx(0.005)
  assert lrs[180] == pytest.approx(0.0005) and lrs[239] == pytest.approx(0.00005)


def test_step_schedule_checkpoint_kd_recipe():
  cfg = base_config().optim
  cfg.lr, cfg.schedule, cfg.step_epochs, cfg.nesterov = 0.1, "step", 60, True
  lrs = _sgd_lrs(cfg, 5, 200)
  assert lrs[59] == pytest.approx(0.1) and lrs[60] == pytest.approx(0.01)
  assert lrs[180] == pytest.approx(1e-4)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_pytorch_update_rule(nesterov):
  cfg = base_config().optim
  cfg.schedule, cfg.nesterov, cfg.lr, cfg.weight_decay = "constant", nesterov, 0.1, 5e-4
  tx, _ = make_optimizer(cfg, 1)
  p = {"w": jnp.array([1.0, -2.0])}
  st = tx.init(p)
  buf = np.zeros(2)
  w = np.array([1.0, -2.0])
  for g in ([0.5, 0.1], [-0.3, 0.2], [0.1, 0.1]):
    u, st = tx.update({"w": jnp.array(g)}, st, p)
    p = optax.apply_updates(p, u)
    d = np.array(g) + 5e-4 * w  # torch.optim.SGD: coupled weight decay
    buf = 0.9 * buf + d
    w = w - 0.1 * (d + 0.9 * buf if nesterov else buf)
  np.testing.assert_allclose(p["w"], w, rtol=1e-6)


@pytest.mark.parametrize(
  "path,arg",
  [
    ("configs/cifar100/teacher.py", "resnet32x4"),
    ("configs/cifar100/teacher.py", "MobileNetV2"),
    ("configs/cifar100/kd.py", "resnet56-resnet20"),
    ("configs/cifar100/kd.py", "wrn_40_2-wrn_40_1"),
    ("configs/fashion_mnist.py", "kd,quick"),
    ("configs/quickstart.py", ""),
  ],
)
def test_configs_load_and_validate(path, arg):
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = mod.get_config(arg) if arg else mod.get_config()
  runs = (
    [cfg[k] for k in ("teacher", "student", "kd")]
    if "teacher" in cfg and "model" not in cfg
    else [cfg]
  )
  for c in runs:
    validate(c)
    build_method(c.method)
  assert "launch" in mod.__doc__ or "python -m" in mod.__doc__


def test_kd_config_cites_published_number():
  from configs.cifar100 import kd

  assert kd.PAIRS["resnet32x4-resnet8x4"][2] == 73.33
  assert "73.33" in kd.__doc__
  with pytest.raises(ValueError, match="Unknown pair"):
    kd.get_config("resnet9-resnet8")


@pytest.mark.parametrize(
  "term, kw, ref",
  [
    ("ttm", dict(gamma=0.2), lambda s, t, y: losses.ttm(s, t, gamma=0.2)),
    ("wttm", dict(gamma=0.2), lambda s, t, y: losses.wttm(s, t, gamma=0.2)),
    ("dist", dict(), lambda s, t, y: losses.dist(s, t)),
    ("listmle", dict(top_k=3), lambda s, t, y: losses.listmle(s, t, top_k=3)),
    ("pairwise_ranking", dict(), lambda s, t, y: losses.pairwise_ranking(s, t)),
    ("pld", dict(), lambda s, t, y: losses.pld(s, t, y)),
    (
      "kl",
      dict(teacher_temperature=1.8, student_temperature=1.8),
      lambda s, t, y: losses.kl_per_example(
        s, t, teacher_temperature=1.8, student_temperature=1.8, t2_scale=True
      ),
    ),
    # DKD at epoch 5 of a 20-epoch warm-up: factor 0.25.
    (
      "dkd",
      dict(beta=8.0),
      lambda s, t, y: 0.25 * losses.dkd(s, t, y, alpha=1.0, beta=8.0, temperature=4.0),
    ),
  ],
)
def test_logit_terms_wire_the_losses(term, kw, ref):
  m = build_method(dict(ce_weight=0.0, terms={term: dict(weight=2.0, **kw)}))
  rs = np.random.RandomState(1)
  s, t = rs.randn(5, 6).astype(np.float32), 3 * rs.randn(5, 6).astype(np.float32)
  y = rs.randint(0, 6, 5)
  total, _ = m.loss(Outputs(s, {}), Outputs(t, {}), Batch(y, np.arange(5), jnp.float32(5)))
  np.testing.assert_allclose(total, 2.0 * ref(s, t, y), rtol=1e-5, atol=1e-6)


def test_registry_is_a_leaf_and_each_family_registers_its_terms():
  import ast

  src = open(os.path.join(ROOT, "kdjax", "methods", "registry.py")).read()
  imported = [n.module or "" for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)]
  imported += [
    a.name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import) for a in n.names
  ]
  assert not [m for m in imported if m.startswith("kdjax")], imported
  from kdjax.methods import get_term

  for family, names in {
    "logit": ("kd", "ttm", "wttm", "dkd", "dist", "kl", "listmle", "pairwise_ranking", "pld"),
    "fitnet": ("fitnet",),
    "at": ("at",),
    "nst_sp_fsp": ("nst", "sp", "fsp"),
    "vid": ("vid",),
    "ab": ("ab",),
    "ft": ("ft", "ft_paraphraser"),
    "oh": ("oh",),
    "cc_rkd_pkt": ("cc", "rkd", "pkt"),
    "crd": ("crd", "crd_queue"),
    "itrd": ("itrd",),
    "sskd": ("sskd_tf", "sskd_ss", "sskd_head"),
    "sftn": ("sftn",),
  }.items():
    for n in names:
      assert get_term(n).fn.__module__ == f"kdjax.methods.{family}", n
  assert not [n for n in term_names() if "@" in n]


def test_presets_build_and_unknown_presets_suggest():
  from kdjax.methods import preset, preset_names
  from kdjax.methods.presets import REPDISTILLER

  args = {
    "ttm": dict(gamma=0.1, beta=45.0),
    "wttm": dict(gamma=0.1, beta=2.25),
    "dkd": dict(beta=8.0),
  }
  assert set(REPDISTILLER) <= set(preset_names())
  for name in preset_names():
    m = build_method(preset(name, **args.get(name, {})))
    assert m.name == name
  ab = build_method(preset("ab"))
  assert ab.terms == () and ab.init.epochs == 30 and ab.trainable == ("student",)
  with pytest.raises(ValueError, match="unknown method preset 'cdr'.*'crd'"):
    preset("cdr")
  with pytest.raises(ValueError, match="takes no arguments"):
    preset("at", weight=1.0)


def test_a_new_term_with_model_dependent_taps_and_a_connector_needs_no_trainer_change():
  """How to add a method: one adapter + ``register_term`` (taps resolved against the pair, a
  plain nn.Module connector init-ed on the taps, an init_state fed by BuildContext)."""
  import flax.linen as nn
  from kdjax import models
  from kdjax.methods import common_stages, register_term
  from kdjax.train.state import init_train_state

  class LastStageProj(nn.Module):
    @nn.compact
    def __call__(self, s_taps, t_taps, train=False):
      return nn.Dense(t_taps[0].shape[-1], name="proj")(s_taps[0])

  def taps(s_shapes, t_shapes, **hp):
    key = f"stage{common_stages(s_shapes, t_shapes)}"
    return (key,), (key,)

  if "_toy_last" not in term_names():

    @register_term(
      "_toy_last",
      taps=taps,
      connector=lambda **hp: LastStageProj(),
      init_state=lambda ctx, rng, **hp: {"n": jnp.zeros((ctx.num_examples,))},
    )
    def _toy(s, t, batch, *, connector=None, state=None, scale: float = 1.0):
      (f_s,), (f_t,) = s.taps.values(), t.taps.values()
      d = connector((f_s,), (f_t,), train=True) - f_t
      return scale * jnp.mean(d * d, axis=(1, 2, 3)), state

  student = models.get("tiny_cnn", num_classes=10, width=4)
  teacher = models.get("tiny_cnn", num_classes=10, width=6)
  x = jnp.zeros((1, 16, 16, 3))
  tv = teacher.init(jax.random.PRNGKey(1), x)
  m = build_method(dict(terms=dict(toy=dict(loss="_toy_last", weight=1.0))))
  built = init_train_state(
    student, (teacher, tv), m, x, jax.random.PRNGKey(0), tx=optax.sgd(0.1), num_examples=7
  )
  n = common_stages(built.student_shapes, built.teacher_shapes)
  assert built.method.teacher_taps == (f"stage{n}",)
  c_s, c_t = built.student_shapes[f"stage{n}"][-1], built.teacher_shapes[f"stage{n}"][-1]
  assert built.state.params["connectors"]["toy"]["proj"]["kernel"].shape == (c_s, c_t)
  assert built.state.method_state["toy"]["n"].shape == (7,)
  with pytest.raises(ValueError, match="bind the method to the pair"):
    _ = m.teacher_taps
