"""Probe ``fairness``: per-group accuracy, worst group and gap (Ojha et al., methods.md §6.3.7).

Without a grouping attribute the class label is the group (the report says so); an external
TFDS set with a group feature (e.g. FairFace ``race``) can be given instead (``dataset``,
``group_key``, ``label_key``, ``data_dir``), classified through :func:`kdjax.eval.predict_logits`.
"""

from __future__ import annotations

import numpy as np

from kdjax.analysis import cues as cues_lib
from kdjax.analysis.fairness import group_fairness_report
from kdjax.analysis.probes import base


@base.register("fairness", order=80)
class Fairness(base.Probe):
  title = "Fairness"

  @classmethod
  def defaults(cls):
    return {
      "dataset": "",  # 'NAME[:SPLIT]' of a TFDS set with a group feature
      "group_key": "race",
      "label_key": "label",
      "data_dir": "",
    }

  def _load(self, limit, image_shape=None):
    cfg = self.settings
    nm, _, split = str(cfg["dataset"]).partition(":")
    return cues_lib.load_tfds_set(
      nm,
      split or "test",
      data_dir=cfg["data_dir"] or None,
      label_key=cfg["label_key"],
      extra_keys=(cfg["group_key"],),
      limit=limit,
      image_shape=image_shape,
      purpose=f"the fairness probe ({cfg['dataset']!r}, group {cfg['group_key']!r})",
    )

  def check(self, setup):
    if self.settings["dataset"]:
      self._load(1)

  def compute(self, ctx):
    cfg = self.settings
    if cfg["dataset"]:
      spec = cfg["dataset"]
      ext = self._load(ctx.num_examples, ctx.images.shape[1:])
      labels, groups = ext["labels"], ext[cfg["group_key"]]
      with ctx.bar(len(ctx.runs), self.name) as bar:
        preds = {}
        for r in ctx.runs:
          preds[r.name] = ctx.predict(r, ext["images"]).argmax(-1)
          bar.update()
      attr = f"{cfg['group_key']} ({spec})"
      note = f"Groups: the {cfg['group_key']!r} feature of {spec}."
    else:
      labels, groups = ctx.labels, ctx.labels
      preds = {r.name: ctx.logits[r.name].argmax(-1) for r in ctx.runs}
      attr = "class label"
      note = (
        f"{ctx.info.name} has no grouping attribute: the class label is used as the group, "
        "so per-group accuracy is per-class accuracy (the paper uses FairFace race groups; "
        "set the probe's dataset to use one)."
      )
    rep = {}
    for r in ctx.runs:
      g = group_fairness_report(preds[r.name], labels, groups)
      rep[r.name] = {
        "per_group": {str(k): 100.0 * v for k, v in g["per_group"].items()},
        "worst_group": str(g["worst_group"]),
        "worst_group_accuracy": 100.0 * g["worst_group_accuracy"],
        "gap": 100.0 * g["gap"],
        "overall": 100.0 * g["overall_accuracy"],
      }
    tg = rep[ctx.teacher.name]["per_group"]
    dist = {
      s.name: float(np.mean([abs(rep[s.name]["per_group"][k] - tg[k]) for k in tg]))
      for s in ctx.students
    }
    for d in ctx.distilled:
      ctx.direct(
        self.name,
        "distilled per-group accuracy profile closer to the teacher's "
        "(mean |Δacc|) than independent",
        d.name,
        dist[d.name],
        dist[ctx.independent.name],
        lambda a, b: a < b,
      )
      tgap = rep[ctx.teacher.name]["gap"]
      ctx.direct(
        self.name,
        "distilled accuracy gap closer to the teacher's than independent",
        d.name,
        abs(rep[d.name]["gap"] - tgap),
        abs(rep[ctx.independent.name]["gap"] - tgap),
        lambda a, b: a < b,
      )
    return {"group_attribute": attr, "note": note, "models": rep, "distance_to_teacher": dist}

  def markdown(self, ctx, result):
    groups = list(result["models"][ctx.teacher.name]["per_group"])
    L = [
      base.table(
        ["model", "overall", "worst group", "worst acc", "gap", "mean |Δacc| vs T"],
        [
          [
            r.name,
            m["overall"],
            m["worst_group"],
            m["worst_group_accuracy"],
            m["gap"],
            result["distance_to_teacher"].get(r.name),
          ]
          for r in ctx.runs
          for m in [result["models"][r.name]]
        ],
        nd=1,
      )
    ]
    L += [
      "",
      "Per-group accuracy (%):",
      "",
      base.table(
        ["group"] + [r.name for r in ctx.runs],
        [[g] + [result["models"][r.name]["per_group"].get(g) for r in ctx.runs] for g in groups],
        nd=1,
      ),
      "",
      f"Grouping attribute: {result['group_attribute']}. {result['note']}",
    ]
    return L
