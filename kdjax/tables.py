"""The table runner: a config family's cells × seeds, resumable, as Markdown + CSV + JSON.

A *family* config (``configs/<family>.py:<arg>``, ``get_config`` returning a ConfigDict) is::

  c.name      the table's name
  c.setting   one line describing the setting (printed above the table)
  c.seeds     default seeds of every cell, e.g. (0, 1, 2)
  c.order     cell names in run order (a cell's teacher cell must come before it)
  c.cells.<name> = ConfigDict(
      run=<a normal run config (kdjax.config.base_config)>,
      seeds=(...),            optional: overrides c.seeds (e.g. one teacher for every student)
      teacher_cell='',        optional: the cell whose run is this cell's teacher; its seed-S run
                              teaches seed S when that cell has seed S, else its first seed
      published_key='',       optional: the key of this cell's published number in the family
                              module's docstring (``key 73.33`` or ``key: 73.33``); '' = none
      published=None,         optional: the published number itself (e.g. read from the cell
                              config's ``PAIRS`` table); overrides published_key
      published_source='',    optional: where that number is printed (shown in the table)
      teacher_export='',      optional: 'sftn' = the teacher cell is an SFTN run (config.model
                              'sftn'); its teacher is exported once (kdjax.teachers.sftn) into
                              ``<teacher seed dir>/sftn_teacher`` and distilled from
      members=False,          optional: train the cell's seeds together in one vmapped step
                              (kdjax.train.members; its member dirs are the seed dirs below)
                              when they share one teacher, instead of one after another
      label='')               optional: the row's label (default the cell name)

``run.teacher.members`` entries that start with ``@`` (``'@epoch:20'``) name checkpoints of the
teacher cell's run (``<teacher seed dir>@epoch:20``): snapshot ensembles of a teacher cell.

:func:`run_table` trains every (cell, seed) whose ``<out>/cells/<cell>/seed<S>/summary.json`` is
not finished (relaunching skips finished ones and resumes interrupted ones from their
checkpoints), then writes ``<out>/table.{md,csv,json}``: per cell the mean ± std over its finished
seeds of the last and the best top-1, the teacher's top-1, the last-epoch agreement with the
teacher, the mean wall time per seed, and the published number beside them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from typing import Optional

import numpy as np

from kdjax.errors import UserError
from kdjax.methods import build_method
from kdjax.teachers import sftn as sftn_teacher
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train.loop import train_and_evaluate
from kdjax.train.loop import train_members

_NUM = re.compile(r"(?<![\w.+-])([A-Za-z][\w.+-]*)\s*[:=]?\s+(\d{1,3}\.\d{1,3})(?![\d])")


def published_numbers(doc: Optional[str]) -> dict:
  """``{key: number}`` of every ``key 73.33`` / ``key: 73.33`` in a docstring (first wins)."""
  out = {}
  for key, num in _NUM.findall(doc or ""):
    out.setdefault(key.rstrip(":,"), float(num))
  return out


def module_doc(path: str) -> str:
  """The docstring of the config module at ``path`` (where its published numbers are)."""
  import importlib.util

  spec = importlib.util.spec_from_file_location("_family", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.__doc__ or ""


def cell_dir(out: str, cell: str, seed: int) -> str:
  return os.path.join(out, "cells", cell, f"seed{int(seed)}")


def _finished(wd: str) -> Optional[dict]:
  p = os.path.join(wd, "summary.json")
  if not os.path.exists(p):
    return None
  with open(p) as fh:
    s = json.load(fh)
  return s if s.get("finished") and s.get("last_top1") is not None else None


def _cell_seeds(family, name) -> list:
  cell = family.cells[name]
  seeds = cell.get("seeds", None) or family.seeds
  return [int(s) for s in seeds]


def check_family(family) -> list:
  """Validates the family's structure; returns the cell names in run order."""
  for k in ("name", "seeds", "order", "cells"):
    if k not in family:
      raise UserError(
        f"table family config has no {k!r}: a family needs name, setting, seeds, "
        "order and cells (see kdjax/tables.py)."
      )
  order = list(family.order)
  missing = [n for n in order if n not in family.cells]
  if missing:
    raise UserError(
      f"table family {family.name!r}: order names unknown cells {missing}; cells "
      f"are {sorted(family.cells)}."
    )
  for i, n in enumerate(order):
    t = family.cells[n].get("teacher_cell", "")
    if t and t not in order[:i]:
      raise UserError(
        f"table family {family.name!r}: cell {n!r} has teacher_cell {t!r}, which "
        "must be a cell listed before it in order."
      )
  return order


