"""Every cell of the protocol configs (CheckpointKD, WTTM w/o CE, calibration population, CIFAR-10,
OH, SFTN stage 2, unknown student, RCO) validates and builds its method against its pair.

Each cell: ``kdjax.config.validate``; ``build_method``; ``bind`` against the abstract models' tap
shapes; connectors, term states and one ``Method.loss`` evaluated with ``jax.eval_shape`` (nothing
is computed). Also: the ``ensemble_kd`` term against CheckpointKD's torch loss (golden).
"""

import functools
import importlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses, models
from kdjax.config import validate
from kdjax.methods import Batch, BuildContext, Outputs, build_method, connector_calls
from kdjax.methods import ckd as ckd_method

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
DATASETS = {"cifar100": ((32, 32, 3), 100, 50000), "cifar10": ((32, 32, 3), 10, 50000)}
B = 2


@functools.lru_cache(maxsize=None)
def _abstract(name, dataset, kwargs=()):
  shape, classes, _ = DATASETS[dataset]
  mod = models.get(name, num_classes=classes, **dict(kwargs))
  x = jax.ShapeDtypeStruct((B,) + shape, jnp.float32)  # taps at batch B, whatever the layout
  variables = jax.eval_shape(lambda x: mod.init(jax.random.PRNGKey(0), x, train=False), x)
  _, taps = jax.eval_shape(lambda v, x: mod.apply(v, x, train=False), variables, x)
  return variables, {k: tuple(v.shape) for k, v in taps.items()}


def build_cell(cfg, teacher_arch):
  """The bound method of ``cfg`` against (student ``cfg.model``, ``teacher_arch``), after an
  abstract connector/state init and one abstract loss evaluation."""
  validate(cfg)
  ds = cfg.dataset.name
  _, classes, n = DATASETS[ds]
  kwargs = tuple(sorted(dict(cfg.model_kwargs).items()))
  _, s_shapes = _abstract(cfg.model, ds, kwargs)
  method = build_method(cfg.method)
  t_vars, t_shapes = None, None
  if method.needs_teacher:
    assert teacher_arch is not None
    t_vars, t_shapes = _abstract(teacher_arch, ds)
    members = len(cfg.teacher.members)
    if members:  # the ensemble teacher's member logits (kdjax/train/teacher.py)
      t_shapes = dict(t_shapes, member_logits=(B, members, classes))
      t_vars = [t_vars] * members
  bound = method.bind(s_shapes, t_shapes)

  def outs(shapes, keys):
    return Outputs(jnp.zeros((B, classes)), {k: jnp.zeros(shapes[k]) for k in keys})

  def run(rng, tv):
    mods, params, stats = bound.init_connectors(s_shapes, t_shapes, rng)
    states = bound.init_states(BuildContext(n, tv, s_shapes, t_shapes or {}), rng)
    calls, _ = connector_calls(mods, params, stats)
    t_out = outs(t_shapes, bound.teacher_taps) if bound.loss_needs_teacher else None
    return bound.loss(
      outs(s_shapes, bound.student_taps),
      t_out,
      Batch(jnp.zeros((B,), jnp.int32), jnp.arange(B)),
      connectors=calls,
      states=states,
      return_states=True,
    )

  total, metrics, _ = jax.eval_shape(run, jax.random.PRNGKey(0), t_vars)
  assert total.shape == (B,)
  return bound, metrics


def _mod(name):
  return importlib.import_module(f"configs.{name}")


# ---------------------------------------------------------------------------- cells
def cells():
  """[(cell id, config, teacher arch)] of the protocol configs."""
  out = []
  m = _mod("cifar100.wttm_noce")
  for p, row in m.PAIRS.items():
    out.append((f"wttm_noce:{p}", m.get_config(p), row[0]))
  m = _mod("cifar100.ckd")
  for t in m.TEACHERS:
    out.append((f"ckd:teacher:{t}", m.get_config(f"teacher:{t}"), None))
  for p, (t, _) in m.PAIRS.items():
    for opt in (
      "",
      ",inter",
      ",epoch:20",
      ",snapshot:60+120",
      ",snapshot:60+120,kl_mean",
      ",full_ensemble",
      ",full_ensemble,kl_mean",
    ):
      out.append((f"ckd:{p}{opt}", m.get_config(p + opt), t))
  for extra in EXTRA_CELLS:
    out.extend(extra())
  return out


