"""Reliability diagram PNG (Guo et al. 2017, Fig. 1), for the teacher zoo of methods.md §2.3.

Uses matplotlib's object API with the Agg canvas directly (no ``pyplot``, no global backend
switch), so it is safe in headless jobs and does not disturb interactive sessions.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from kdjax.calibration.metrics import Binning, ece, reliability_data

__all__ = ["reliability_diagram"]


def reliability_diagram(
  probs,
  labels,
  path,
  *,
  num_bins: int = 15,
  binning: Binning = "equal_width",
  title: Optional[str] = "Reliability diagram",
  dpi: int = 120,
) -> str:
  """Writes a reliability diagram with a confidence histogram to ``path`` (PNG).

  Top panel: per-bin accuracy bars against the diagonal (perfect calibration), with the gap to
  the mean bin confidence shaded; the title carries the top-label ECE (same bins). Bottom panel:
  histogram of the top-label confidences (example counts per bin) with the mean confidence and
  the accuracy marked.

  Args:
    probs: ``(N, K)`` probabilities.
    labels: ``(N,)`` integer labels.
    path: output file (parent directories are created).
    num_bins: number of bins.
    binning: ``'equal_width'`` or ``'equal_mass'`` (bars then have unequal widths).
    title: title prefix; ``"ECE = ..."`` is appended.
    dpi: resolution.

  Returns:
    ``str(path)``.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  data = reliability_data(probs, labels, num_bins=num_bins, binning=binning)
  e = ece(probs, labels, num_bins=num_bins, binning=binning)
  p = np.asarray(probs, dtype=np.float64)
  conf = p.max(axis=-1)
  acc = float(np.mean(p.argmax(axis=-1) == np.asarray(labels)))
  edges = data["bin_edges"]
  left, width = edges[:-1], np.diff(edges)
  filled = data["bin_count"] > 0

  fig = Figure(figsize=(5, 6.5))
  FigureCanvasAgg(fig)
  ax, axh = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
  ax.bar(
    left[filled],
    data["bin_accuracy"][filled],
    width=width[filled],
    align="edge",
    edgecolor="black",
    color="tab:blue",
    label="accuracy",
  )
  bottom = np.minimum(data["bin_accuracy"], data["bin_confidence"])[filled]
  gap = np.abs(data["bin_accuracy"] - data["bin_confidence"])[filled]
  ax.bar(
    left[filled],
    gap,
    bottom=bottom,
    width=width[filled],
    align="edge",
    edgecolor="tab:red",
    color="tab:red",
    alpha=0.3,
    hatch="//",
    label="gap",
  )
  ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.set_ylabel("accuracy")
  ax.legend(loc="upper left")
  ax.set_title(f"{title + ': ' if title else ''}ECE = {100 * e:.2f}% ({num_bins} bins)")

  axh.hist(
    conf,
    bins=edges if binning == "equal_width" else np.linspace(0, 1, num_bins + 1),
    color="tab:gray",
    edgecolor="black",
  )
  axh.axvline(conf.mean(), color="tab:red", linestyle="--", label=f"avg conf {conf.mean():.3f}")
  axh.axvline(acc, color="tab:blue", linestyle=":", label=f"accuracy {acc:.3f}")
  axh.set_xlabel("confidence")
  axh.set_ylabel("count")
  axh.legend(loc="upper left", fontsize="small")
  fig.tight_layout()

  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  fig.savefig(path, format="png", dpi=dpi)
  return path