def _teacher_run_dir(family, out, name, seed) -> str:
  """The run dir of the teacher cell's run that teaches seed ``seed`` ('' = no teacher cell)."""
  t = family.cells[name].get("teacher_cell", "")
  if not t:
    return ""
  tseeds = _cell_seeds(family, t)
  return cell_dir(out, t, seed if seed in tseeds else tseeds[0])


def _export_kind(family, name) -> str:
  kind = family.cells[name].get("teacher_export", "")
  if kind not in ("", "sftn"):
    raise UserError(f"cell {name!r}: teacher_export must be '' or 'sftn', got {kind!r}.")
  return kind


def _teacher_dir(family, out, name, seed) -> str:
  """The teacher workdir this cell's seed distils from ('' = none from a teacher cell)."""
  t = _teacher_run_dir(family, out, name, seed)
  if t and _export_kind(family, name) == "sftn":
    return os.path.join(t, "sftn_teacher")
  return t


def _export_teacher(family, out, name, seed, log) -> None:
  """Exports the SFTN teacher cell's teacher once (``teacher_export='sftn'``)."""
  if not _export_kind(family, name):
    return
  src, dst = _teacher_run_dir(family, out, name, seed), _teacher_dir(family, out, name, seed)
  if not os.path.exists(os.path.join(dst, "export.json")):
    log(f"[table] {name}: exporting the SFTN teacher of {src}")
    sftn_teacher.export_teacher(src, dst)


def _run_config(family, out, name, seed):
  cfg = family.cells[name].run.copy_and_resolve_references()
  cfg.seed = int(seed)
  t = _teacher_dir(family, out, name, seed)
  if t:
    cfg.teacher.workdir = t
    members = tuple(cfg.teacher.get("members", ()) or ())
    if any(m.startswith("@") for m in members):  # checkpoints of the teacher cell's run
      cfg.teacher.members = tuple(t + m if m.startswith("@") else m for m in members)
  return cfg


def run_cell(family, out: str, name: str, *, log=print) -> list:
  """Trains the unfinished seeds of one cell; returns the finished seeds' summaries."""
  cell = family.cells[name]
  seeds = _cell_seeds(family, name)
  todo = [s for s in seeds if _finished(cell_dir(out, name, s)) is None]
  if todo:
    needs_teacher = build_method(cell.run.method).needs_teacher
    if (
      needs_teacher
      and not cell.get("teacher_cell", "")
      and not cell.run.teacher.workdir
      and not cell.run.teacher.members
    ):
      raise UserError(
        f"cell {name!r} distils but has neither teacher_cell nor run.teacher.workdir."
      )
    for s in todo:
      _export_teacher(family, out, name, s, log)
    one_teacher = len({_teacher_dir(family, out, name, s) for s in todo}) == 1
    if cell.get("members", False) and len(todo) > 1 and one_teacher:
      log(f"[table] {name}: seeds {todo} as members of one vmapped run")
      # member dirs are <cell>/seed<S>, exactly the dirs of sequential runs
      train_members(_run_config(family, out, name, todo[0]), todo, os.path.join(out, "cells", name))
    else:
      for s in todo:
        log(f"[table] {name} seed {s}")
        train_and_evaluate(_run_config(family, out, name, s), cell_dir(out, name, s))
  return [x for x in (_finished(cell_dir(out, name, s)) for s in seeds) if x is not None]


def _ms(xs):
  xs = [float(x) for x in xs if x is not None]
  if not xs:
    return None, None, 0
  return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0, len(xs)


def aggregate(family, out: str, published: dict) -> list:
  """Per-cell rows from the finished seeds on disk (nothing is trained)."""
  rows = []
  for name in check_family(family):
    cell = family.cells[name]
    seeds = _cell_seeds(family, name)
    sums = [x for x in (_finished(cell_dir(out, name, s)) for s in seeds) if x is not None]
    row = {
      "cell": name,
      "label": cell.get("label", "") or name,
      "model": cell.run.model,
      "method": sums[0]["method"] if sums else cell.run.method.name,
      "seeds": [s["seed"] for s in sums],
      "seeds_planned": seeds,
    }
    for key in ("last_top1", "best_top1", "teacher_top1", "last_agreement", "train_seconds"):
      m, sd, k = _ms([s.get(key) for s in sums])
      row[key + "_mean"], row[key + "_std"] = m, sd
    row["per_seed_last_top1"] = [s.get("last_top1") for s in sums]
    pk = cell.get("published_key", "")
    row["published"] = published.get(pk) if pk else None
    if cell.get("published", None) is not None:
      row["published"] = float(cell.published)
    row["published_source"] = cell.get("published_source", "")
    rows.append(row)
  return rows


