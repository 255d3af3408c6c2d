"""The calibration study of Fan et al. (ICML 2024): teacher calibration vs. student accuracy.

For each teacher (a run workdir, optionally ``WORKDIR@WHICH``): measure its test accuracy, ECE,
NLL and Brier (and a reliability diagram); optionally fit a post-hoc temperature (NLL) on the
teacher's own validation split and distil from the temperature-scaled teacher too; distil one fixed
student config from it; finally correlate teacher ECE / accuracy with student accuracy (Spearman
and Pearson, scipy on the host) and write ``study.csv``, ``study.json``, ``study.md`` and a
scatter plot.

The validation split is the one the teacher run held out of its training data
(``dataset.val_examples`` in its ``config.json``; :mod:`kdjax.data.holdout` rebuilds the same
examples). A teacher trained on the whole training split has none, and the study refuses to fit a
temperature for it rather than fit on images the teacher has seen.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from typing import Optional, Sequence

import numpy as np

from kdjax import data as kdata
from kdjax import eval as eval_lib
from kdjax import models
from kdjax.calibration.metrics import calibration_report, probs_from_logits
from kdjax.calibration.plots import reliability_diagram
from kdjax.calibration.temperature import fit_temperature
from kdjax.config import parse_which
from kdjax.data import augment
from kdjax.errors import UserError
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train.loop import train_and_evaluate


def predict_logits(workdir: str, which, split, batch: int = 500) -> np.ndarray:
  """Eval-mode logits of a stored model on an in-memory split (kdjax.eval.predict_logits)."""
  variables, meta = ckpt_lib.load_model(workdir, which)
  info = kdata.info(meta["dataset"])
  net = models.get(
    meta["arch"], num_classes=int(meta["num_classes"]), **dict(meta.get("model_kwargs") or {})
  )
  return eval_lib.predict_logits(
    net,
    variables,
    split.images,
    batch_size=batch,
    preprocess=functools.partial(augment.eval_transform, info),
  )


def teacher_validation_split(
  workdir: str, *, data_dir: Optional[str] = None, idx_dir: Optional[str] = None
):
  """The examples the teacher run in ``workdir`` held out of its training split (an ArraySplit),
  rebuilt from its ``config.json`` (``dataset.name/train_split/train_limit/val_examples/val_seed``,
  :func:`kdjax.data.split_holdout`). ``data_dir`` / ``idx_dir`` override where the data is read
  from (the examples do not depend on it). A UserError when the run held nothing out."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise UserError(
      f"The teacher {workdir!r} has no config.json, so its held-out validation split is unknown: "
      "temperature scaling needs a teacher trained by kdjax with dataset.val_examples > 0."
    )
  with open(path) as fh:
    d = json.load(fh).get("dataset", {})
  n_val = int(d.get("val_examples") or 0)
  if n_val <= 0:
    raise UserError(
      f"The teacher {workdir!r} was trained on its whole training split (dataset.val_examples = "
      "0 in its config.json), so it has no held-out data to fit a temperature on; fitting on its "
      "own training images would bias T. Retrain the teacher with a validation split, e.g. "
      "--config.dataset.val_examples=5000, or run the study without temperature scaling."
    )
  name = d.get("name") or "cifar100"
  train = kdata.load_arrays(
    name,
    d.get("train_split") or kdata.info(name).train_split,
    data_dir=data_dir or d.get("data_dir"),
    idx_dir=idx_dir or d.get("idx_dir"),
    limit=int(d.get("train_limit") or 0) or None,
  )
  _, val = kdata.split_holdout(train, n_val, int(d.get("val_seed") or 0))
  return val


def _correlations(x, y):
  from scipy import stats

  if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
    return {
      "spearman": float("nan"),
      "spearman_p": float("nan"),
      "pearson": float("nan"),
      "pearson_p": float("nan"),
      "n": len(x),
    }
  s = stats.spearmanr(x, y)
  p = stats.pearsonr(x, y)
  return {
    "spearman": float(s.statistic),
    "spearman_p": float(s.pvalue),
    "pearson": float(p.statistic),
    "pearson_p": float(p.pvalue),
    "n": len(x),
  }


