"""Probe ``calibration``: accuracy, ECE, NLL, Brier per model and the calibration transfer
``|ECE_student − ECE_teacher|`` (methods.md §2), from the clean logits."""

from __future__ import annotations

from kdjax.analysis.probes import base
from kdjax.calibration import calibration_report


@base.register("calibration", order=70)
class Calibration(base.Probe):
  title = "Calibration"

  @classmethod
  def defaults(cls):
    return {"num_bins": 15}  # equal-width bins of the ECE

  def compute(self, ctx):
    bins = int(self.settings["num_bins"])
    rep = {}
    for r in ctx.runs:
      c = calibration_report(ctx.logits[r.name], ctx.labels, num_bins=bins)
      rep[r.name] = {
        "accuracy": 100.0 * c["accuracy"],
        "ece": c["ece"],
        "nll": c["nll"],
        "brier": c["brier"],
      }
    te = rep[ctx.teacher.name]["ece"]
    for s in ctx.students:
      rep[s.name]["ece_transfer"] = abs(rep[s.name]["ece"] - te)
    for d in ctx.distilled:
      ctx.direct(
        self.name,
        "distilled |ECE_S − ECE_T| < independent",
        d.name,
        rep[d.name]["ece_transfer"],
        rep[ctx.independent.name]["ece_transfer"],
        lambda a, b: a < b,
      )
    return {"models": rep, "num_bins": bins}

  def markdown(self, ctx, result):
    L = [
      base.table(
        ["model", "accuracy (%)", "ECE", "NLL", "Brier", "|ECE_S − ECE_T|"],
        [
          [r.name, m["accuracy"], m["ece"], m["nll"], m["brier"], m.get("ece_transfer")]
          for r in ctx.runs
          for m in [result["models"][r.name]]
        ],
        nd=4,
      )
    ]
    return L + ["", f"ECE: {result['num_bins']} equal-width bins, top-label."]
