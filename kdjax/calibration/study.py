"""The calibration study of Fan et al. (ICML 2024): teacher calibration vs. student accuracy.

For each teacher (a run workdir, optionally ``WORKDIR@WHICH``): measure its test accuracy, ECE,
NLL and Brier (and a reliability diagram); optionally fit a post-hoc temperature on a held-out
slice of the training split and distil from the temperature-scaled teacher too; distil one fixed
student config from it; finally correlate teacher ECE / accuracy with student accuracy (Spearman
and Pearson, scipy on the host) and write ``study.csv``, ``study.json``, ``study.md`` and a
scatter plot.
"""

from __future__ import annotations

import csv
import functools
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
  holdout: int = 5000,
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
      on the last ``holdout`` training examples (NLL).
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
  held = None
  if temperature_scaled:
    train = kdata.load_arrays(
      dcfg.name,
      dcfg.train_split or info.train_split,
      data_dir=data_dir or dcfg.data_dir,
      idx_dir=idx_dir or dcfg.idx_dir,
    )
    held = train.subset(np.arange(len(train.labels) - holdout, len(train.labels)))
  rows = []
  for i, spec in enumerate(teachers):
    workdir, _, which = spec.partition("@")
    which = which or "final"
    logits = predict_logits(workdir, parse_which(which), test)
    variants = [("raw", 1.0)]
    if temperature_scaled:
      t = fit_temperature(predict_logits(workdir, parse_which(which), held), held.labels)
      variants.append(("temp_scaled", float(t)))
    for variant, temp in variants:
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