def _calibration_cells():
  out = []
  for ds in ("cifar100", "cifar10"):
    m = _mod(f"{ds}.calibration_population")
    for arch in m.CAPACITY:
      for sched in m.SCHEDULES:
        out.append(
          (
            f"{ds}/calibration_population:teacher:{arch},{sched}",
            m.get_config(f"teacher:{arch},{sched}"),
            None,
          )
        )
    for loss in m.LOSSES:
      for arch in ("resnet110", "MobileNetV2"):
        arg = f"resnet8x4,{loss},{arch},short100"
        out.append((f"{ds}/calibration_population:{arg}", m.get_config(arg), arch))
  t10 = _mod("cifar10.teacher")
  for arch in ("resnet56", "resnet110", "wrn_40_2", "resnet32x4"):
    out.append((f"cifar10/teacher:{arch}", t10.get_config(arch), None))
  kd10 = _mod("cifar10.kd")
  for p, (t, _) in kd10.PAIRS.items():
    out.append((f"cifar10/kd:{p}", kd10.get_config(p), t))
  return out


def _sftn_oh_rco_cells():
  out = []
  s2 = _mod("cifar100.sftn_stage2")
  for method in s2.METHODS:
    for p, (t, student) in s2.PAIRS.items():
      if s2._na(method, p):
        with pytest.raises(ValueError, match="N/A"):
          s2.get_config(f"{method}:{p}")
        continue
      out.append((f"sftn_stage2:{method}:{p}", s2.get_config(f"{method}:{p}"), t))
      # the control differs only in teacher.workdir (same architecture): not built twice
      std = s2.get_config(f"{method}:{p},standard")
      assert std.teacher.workdir == f"runs/cifar100/teacher_{t}"
  for arg in (
    "kd:resnet32x4-ShuffleV2,branch:resnet8x4",
    "at:resnet32x4-ShuffleV1,branch:ShuffleV2",
    "crd:resnet32x4-resnet8x4,branch:ShuffleV1",
  ):
    out.append((f"sftn_stage2:{arg}", s2.get_config(arg), arg.split(":")[1].split("-")[0]))
  s1 = _mod("cifar100.sftn_stage1")
  for p, (t, _) in s1.PAIRS.items():
    out.append((f"sftn_stage1:{p}", s1.get_config(p), t))
  oh = _mod("cifar100.oh")
  for p, (t, _) in oh.PAIRS.items():
    out.append((f"oh:{p}", oh.get_config(p), t))
  rco = _mod("cifar100.rco")
  for p, row in rco.PAIRS.items():
    out.append((f"rco:{p}", rco.get_config(p), row[0]))
  return out


EXTRA_CELLS = [
  _calibration_cells,
  _sftn_oh_rco_cells,
]  # further families: () -> [(id, cfg, teacher)]


def _cells():
  return {cid: (cfg, t) for cid, cfg, t in cells()}


_ALL = _cells()


@pytest.mark.parametrize("cell", sorted(_ALL))
def test_cell_builds(cell):
  cfg, teacher = _ALL[cell]
  bound, metrics = build_cell(cfg, teacher)
  assert set(metrics) >= {"ce"} | {t.key for t in bound.terms if t.weight and not t.spec.monitor}


# ---------------------------------------------------------------------------- CheckpointKD
def test_ckd_recipe_values():
  m = _mod("cifar100.ckd")
  c = m.get_config("teacher:wrn_40_2")
  assert (c.num_epochs, c.batch_size, c.optim.lr, c.optim.nesterov) == (200, 128, 0.1, True)
  assert (c.optim.schedule, c.optim.step_epochs, c.optim.decay) == ("step", 60, 0.1)
  # kept checkpoints 20..180, the full teacher at 200
  assert sorted(set(range(c.keep_every_epochs, c.num_epochs, c.keep_every_epochs))) == list(
    range(20, 200, 20)
  )
  s = m.get_config("resnet110-resnet32,inter")
  assert s.teacher.which == "epoch:100" and s.method.ce_weight == 0.5
  assert dict(s.method.terms.kd) == dict(weight=0.5, temperature=5.0, t2_scale=True)
  e = m.get_config("wrn_40_2-wrn_40_1,snapshot:40+100+160,kl_mean")
  assert e.teacher.members == tuple(
    f"runs/cifar100/ckd_teacher_wrn_40_2@epoch:{k}" for k in (40, 100, 160)
  )
  assert "ensemble_kd" in e.method.terms
  for bad in (
    "wrn_40_2-wrn_40_1,epoch:200",
    "wrn_40_2-wrn_40_1,epoch:30",
    "wrn_40_2-wrn_40_1,kl_mean",
    "wrn_40_2-wrn_40_1,snapshot:60",
    "wrn_40_2-resnet32",
    "teacher:resnet8",
  ):
    with pytest.raises(ValueError):
      m.get_config(bad)


