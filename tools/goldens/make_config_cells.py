"""Generates tests/golden/config_cells.json: the method every config cell of ``configs/`` builds.

Run from the repository root (CI only reads the golden; ``tests/test_config_cells.py`` recomputes
every record with :func:`record_all` and compares)::

    python tools/goldens/make_config_cells.py

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
DATASETS = {"cifar100": ((32, 32, 3), 100, 50000), "fashion_mnist": ((28, 28, 1), 10, 60000)}
TAP_HPARAMS = ("layers", "layer", "hint_layer")


def cells():
  """``[(cell id, config)]`` for every config cell of ``configs/`` (analysis/online excluded)."""
  out = []

  def load(name):
    return importlib.import_module(f"configs.{name}")

  rd = load("cifar100.repdistiller")
  for m in rd.METHOD_ORDER:
    for p, row in rd.PAIRS.items():
      if row[4][m] is not None:
        out.append((f"cifar100/repdistiller:{m}:{p}", rd.get_config(f"{m}:{p}")))
  for name in ("kd", "ttm", "wttm", "dkd", "dist", "itrd", "wttm_crd", "wttm_itrd", "sskd"):
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


def record(cfg):
  """The canonical record of the method ``cfg`` builds against its pair's models."""
  ds = cfg.dataset.name
  _, _, num_examples = DATASETS[ds]
  _, s_vars, s_shapes = _abstract_model(cfg.model, dict(cfg.model_kwargs), ds)
  method = build_method(cfg.method)
  t_arch = _teacher_arch(cfg) if method.needs_teacher else None
  t_vars, t_shapes = None, None
  if t_arch is not None:
    _, t_vars, t_shapes = _abstract_model(t_arch, {}, ds)
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
  return {cell: record(cfg) for cell, cfg in cells()}


def main():
  recs = record_all()
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
  main()
