"""Library entry points behind the ``launch/`` scripts (importable and tested)."""

from __future__ import annotations

import json
import os
import time

from kdjax import data as kdata
from kdjax import models
from kdjax.config import parse_which
from kdjax.data import augment
from kdjax.errors import UserError
from kdjax.methods import build_method
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import parallel
from kdjax.train.loop import evaluate, train_and_evaluate
from kdjax.train.step import make_eval_step


def _report(summary):
  keys = (
    "model",
    "method",
    "last_top1",
    "best_top1",
    "best_epoch",
    "teacher_top1",
    "last_agreement",
    "train_seconds",
  )
  print("[kdjax] " + json.dumps({k: summary.get(k) for k in keys}))


def train_teacher(config, workdir: str) -> dict:
  """Supervised training (teachers and student baselines)."""
  if build_method(config.method).needs_teacher:
    raise UserError(
      "launch/train_teacher.py trains without a teacher, but config.method has "
      "teacher terms; use launch/distill.py."
    )
  s = train_and_evaluate(config, workdir)
  _report(s)
  return s


def distill(config, workdir: str) -> dict:
  """Distillation from ``config.teacher``."""
  if not build_method(config.method).needs_teacher:
    raise UserError(
      "config.method has no distillation term with a non-zero weight; "
      "use launch/train_teacher.py for supervised training."
    )
  s = train_and_evaluate(config, workdir)
  _report(s)
  return s


def evaluate_run(
  workdir: str, *, which: str = "final", teacher_workdir: str = "", data_dir=None, idx_dir=None
) -> dict:
  """Evaluates a stored model checkpoint on its dataset's test split."""
  variables, meta = ckpt_lib.load_model(workdir, parse_which(which))
  info = kdata.info(meta["dataset"])
  test = kdata.load_arrays(meta["dataset"], info.eval_split, data_dir=data_dir, idx_dir=idx_dir)
  mesh = parallel.make_mesh()

  def eval_step(m):
    module = models.get(
      m["arch"], num_classes=info.num_classes, **dict(m.get("model_kwargs") or {})
    )
    return make_eval_step(module, lambda im: augment.eval_transform(info, im))

  t_pred = None
  out = {}
  if teacher_workdir:
    t_vars, t_meta = ckpt_lib.load_model(teacher_workdir, "final")
    t_metrics, t_pred = evaluate(
      eval_step(t_meta), parallel.put_replicated(t_vars, mesh), test, mesh, 500
    )
    out["teacher"] = t_metrics
  metrics, _ = evaluate(
    eval_step(meta), parallel.put_replicated(variables, mesh), test, mesh, 500, t_pred
  )
  out.update(metrics, arch=meta["arch"], step=meta["step"], epoch=meta.get("epoch"))
  ckpt_lib.write_json(os.path.join(workdir, f"eval_{which.replace(':', '_')}.json"), out)
  print(
    f"[kdjax] {meta['arch']} ({workdir}, step {meta['step']}): "
    + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
  )
  return out


def quickstart(config, workdir: str) -> list:
  """Teacher, student alone and student with KD on the configured data; prints a table.

  ``config`` has three run configs: ``teacher``, ``student``, ``kd`` (the last one's
  ``teacher.workdir`` is filled in with the teacher run's directory).
  """
  t0 = time.time()
  rows = []
  runs = [
    ("teacher", config.teacher, train_teacher),
    ("student", config.student, train_teacher),
    ("kd", config.kd, distill),
  ]
  for name, cfg, fn in runs:
    cfg = cfg.copy_and_resolve_references()
    if name == "kd":
      cfg.teacher.workdir = os.path.join(workdir, "teacher")
    s = fn(cfg, os.path.join(workdir, name))
    rows.append((name, s))
  lines = [
    "| run | model | method | last top-1 | best top-1 | agreement w/ teacher | seconds |",
    "|---|---|---|---|---|---|---|",
  ]
  for name, s in rows:
    agr = f"{s['last_agreement']:.2f}" if s.get("last_agreement") is not None else "-"
    lines.append(
      f"| {name} | {s['model']} | {s['method']} | {s['last_top1']:.2f} | "
      f"{s['best_top1']:.2f} | {agr} | {s['train_seconds']:.0f} |"
    )
  table = "\n".join(lines)
  print("\n" + table + f"\n\ntotal wall time {time.time() - t0:.0f}s; runs in {workdir}")
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(table + "\n")
  return rows