def test_ensemble_kd_matches_checkpointkd_torch():
  with np.load(os.path.join(ROOT, "tests", "golden", "ckd.npz")) as f:
    g = {k: f[k] for k in f.files}
  t = float(g["temperature"])
  with jax.enable_x64(True):
    zs, zt = jnp.asarray(g["student"]), jnp.asarray(g["members"])
    loss = lambda z: ckd_method.ensemble_kd(z, zt, temperature=t).mean()  # noqa: E731
    np.testing.assert_allclose(loss(zs), g["loss"], rtol=1e-12)
    np.testing.assert_allclose(jax.grad(loss)(zs), g["grad"], rtol=1e-9, atol=1e-15)
    # differs from KD to the averaged logits (the --avg_teacher branch)
    avg = losses.kd(zs, zt.mean(1), temperature=t).mean()
    np.testing.assert_allclose(avg, g["avg_loss"], rtol=1e-12)
    assert abs(float(avg) - float(g["loss"])) > 1.0
    # weights: normalised, one member with weight 0 drops out
    w = ckd_method.ensemble_kd(zs, zt, temperature=t, weights=(2.0, 2.0, 0.0))
    np.testing.assert_allclose(w, ckd_method.ensemble_kd(zs, zt[:, :2], temperature=t), rtol=1e-12)


# ---------------------------------------------------------------------------- calibration
def test_calibration_population_schedules():
  m = _mod("cifar100.calibration_population")
  short = m.get_config("teacher:resnet110,short100")
  assert (short.num_epochs, tuple(short.optim.milestones)) == (100, (50, 75))
  assert min(short.optim.milestones) == 50  # first decay after epoch 50
  full = m.get_config("teacher:resnet110,full")
  assert (full.num_epochs, tuple(full.optim.milestones)) == (240, (150, 180, 210))
  s = m.get_config("resnet8x4,spearman,wrn_40_2,full")
  assert s.teacher.workdir == "runs/cifar100/calib_teacher_wrn_40_2_full"
  assert s.method.ce_weight == 0.0 and list(s.method.terms) == ["spearman"]
  assert (s.num_epochs, s.optim.lr) == (200, 0.03)
  c10 = _mod("cifar10.calibration_population").get_config("resnet20,kl,resnet56,full")
  assert c10.dataset.name == "cifar10" and c10.teacher.workdir.startswith("runs/cifar10/")
  for bad in ("teacher:resnet9,full", "teacher:resnet56,long", "resnet8x4,mse,resnet56,full"):
    with pytest.raises(ValueError):
      m.get_config(bad)


# ---------------------------------------------------------------------------- SFTN / OH
def test_sftn_protocol_values():
  s2 = _mod("cifar100.sftn_stage2")
  c = s2.get_config("at:resnet32x4-resnet8x4")
  assert c.method.ce_weight == 1.0 and c.method.terms.at.weight == 1000.0
  assert dict(c.method.terms.kd) == dict(weight=1.0, temperature=4.0, t2_scale=True)
  assert c.teacher.workdir == "runs/cifar100/sftn_teacher_resnet32x4-resnet8x4"
  assert s2.get_config("at:resnet32x4-resnet8x4,standard").teacher.workdir == (
    "runs/cifar100/teacher_resnet32x4"
  )
  u = s2.get_config("kd:resnet32x4-ShuffleV2,branch:resnet8x4")
  assert u.model == "ShuffleV2" and u.optim.lr == 0.01
  assert u.teacher.workdir == "runs/cifar100/sftn_teacher_resnet32x4-resnet8x4"
  kd = s2.get_config("kd:resnet32x4-resnet8x4")  # KD alone: RepDistiller's r 0.1, a 0.9
  assert kd.method.ce_weight == 0.1 and kd.method.terms.kd.weight == 0.9
  ab = s2.get_config("ab:resnet32x4-resnet8x4")  # init stage kept, KD added to the main stage
  assert ab.method.init.epochs == 30 and "kd" in ab.method.terms
  for bad in (
    "kd:resnet32x4-ShuffleV2,branch:ShuffleV2",
    "kd:resnet32x4-ShuffleV2,branch:vgg8",
    "oh:resnet32x4-ShuffleV1",
    "dkd:resnet32x4-resnet8x4",
    "kd:resnet32x4-ShuffleV2,x",
  ):
    with pytest.raises(ValueError):
      s2.get_config(bad)
  s1 = _mod("cifar100.sftn_stage1")
  assert s1.get_config("resnet32x4-ShuffleV1").optim.lr == 0.01
  assert s1.get_config("resnet32x4-resnet8x4").optim.lr == 0.05
  o = _mod("cifar100.oh").get_config("wrn_40_2-wrn_16_2")
  assert (o.num_epochs, o.optim.lr, o.optim.nesterov, tuple(o.optim.milestones)) == (
    200,
    0.1,
    True,
    (100, 150),
  )
