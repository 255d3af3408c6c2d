"""Generates tests/golden/config_cells.json: the method every config cell of ``configs/`` builds.

Run from the repository root (CI only reads the golden; ``tests/test_config_cells.py`` recomputes
every record with :func:`record_all` and compares)::

    python tools/goldens/make_config_cells.py [--allow-changes]

It refuses to overwrite a golden whose existing cells would change (only new cells may appear)
unless ``--allow-changes`` is given.

A *cell* is one ``get_config(arg)`` of one config file (every pair / method / student of its
tables). Its record is written in a canonical form that does not depend on how kdjax spells a
method internally, so that the same golden holds across refactors of ``kdjax.methods``:

* ``config``: the whole config without its ``method`` block (schedule, model, teacher, data);
* ``method``: name, CE weight, label smoothing, main-stage trainable, views and, per term
  (sorted by key): the loss it runs (no ``@n`` suffix), its weight, its hyper-parameters (without
  the tap-selecting ones ``layers`` / ``layer`` / ``hint_layer``), the student and teacher taps
  it reads, resolved against the pair's models;
* ``connectors``: term key -> ``{path: shape}`` of the connector's parameters and BatchNorm
  statistics, initialised on the pair's tap shapes (``jax.eval_shape``, nothing is computed);
* ``state``: term key -> ``{path: shape}`` of the explicit term states (CRD banks, OH margins);
* ``init``: the init stage (epochs, lr, milestones, trainable, CE weight, terms) or null.

Models are built abstractly (``jax.eval_shape``) once per (name, kwargs, dataset) and cached.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

import jax
import jax.numpy as jnp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "config_cells.json")
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from kdjax import models  # noqa: E402
from kdjax.methods import BuildContext, build_method  # noqa: E402

# dataset -> (image shape, classes, training examples: CRD's index space)
DATASETS = {
  "cifar100": ((32, 32, 3), 100, 50000),
  "cifar10": ((32, 32, 3), 10, 50000),
  "fashion_mnist": ((28, 28, 1), 10, 60000),
  "imagenet2012": ((224, 224, 3), 1000, 1281167),
  "tiny_imagenet": ((64, 64, 3), 200, 100000),
}
TAP_HPARAMS = ("layers", "layer", "hint_layer")


def cells():
  """``[(cell id, config[, teacher arch])]`` for every config cell of ``configs/`` (analysis,
  online and the table families of ``configs/tables/`` excluded: their cells are these configs)."""
  out = []

  def load(name):
    return importlib.import_module(f"configs.{name}")

  rd = load("cifar100.repdistiller")
  for m in rd.METHOD_ORDER:
    for p, row in rd.PAIRS.items():
      if row[4][m] is not None:
        out.append((f"cifar100/repdistiller:{m}:{p}", rd.get_config(f"{m}:{p}")))
  for name in (
    "kd",
    "ttm",
    "wttm",
    "dkd",
    "dist",
    "itrd",
    "wttm_crd",
    "wttm_itrd",
    "sskd",
    "mlkd",
    "kdsvd",
    "dot",
  ):
    mod = load(f"cifar100.{name}")
    for p in mod.PAIRS:
      out.append((f"cifar100/{name}:{p}", mod.get_config(p)))
  wi = load("cifar100.wttm_itrd")
  for p in wi.PAIRS:
    out.append((f"cifar100/wttm_itrd:itrd:{p}", wi.get_config(f"itrd:{p}")))
  cal = load("cifar100.calibration_kd")
  for s in cal.STUDENTS:
    for loss in cal.LOSSES:
      out.append((f"cifar100/calibration_kd:{s},{loss}", cal.get_config(f"{s},{loss}")))
  for loss in cal.LOSSES:
    arg = f"MobileNetV2,{loss},resnet32x4"
    out.append((f"cifar100/calibration_kd:{arg}", cal.get_config(arg)))
  tch = load("cifar100.teacher")
  for arch in tch.PUBLISHED:
    out.append((f"cifar100/teacher:{arch}", tch.get_config(arch)))
  sftn = load("sftn")
  for p in sftn.PAIRS:
    out.append((f"sftn:{p}", sftn.get_config(p)))
  for p in sftn.FMNIST_PAIRS:
    out.append((f"sftn:fmnist:{p}", sftn.get_config(f"fmnist:{p}")))
  fm = load("fashion_mnist")
  for role in ("teacher", "student", "kd"):
    for size in ("", ",quick"):
      out.append((f"fashion_mnist:{role}{size}", fm.get_config(role + size)))
  qs = load("quickstart").get_config()
  for role in ("teacher", "student", "kd"):
    out.append((f"quickstart:{role}", qs[role]))
  return out + more_cells()


def more_cells():
  """The families added after the first recording: ``[(cell id, config, teacher arch)]``; the
  teacher arch is given where the teacher's workdir does not name it (``teacher_<arch>``)."""
  out = []

  def load(name):
    return importlib.import_module(f"configs.{name}")

  def add(cell, cfg, teacher=None):
    out.append((cell, cfg, teacher))

  # ---- CIFAR-100 families of configs/cifar100/ (one cell per pair / variant)
  for name, variants in (("lskd", ("kd", "dkd")), ("ctkd", ("kd", "ls"))):
    mod = load(f"cifar100.{name}")
    pairs = {"kd": mod.KD_PAIRS, "dkd": mod.DKD_PAIRS} if name == "lskd" else None
    for v in variants:
      for p in pairs[v] if pairs else mod.PAIRS:
        add(f"cifar100/{name}:{v}:{p}", mod.get_config(f"{v}:{p}"))
  for name in ("reviewkd", "oh", "rco", "wttm_noce"):
    mod = load(f"cifar100.{name}")
    for p in mod.PAIRS:
      add(f"cifar100/{name}:{p}", mod.get_config(p))
  ckd = load("cifar100.ckd")
  for arch in ckd.TEACHERS:
    add(f"cifar100/ckd:teacher:{arch}", ckd.get_config(f"teacher:{arch}"))
  k = ckd.KEPT
  options = ["", ",inter", f",epoch:{k[0]}"]
  options += [f",snapshot:{k[0]}+{k[len(k) // 2]}+{k[-1]}", f",snapshot:{k[-2]}+{k[-1]},kl_mean"]
  options += [",full_ensemble", ",full_ensemble,kl_mean"]
  for i, (p, (t, _)) in enumerate(ckd.PAIRS.items()):
    # every kept epoch for the first pair (they differ in teacher.which only)
    for o in options + ([f",epoch:{e}" for e in k[1:]] if i == 0 else []):
      add(f"cifar100/ckd:{p}{o}", ckd.get_config(p + o), t)
  s1 = load("cifar100.sftn_stage1")
  for p in s1.PAIRS:
    add(f"cifar100/sftn_stage1:{p}", s1.get_config(p))
  s2 = load("cifar100.sftn_stage2")
  for m in s2.METHODS:
    for p, (t, _) in s2.PAIRS.items():
      if s2._na(m, p):
        continue
      add(f"cifar100/sftn_stage2:{m}:{p}", s2.get_config(f"{m}:{p}"), t)
      if p == "resnet32x4-resnet8x4":  # the control differs in teacher.workdir only
        add(f"cifar100/sftn_stage2:{m}:{p},standard", s2.get_config(f"{m}:{p},standard"))
  for m in ("kd", "at", "crd"):  # the unknown-student setting (branches of another student)
    add(
      f"cifar100/sftn_stage2:{m}:resnet32x4-ShuffleV2,branch:resnet8x4",
      s2.get_config(f"{m}:resnet32x4-ShuffleV2,branch:resnet8x4"),
      "resnet32x4",
    )
  # the calibration populations: every teacher; every student x loss from one teacher; every
  # teacher x schedule for one student and loss
  for ds in ("cifar100", "cifar10"):
    pop = load(f"{ds}.calibration_population")
    for arch in pop.CAPACITY:
      for sched in pop.SCHEDULES:
        add(
          f"{ds}/calibration_population:teacher:{arch},{sched}",
          pop.get_config(f"teacher:{arch},{sched}"),
        )
        arg = f"resnet8x4,kl,{arch},{sched}"
        add(f"{ds}/calibration_population:{arg}", pop.get_config(arg), arch)
    # every student with KL, every loss with three students (the students differ in model only)
    few = ("resnet8x4", "wrn_16_2", "MobileNetV2") if ds == "cifar100" else ("resnet20",)
    for s in pop.STUDENTS if ds == "cifar100" else few:
      for loss in pop.LOSSES if s in few else ("kl",):
        arg = f"{s},{loss},resnet110,short100"
        if arg != "resnet8x4,kl,resnet110,short100":
          add(f"{ds}/calibration_population:{arg}", pop.get_config(arg), "resnet110")
  # ---- CIFAR-10, ImageNet, Tiny-ImageNet, Ojha
  c10t, c10k = load("cifar10.teacher"), load("cifar10.kd")
  for p, (t, s) in c10k.PAIRS.items():
    add(f"cifar10/kd:{p}", c10k.get_config(p))
  for arch in sorted({a for row in c10k.PAIRS.values() for a in row}):
    add(f"cifar10/teacher:{arch}", c10t.get_config(arch))
  in_common = load("imagenet.common")
  for name in ("ttm", "mdistiller_dkd", "ojha", "sftn"):
    mod = load(f"imagenet.{name}")
    for m, p in mod.CELLS:
      t = p.split("-")[0]
      add(f"imagenet/{name}:{m}:{p}", mod.get_config(f"{m}:{p}"), in_common.arch(t))
  tiny = load("tiny_imagenet.kd")
  add("tiny_imagenet/kd:ResNet50-ShuffleV2", tiny.get_config("ResNet50-ShuffleV2"))
  for arch in ("ResNet50", "ShuffleV2"):
    add(f"tiny_imagenet/kd:teacher:{arch}", tiny.get_config(f"teacher:{arch}"))
  jt = load("ojha.jitter_teacher")
  for arg in ("imagenet", "imagenet,control", "cifar100", "cifar100,control", "cifar100,resnet56"):
    add(f"ojha/jitter_teacher:{arg}", jt.get_config(arg))
  nl = load("ojha.noisy_labels")
  for arg in ("imagenet", "fashion_mnist", "fashion_mnist,quick"):
    add(f"ojha/noisy_labels:{arg}", nl.get_config(arg))
  # ---- table families (the teacher is the teacher cell's model) and members
  for name, args in (
    ("fmnist_quickstart", ("", "quick")),
    ("fmnist_converge", ("",)),
    ("fmnist_tiny", ("",)),
  ):
    for arg in args:
      fam = load(name).get_config(arg)
      for cell in fam.order:
        c = fam.cells[cell]
        t = c.get("teacher_cell", "")
        add(
          f"{name}:{arg + ':' if arg else ''}{cell}", c.run, fam.cells[t].run.model if t else None
        )
  mem = load("members")
  for arg in ("fmnist_kd", "fmnist_student"):
    add(
      f"members:{arg}",
      mem.get_config(arg),
      load("fmnist_quickstart").TEACHER if arg == "fmnist_kd" else None,
    )
  add(
    "members:cifar100_kd:resnet32x4-resnet8x4", mem.get_config("cifar100_kd:resnet32x4-resnet8x4")
  )
  return out


