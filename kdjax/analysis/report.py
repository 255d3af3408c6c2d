"""What gets distilled: the analysis suite over saved checkpoints (Ojha et al., NeurIPS 2023).

methods.md §6: beyond accuracy, distillation transfers implicit properties of the teacher. Given a
teacher run, one or more distilled student runs and an independently trained student run (all
``kdjax`` workdirs on the same dataset), :func:`analyze` compares every student (each distilled one
**and** the independent one) with the teacher on the evaluation split and writes ``report.md``,
``report.json`` and PNG figures to ``config.out_dir``.

The probes are modules of :mod:`kdjax.analysis.probes` (``agreement``, ``cka``, ``gradcam``,
``adversarial``, ``invariance``, ``cues``, ``calibration``, ``fairness``), each resolved from
``config.probes.<name>.type`` like big_vision's evaluators; this module only loads the runs and
the evaluation set, computes the clean logits once, runs the probes in order and assembles their
sections. :func:`base_config` is the default config (``configs/analysis.py`` adapts it)::

  c = kdjax.analysis.base_config()
  c.teacher, c.distilled, c.independent = "runs/t", "kd=runs/kd,hint=runs/hint", "runs/s"
  c.out_dir = "runs/report"
  c.probes.adversarial.pgd_steps = 5
  report = kdjax.analysis.analyze(c)

Every "direction vs paper" sentence compares a distilled student with the independent one using
the numbers just computed (e.g. "distilled agreement > independent: yes"); nothing is asserted
from the paper's tables.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kdjax import data as kdata
from kdjax import models as kmodels
from kdjax.analysis import probes as probes_lib
from kdjax.analysis.probes import base
from kdjax.errors import UserError
from kdjax.train.checkpoint import load_model, write_json

__all__ = ["analyze", "base_config", "select_probes", "parse_distilled", "ALL_PROBES"]

ALL_PROBES = probes_lib.names()
_PAPER = (
  "Ojha et al., What Knowledge Gets Distilled in Knowledge Distillation?, NeurIPS 2023 "
  "(methods.md §6)"
)


def base_config() -> ml_collections.ConfigDict:
  """The default analysis config: the runs, the evaluation set, and every registered probe with
  its default settings under ``probes.<name>`` (``type`` = the probe's registered name)."""
  c = ml_collections.ConfigDict()
  c.setting = ""
  c.teacher = ""  # workdir of the teacher run
  c.distilled = ""  # 'NAME=WORKDIR,...' distilled students
  c.independent = ""  # workdir of the same student trained without a teacher
  c.out_dir = ""  # report.md, report.json and PNGs go here
  c.num_examples = 1000  # seeded random subset of the evaluation split (0 = all)
  c.batch_size = 250  # rows of every compiled batch (the last one is padded)
  c.which = "final"  # checkpoint of every run: final | best | <step>
  c.eval_split = ""  # default: the dataset's evaluation split
  c.image_size = 0  # streamed datasets (ImageNet): crop size; 0 = default
  c.data_dir = ""  # TFDS data_dir
  c.idx_dir = ""  # (Fashion-)MNIST IDX directory
  c.seed = 0  # subset, jitter and cue-set seed
  c.progress = True  # a progress bar per probe
  c.probes = ml_collections.ConfigDict()
  for name in probes_lib.names():
    c.probes[name] = ml_collections.ConfigDict(dict(type=name, **probes_lib.get(name).defaults()))
  return c


def select_probes(config, names) -> ml_collections.ConfigDict:
  """``config`` with only the probes ``names``; unknown names are a UserError."""
  names = list(names)
  unknown = [n for n in names if n not in config.probes]
  if unknown or not names:
    raise UserError(
      f"unknown probes {unknown or names}; choose from {', '.join(config.probes.keys())}"
    )
  config.probes = ml_collections.ConfigDict({n: config.probes[n] for n in names})
  return config


def parse_distilled(spec) -> Dict[str, str]:
  """``'kd=runs/kd,hint=runs/hint'`` (or a sequence of ``NAME=WORKDIR``, or a mapping) ->
  ``{name: workdir}``."""
  if isinstance(spec, Mapping):
    items = [f"{k}={v}" for k, v in spec.items()]
  elif isinstance(spec, str):
    items = [s for s in spec.split(",") if s.strip()]
  else:
    items = list(spec)
  runs: Dict[str, str] = {}
  for item in items:
    name, sep, wd = str(item).strip().partition("=")
    if not sep or not name or not wd:
      raise UserError(f"distilled students are NAME=WORKDIR items, got {item!r}")
    if name in runs:
      raise UserError(f"the distilled student {name!r} is named twice")
    if name in ("teacher", "independent") or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
      raise UserError(
        f"bad distilled student name {name!r}: use letters, digits, _ . -; "
        "'teacher' and 'independent' are reserved"
      )
    runs[name] = wd
  return runs


# ------------------------------------------------------------------------------------ loading


def _load_run(name, role, workdir, which) -> base.Run:
  variables, meta = load_model(workdir, which)
  for k in ("arch", "num_classes", "dataset"):
    if k not in meta:
      raise UserError(f"checkpoint metadata of {workdir!r} has no {k!r}; is it a kdjax run?")
  module = kmodels.get(
    meta["arch"], num_classes=int(meta["num_classes"]), **dict(meta.get("model_kwargs") or {})
  )
  ns = getattr(module, "num_stages", None)
  return base.Run(
    name,
    role,
    workdir,
    module,
    jax.device_put(variables),
    meta,
    None,
    ns if isinstance(ns, int) else None,
  )


def _last_stage_tap(run: base.Run, x):
  """The last ``stageK`` tap (None when the model has no ``stageK`` or no ``pooled`` tap)."""
  _, taps = jax.eval_shape(lambda v, z: run.module.apply(v, z, train=False), run.variables, x)
  stages = [int(m.group(1)) for k in taps for m in [re.fullmatch(r"stage(\d+)", k)] if m]
  return f"stage{max(stages)}" if stages and "pooled" in taps else None


def _load_eval_data(dataset, split, n, *, data_dir, idx_dir, seed, image_size):
  info = kdata.info(dataset)
  split = split or info.eval_split
  if info.in_memory:
    s = kdata.load_arrays(dataset, split, data_dir=data_dir, idx_dir=idx_dir)
    if len(s.labels) == 0:
      raise UserError(f"{dataset} split {split!r} is empty")
    idx = np.arange(len(s.labels))
    if n and n < len(idx):
      idx = np.sort(np.random.default_rng(seed).permutation(len(idx))[:n])
    return info, split, s.images[idx], s.labels[idx].astype(np.int32)
  stream = kdata.HostStream(
    dataset,
    split,
    batch_size=256,
    train=False,
    data_dir=data_dir,
    image_size=image_size or info.image_shape[0],
    limit=n or None,
  )
  imgs, labels = [], []
  for b in stream.iter_epoch(0):
    imgs.append(b["image"])
    labels.append(b["label"])
  return info, split, np.concatenate(imgs), np.concatenate(labels).astype(np.int32)


def _build_probes(config):
  entries = config.probes.to_dict() if hasattr(config.probes, "to_dict") else dict(config.probes)
  if not entries:
    raise UserError(f"no probe selected; choose from {', '.join(probes_lib.names())}")
  out = []
  for name, entry in entries.items():
    entry = dict(entry or {})
    cls = probes_lib.get(entry.pop("type", name))
    out.append(cls(name, entry))
  # ConfigDict keys iterate sorted: the report follows the probe types' registered order.
  return sorted(out, key=lambda p: (p.order, p.name))


# ------------------------------------------------------------------------------------ report


def _write_markdown(ctx: base.Context, report: dict, probes, path: str):
  s = report["setup"]
  L = [
    "# What gets distilled: analysis report",
    "",
    "Ojha et al., *What Knowledge Gets Distilled in Knowledge Distillation?* (NeurIPS 2023); "
    "methods.md §6. Every student (each distilled one and the independent one) is compared "
    "with the teacher.",
    "",
    f"Dataset `{s['dataset']}`, split `{s['split']}`, {s['num_examples']} evaluation "
    f"examples (seed {s['seed']}).",
    "",
    base.table(
      ["name", "role", "arch", "checkpoint step", "workdir"],
      [[m["name"], m["role"], m["arch"], m["step"], f"`{m['workdir']}`"] for m in s["models"]],
    ),
    "",
  ]
  if ctx.notes:
    L += ["Notes:", ""] + [f"- {n}" for n in ctx.notes] + [""]
  for p in probes:
    res = report[p.name]
    L += [f"## {p.section_title}", ""]
    if "skipped" in res and len(res) == 1:
      L += [f"Skipped: {res['skipped']}", ""]
      continue
    L += p.markdown(ctx, res)
    dirs = ctx.direction_lines(p.name)
    if dirs:
      L += ["", "Direction vs paper:", ""] + dirs
    L.append("")
  L += ["## Direction vs paper", ""]
  decided = [d for d in ctx.directions if d["holds"] is not None]
  L.append(
    f"The paper's direction (distilled student closer to the teacher than the "
    f"independent one) holds in {sum(d['holds'] for d in decided)} of {len(decided)} "
    f"comparisons computed here."
  )
  L += [""] + [f"- [{d['probe']}] {base.direction_sentence(d)}" for d in ctx.directions] + [""]
  with open(path, "w") as f:
    f.write("\n".join(L))


def analyze(config) -> dict:
  """Runs the configured probes on (teacher, distilled students, independent student).

  Args:
    config: a :func:`base_config`-shaped ConfigDict (``configs/analysis.py``): ``teacher``,
      ``distilled`` (``'NAME=WORKDIR,...'``), ``independent``, ``out_dir``, the evaluation set
      (``num_examples``, ``batch_size``, ``which``, ``eval_split``, ``image_size``, ``data_dir``,
      ``idx_dir``, ``seed``), ``progress`` and ``probes`` (``{name: {type, **settings}}``; a
      probe's settings are its class's ``defaults()``; they run and are reported in the types'
      registered order, see :func:`kdjax.analysis.probes.names`).

  Returns:
    The report dict (also written to ``out_dir/report.json``).
  """
  probes = _build_probes(config)
  distilled = parse_distilled(config.distilled)
  if not distilled:
    raise UserError("give at least one distilled student (distilled='NAME=WORKDIR,...')")
  if not config.teacher:
    raise UserError("the teacher's workdir is required (teacher=...)")
  if not config.independent:
    raise UserError("the independent student's workdir is required (the paper's reference)")
  if not config.out_dir:
    raise UserError("out_dir is required (where the report goes)")
  num_examples, seed = int(config.num_examples), int(config.seed)
  # Fail before any work when an external dataset a selected probe needs is missing.
  for p in probes:
    p.check(base.Setup(num_examples=num_examples, seed=seed))
  which = config.which
  if isinstance(which, str) and which.isdigit():
    which = int(which)
  teacher = _load_run("teacher", "teacher", config.teacher, which)
  students = [_load_run(n, "distilled", w, which) for n, w in distilled.items()]
  students.append(_load_run("independent", "independent", config.independent, which))
  runs = [teacher] + students
  datasets = {r.name: r.meta["dataset"] for r in runs}
  if len(set(datasets.values())) != 1:
    raise UserError(f"all models must share one dataset; got {datasets}")
  ncls = {r.name: int(r.meta["num_classes"]) for r in runs}
  if len(set(ncls.values())) != 1:
    raise UserError(f"all models must have the same number of classes; got {ncls}")
  dataset = datasets["teacher"]

  info, split, images, labels = _load_eval_data(
    dataset,
    config.eval_split or None,
    num_examples,
    data_dir=config.data_dir or None,
    idx_dir=config.idx_dir or None,
    seed=seed,
    image_size=config.image_size or None,
  )
  bs = max(1, min(int(config.batch_size), len(labels)))
  for r in runs:
    r.last_tap = _last_stage_tap(r, jnp.zeros((1,) + images.shape[1:], jnp.float32))
  out_dir = str(config.out_dir)
  os.makedirs(out_dir, exist_ok=True)
  ctx = base.Context(
    teacher,
    students,
    info,
    images,
    labels,
    bs,
    out_dir,
    seed=seed,
    num_examples=num_examples,
    progress=bool(config.progress),
  )

  timings = {}
  t0 = time.perf_counter()
  with ctx.bar(len(runs), "forward") as bar:
    for r in runs:
      ctx.logits[r.name] = ctx.predict(r, images)
      bar.update()
  timings["forward"] = time.perf_counter() - t0
  results: Dict[str, Any] = {}
  for p in probes:
    t0 = time.perf_counter()
    results[p.name] = p.compute(ctx)
    p.figures(ctx, results[p.name])
    timings[p.name] = time.perf_counter() - t0

  report = {
    "setup": {
      "paper": _PAPER,
      "dataset": dataset,
      "split": split,
      "num_examples": int(len(labels)),
      "seed": seed,
      "probes": [p.name for p in probes],
      "config": config.to_dict() if hasattr(config, "to_dict") else dict(config),
      "models": [
        {
          "name": r.name,
          "role": r.role,
          "workdir": r.workdir,
          "arch": r.meta["arch"],
          "step": r.meta.get("step"),
          "last_stage_tap": r.last_tap,
        }
        for r in runs
      ],
      "seconds": timings,
    },
    **results,
  }
  report["directions"] = ctx.directions
  report["notes"] = ctx.notes
  _write_markdown(ctx, report, probes, os.path.join(out_dir, "report.md"))
  report["figures"] = dict(ctx.figures)
  write_json(os.path.join(out_dir, "report.json"), base.jsonable(report))
  return report