def _fmt(m, sd, digits=2):
  if m is None:
    return "–"
  return f"{m:.{digits}f}" if sd is None else f"{m:.{digits}f} ± {sd:.{digits}f}"


def markdown(family, rows, command: str = "") -> str:
  lines = []
  if family.get("setting", ""):
    lines.append(f"Setting: {family.setting}")
    lines.append("")
  lines += [
    "| cell | model | method | seeds | last top-1 | best top-1 | teacher top-1 | "
    "agreement | seconds / seed | published |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    n = len(r["seeds"])
    sd = lambda k: r[k] if n > 1 else None  # one seed: no ± (a std of 0 would mislead)
    lines.append(
      f"| {r['label']} | {r['model']} | {r['method']} | {n}/{len(r['seeds_planned'])} | "
      f"{_fmt(r['last_top1_mean'], sd('last_top1_std'))} | "
      f"{_fmt(r['best_top1_mean'], sd('best_top1_std'))} | "
      f"{_fmt(r['teacher_top1_mean'], r['teacher_top1_std'] or None)} | "
      f"{_fmt(r['last_agreement_mean'], sd('last_agreement_std'))} | "
      f"{_fmt(r['train_seconds_mean'], None, 0)} | "
      f"{_fmt(r['published'], None)} |"
    )
  lines.append("")
  lines.append(
    "mean ± std (sample std, ddof 1) over the finished seeds; agreement = % of test "
    "images where student and teacher predict the same class (last epoch)."
  )
  sources = sorted({r.get("published_source", "") for r in rows if r["published"] is not None})
  if any(sources):
    lines.append("Published numbers from: " + "; ".join(x for x in sources if x) + ".")
  if command:
    lines.append(f"Rerun: `{command}`")
  return "\n".join(lines) + "\n"


CSV_KEYS = (
  "cell",
  "label",
  "model",
  "method",
  "seeds",
  "last_top1_mean",
  "last_top1_std",
  "best_top1_mean",
  "best_top1_std",
  "teacher_top1_mean",
  "teacher_top1_std",
  "last_agreement_mean",
  "last_agreement_std",
  "train_seconds_mean",
  "published",
  "published_source",
)


def write_table(family, out: str, rows, *, command: str = "") -> dict:
  os.makedirs(out, exist_ok=True)
  md = markdown(family, rows, command)
  with open(os.path.join(out, "table.md"), "w") as fh:
    fh.write(md)
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=CSV_KEYS, extrasaction="ignore")
  w.writeheader()
  for r in rows:
    w.writerow(dict(r, seeds=" ".join(map(str, r["seeds"]))))
  with open(os.path.join(out, "table.csv"), "w") as fh:
    fh.write(buf.getvalue())
  doc = {
    "name": family.name,
    "setting": family.get("setting", ""),
    "command": command,
    "rows": rows,
  }
  ckpt_lib.write_json(os.path.join(out, "table.json"), doc)
  return {"markdown": md, "rows": rows}


def run_table(
  family, out: str, *, module_doc: str = "", command: str = "", only: tuple = (), log=print
) -> dict:
  """Runs (resumes) every cell of ``family`` (or the cells in ``only``) and writes the table."""
  order = check_family(family)
  if only:
    unknown = [c for c in only if c not in order]
    if unknown:
      raise UserError(f"--cells names unknown cells {unknown}; the family has {order}.")
  published = published_numbers(module_doc)
  t0 = time.time()
  for name in order:
    if only and name not in only:
      continue
    run_cell(family, out, name, log=log)
    write_table(family, out, aggregate(family, out, published), command=command)
  res = write_table(family, out, aggregate(family, out, published), command=command)
  res["seconds"] = time.time() - t0
  return res


def paired_gain(out: str, family, cell: str, baseline: str, key: str = "last_top1") -> dict:
  """Per-seed ``cell - baseline`` differences of ``key`` over the seeds both finished (the same
  seed means the same initialisation, data order and augmentation): mean ± std, and how many
  seeds are positive."""
  diffs = {}
  for s in _cell_seeds(family, cell):
    a, b = _finished(cell_dir(out, cell, s)), _finished(cell_dir(out, baseline, s))
    if a is not None and b is not None and a.get(key) is not None and b.get(key) is not None:
      diffs[s] = float(a[key]) - float(b[key])
  m, sd, n = _ms(list(diffs.values()))
  return {
    "per_seed": diffs,
    "mean": m,
    "std": sd,
    "n": n,
    "positive": sum(d > 0 for d in diffs.values()),
  }