_MODELS = {}


def _abstract_model(name, kwargs, dataset):
  """(module, abstract variables, tap shapes) of a model, cached."""
  key = (name, json.dumps(kwargs, sort_keys=True), dataset)
  if key not in _MODELS:
    shape, classes, _ = DATASETS[dataset]
    mod = models.get(name, num_classes=classes, **kwargs)
    x = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
    variables = jax.eval_shape(lambda x: mod.init(jax.random.PRNGKey(0), x, train=False), x)
    _, taps = jax.eval_shape(lambda v, x: mod.apply(v, x, train=False), variables, x)
    _MODELS[key] = (mod, variables, {k: tuple(v.shape) for k, v in taps.items()})
  return _MODELS[key]


def _teacher_arch(cfg):
  wd = str(cfg.teacher.workdir or "")
  base = os.path.basename(wd.rstrip("/"))
  return base[len("teacher_") :] if base.startswith("teacher_") else None


def _shapes(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {
    "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): list(map(int, v.shape))
    for path, v in flat
  }


def _plain(v):
  if isinstance(v, (tuple, list)):
    return [_plain(x) for x in v]
  if isinstance(v, dict):
    return {str(k): _plain(x) for k, x in sorted(v.items())}
  return v


def _config_rest(cfg):
  d = cfg.to_dict()
  d.pop("method", None)
  return _plain(d)


# ---- recording against the kdjax.methods API --------------------------------------------------
# The steps of kdjax.train.state.init_train_state (bind, connectors, term states), run abstractly
# on the cached tap shapes.
def _term_record(term):
  return {
    "loss": term.spec.name,
    "weight": term.weight,
    "hparams": _plain({k: v for k, v in term.hparams.items() if k not in TAP_HPARAMS}),
    "student_taps": list(term.student_taps),
    "teacher_taps": list(term.teacher_taps),
    "views": term.spec.views.name if term.spec.views is not None else None,
  }


def _stage_terms(method):
  return {t.key: _term_record(t) for t in method.terms}


def record(cfg, teacher: str = None):
  """The canonical record of the method ``cfg`` builds against its pair's models (the teacher's
  architecture ``teacher``, or the one its workdir names)."""
  ds = cfg.dataset.name
  _, _, num_examples = DATASETS[ds]
  _, s_vars, s_shapes = _abstract_model(cfg.model, dict(cfg.model_kwargs), ds)
  method = build_method(cfg.method)
  t_arch = (teacher or _teacher_arch(cfg)) if method.needs_teacher else None
  t_vars, t_shapes = None, None
  if t_arch is not None:
    _, t_vars, t_shapes = _abstract_model(t_arch, {}, ds)
    members = tuple(cfg.teacher.get("members", ()) or ())
    if members:  # an ensemble teacher (kdjax.train.teacher) adds every member's logits
      t_shapes = dict(t_shapes, member_logits=(1, len(members), DATASETS[ds][1]))
  method = method.bind(s_shapes, t_shapes)
  conn_params, conn_stats = jax.eval_shape(
    lambda: method.init_connectors(s_shapes, t_shapes, jax.random.PRNGKey(0))[1:]
  )
  conns = {
    k: _shapes(
      {"params": conn_params[k], **({"batch_stats": conn_stats[k]} if k in conn_stats else {})}
    )
    for k in sorted(conn_params)
  }
  state = jax.eval_shape(
    lambda tv: method.init_states(
      BuildContext(num_examples, tv, s_shapes, t_shapes or {}), jax.random.PRNGKey(0)
    ),
    t_vars,
  )
  init = None
  if method.init is not None:
    st = method.init
    init = {
      "epochs": st.epochs,
      "lr": st.lr,
      "milestones": list(st.milestones),
      "trainable": list(st.trainable),
      "ce_weight": st.method.ce_weight,
      "terms": _stage_terms(st.method),
    }
  views = method.views
  return {
    "teacher": t_arch,
    "method": {
      "name": method.name,
      "ce_weight": method.ce_weight,
      "label_smoothing": method.label_smoothing,
      "trainable": list(method.trainable),
      "views": views.name if views is not None else None,
      "terms": _stage_terms(method),
    },
    "init": init,
    "connectors": conns,
    "state": {k: _shapes(v) for k, v in sorted(state.items())},
    "config": _config_rest(cfg),
  }


def record_all():
  return {cell: record(*rest) for cell, *rest in cells()}


def main(argv=()):
  """Records every cell and writes the golden. A cell already in the golden must record the same
  value again (adding families must not change old cells): otherwise nothing is written, unless
  ``--allow-changes`` is given (a deliberate change of existing configs)."""
  recs = json.loads(json.dumps(record_all()))  # the JSON normalisation the test compares in
  if os.path.exists(OUT):
    with open(OUT) as f:
      old = json.load(f)
    changed = sorted(k for k in old if k in recs and recs[k] != old[k])
    removed = sorted(k for k in old if k not in recs)
    added = sorted(k for k in recs if k not in old)
    print(f"{len(added)} cells added, {len(changed)} changed, {len(removed)} removed")
    if (changed or removed) and "--allow-changes" not in argv:
      print("changed:", changed[:20], "\nremoved:", removed[:20])
      print("not written: existing cells changed (pass --allow-changes if that is intended)")
      sys.exit(1)
  with open(OUT, "w") as f:  # one cell per line (readable diffs)
    f.write(
      "{\n"
      + ",\n".join(
        f"{json.dumps(k)}: {json.dumps(recs[k], sort_keys=True, separators=(',', ':'))}"
        for k in sorted(recs)
      )
      + "\n}\n"
    )
  print(f"wrote {len(recs)} cells to {OUT}")


if __name__ == "__main__":
  main(sys.argv[1:])
