"""Per-group accuracy (Ojha et al., NeurIPS 2023, methods.md §6.3.7: FairFace per-race accuracy).

An unfair teacher can make a fair student unfair; the probes are the accuracy of every group,
the worst-group accuracy and the gap between the best and the worst group. Host-side (NumPy),
returning Python floats keyed by the group ids found in ``groups``.
"""

from __future__ import annotations

from typing import Dict, Hashable

import numpy as np

__all__ = ["per_group_accuracy", "worst_group_accuracy", "accuracy_gap", "group_fairness_report"]


def _preds(preds) -> np.ndarray:
  p = np.asarray(preds)
  return p.argmax(axis=-1) if p.ndim == 2 else p


def _prepare(preds, labels, groups):
  p, y, g = _preds(preds), np.asarray(labels), np.asarray(groups)
  if not (p.shape == y.shape == g.shape) or p.ndim != 1:
    raise ValueError(
      f"preds (or (N, K) logits), labels and groups must align as (N,), got "
      f"{p.shape}, {y.shape}, {g.shape}"
    )
  if p.size == 0:
    raise ValueError("empty input")
  return p, y, g


def _key(v) -> Hashable:
  return v.item() if hasattr(v, "item") else v


def per_group_accuracy(preds, labels, groups) -> Dict[Hashable, float]:
  """Top-1 accuracy within each group.

  Args:
    preds: ``(N,)`` predicted classes or ``(N, K)`` logits/probabilities (argmax is taken).
    labels: ``(N,)`` ground-truth classes.
    groups: ``(N,)`` group ids (ints or strings), e.g. FairFace race.

  Returns:
    ``{group: accuracy}`` for the groups present, sorted by group id.
  """
  p, y, g = _prepare(preds, labels, groups)
  return {_key(k): float(np.mean(p[g == k] == y[g == k])) for k in np.unique(g)}


def worst_group_accuracy(preds, labels, groups) -> float:
  """``min_g acc_g`` over the groups present."""
  return min(per_group_accuracy(preds, labels, groups).values())


def accuracy_gap(preds, labels, groups) -> float:
  """``max_g acc_g − min_g acc_g`` (0 for a perfectly even model)."""
  acc = per_group_accuracy(preds, labels, groups).values()
  return max(acc) - min(acc)


def group_fairness_report(preds, labels, groups) -> dict:
  """Everything at once.

  Returns:
    Dict with ``per_group`` ``{g: acc}``, ``counts`` ``{g: n}``, ``overall_accuracy``,
    ``worst_group``, ``worst_group_accuracy``, ``best_group``, ``best_group_accuracy`` and
    ``gap`` (best − worst).
  """
  p, y, g = _prepare(preds, labels, groups)
  acc = per_group_accuracy(p, y, g)
  worst = min(acc, key=acc.get)
  best = max(acc, key=acc.get)
  return {
    "per_group": acc,
    "counts": {_key(k): int(np.sum(g == k)) for k in np.unique(g)},
    "overall_accuracy": float(np.mean(p == y)),
    "worst_group": worst,
    "worst_group_accuracy": acc[worst],
    "best_group": best,
    "best_group_accuracy": acc[best],
    "gap": acc[best] - acc[worst],
  }