def calibration_study(
  student_config,
  teachers: Sequence[str],
  out_dir: str,
  *,
  temperature_scaled: bool = False,
  num_bins: int = 15,
  data_dir: Optional[str] = None,
  idx_dir: Optional[str] = None,
) -> dict:
  """Runs the study; returns ``{'rows': [...], 'correlations': {...}}``.

  Args:
    student_config: a full distillation run config (its ``teacher`` block is overwritten).
    teachers: teacher run workdirs, each optionally suffixed ``@final|@best|@epoch:N|@step:N``.
    out_dir: where student runs (``student_<i>``) and the study files go.
    temperature_scaled: also distil from each teacher after post-hoc temperature scaling fitted
      (NLL) on the validation split the teacher run held out (:func:`teacher_validation_split`);
      every teacher must have one (``dataset.val_examples > 0`` when it was trained), checked
      before any student is trained.
  """
  os.makedirs(out_dir, exist_ok=True)
  dcfg = student_config.dataset
  info = kdata.info(dcfg.name)
  test = kdata.load_arrays(
    dcfg.name,
    dcfg.eval_split or info.eval_split,
    data_dir=data_dir or dcfg.data_dir,
    idx_dir=idx_dir or dcfg.idx_dir,
    limit=dcfg.eval_limit or None,
  )
  held = {}  # teacher workdir -> its validation split (all checked before any training)
  if temperature_scaled:
    for spec in teachers:
      wd = spec.partition("@")[0]
      if wd not in held:
        held[wd] = teacher_validation_split(
          wd, data_dir=data_dir or dcfg.data_dir, idx_dir=idx_dir or dcfg.idx_dir
        )
  rows = []
  for i, spec in enumerate(teachers):
    workdir, _, which = spec.partition("@")
    which = which or "final"
    logits = predict_logits(workdir, parse_which(which), test)
    variants = [("raw", 1.0, 0)]
    if temperature_scaled:
      val = held[workdir]
      t = fit_temperature(predict_logits(workdir, parse_which(which), val), val.labels)
      variants.append(("temp_scaled", float(t), len(val)))
    for variant, temp, n_fit in variants:
      rep = calibration_report(logits / temp, test.labels, num_bins=num_bins)
      tag = f"teacher{i}_{variant}"
      reliability_diagram(
        probs_from_logits(logits / temp),
        test.labels,
        os.path.join(out_dir, f"reliability_{tag}.png"),
        num_bins=num_bins,
        title=f"{spec} ({variant}, T={temp:.2f})",
      )
      cfg = student_config.copy_and_resolve_references()
      cfg.teacher.workdir, cfg.teacher.which, cfg.teacher.temperature = workdir, which, temp
      cfg.teacher.members = ()
      s = train_and_evaluate(cfg, os.path.join(out_dir, f"student_{tag}"))
      rows.append(
        {
          "teacher": spec,
          "variant": variant,
          "temperature": temp,
          "temperature_fit_examples": n_fit,
          "teacher_top1": 100.0 * float(rep["accuracy"]),
          "teacher_ece": float(rep["ece"]),
          "teacher_nll": float(rep["nll"]),
          "teacher_brier": float(rep["brier"]),
          "student_last_top1": s["last_top1"],
          "student_best_top1": s["best_top1"],
          "agreement": s["last_agreement"],
        }
      )
  ece = [r["teacher_ece"] for r in rows]
  acc = [r["teacher_top1"] for r in rows]
  stu = [r["student_last_top1"] for r in rows]
  corr = {
    "teacher_ece_vs_student": _correlations(ece, stu),
    "teacher_acc_vs_student": _correlations(acc, stu),
  }
  result = {"rows": rows, "correlations": corr}
  ckpt_lib.write_json(os.path.join(out_dir, "study.json"), result)
  with open(os.path.join(out_dir, "study.csv"), "w", newline="") as fh:
    wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
    wr.writeheader()
    wr.writerows(rows)
  _scatter(rows, corr, os.path.join(out_dir, "study.png"))
  with open(os.path.join(out_dir, "study.md"), "w") as fh:
    fh.write("| teacher | variant | T | teacher top-1 | ECE | NLL | student top-1 (last) |\n")
    fh.write("|---|---|---|---|---|---|---|\n")
    for r in rows:
      fh.write(
        f"| {r['teacher']} | {r['variant']} | {r['temperature']:.2f} | "
        f"{r['teacher_top1']:.2f} | {r['teacher_ece']:.4f} | {r['teacher_nll']:.3f} | "
        f"{r['student_last_top1']:.2f} |\n"
      )
    fits = sorted({r["temperature_fit_examples"] for r in rows if r["variant"] == "temp_scaled"})
    if fits:
      fh.write(
        "\nT of the temp_scaled rows: fitted by NLL on each teacher's held-out validation split "
        f"(dataset.val_examples of its run: {', '.join(map(str, fits))} examples), never on "
        "its training images.\n"
      )
    for k, c in corr.items():
      fh.write(
        f"\n{k}: Spearman {c['spearman']:.3f} (p={c['spearman_p']:.3g}), "
        f"Pearson {c['pearson']:.3f} (p={c['pearson_p']:.3g}), n={c['n']}\n"
      )
  return result


def _scatter(rows, corr, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
  for a, key, lab, ck in (
    (ax[0], "teacher_ece", "teacher ECE", "teacher_ece_vs_student"),
    (ax[1], "teacher_top1", "teacher top-1 (%)", "teacher_acc_vs_student"),
  ):
    for r in rows:
      a.scatter(r[key], r["student_last_top1"], marker="o" if r["variant"] == "raw" else "^")
    c = corr[ck]
    a.set_xlabel(lab)
    a.set_ylabel("student top-1 (%)")
    a.set_title(f"Spearman {c['spearman']:.2f}, Pearson {c['pearson']:.2f}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
