"""Calibration metrics: ECE (equal-width / equal-mass), MCE, class-wise ECE, NLL, Brier.

Reference: Fan et al. (ICML 2024), methods.md §2.2, which measures teacher calibration by the
top-label **expected calibration error** of Guo et al. (2017):

    conf_i = max_k p_ik,   pred_i = argmax_k p_ik,
    ECE    = Σ_m (|B_m| / N) · |acc(B_m) − conf(B_m)|            (15 bins by default)

Conventions (design decisions, documented once here):

* **Equal-width bins** are ``(e_m, e_{m+1}]`` with ``e = linspace(0, 1, M + 1)`` exactly as in
  Guo et al.'s reference code (``conf > lower and conf <= upper``); a confidence of exactly 0 goes
  to the first bin.
* **Equal-mass bins** ("adaptive" binning, Nguyen & O'Connor 2015; Nixon et al. 2019) sort the
  confidences and put the example of rank ``r`` (0-based, stable sort) in bin
  ``floor(r · M / N)``; every bin holds ``floor(N/M)`` or ``ceil(N/M)`` examples (exactly ``N/M``
  when ``M`` divides ``N``). Ties may straddle a bin boundary. Reported edges are the smallest
  confidence of each bin plus the largest confidence overall.
* ``norm``: ``'l1'`` is the ECE above; ``'l2'`` is ``sqrt(Σ_m |B_m|/N · gap_m²)``; ``'max'`` is the
  maximum calibration error ``MCE = max_{m: |B_m| > 0} gap_m`` (Naeini et al. 2015).
* **Class-wise ECE** (Kull et al. 2019; "static calibration error" of Nixon et al. 2019) bins
  every class's probability ``p_ik`` separately against the indicator ``y_i == k`` and averages the
  per-class ECEs over the ``K`` classes.
* **Brier score** is the original multi-class form (Brier 1950): ``mean_i Σ_k (p_ik − y_ik)²``
  (range ``[0, 2]``; not divided by ``K``).
* **NLL** is ``mean_i −log p_{i, y_i}``, computed with ``log_softmax`` when given logits.

Every public function accepts NumPy or JAX arrays and returns Python floats (or NumPy arrays for
:func:`reliability_data`). The array work is done by jitted JAX kernels (``_binned_stats`` and
friends, static ``num_bins`` / ``binning``), so the same code runs on device for large test sets;
call those kernels directly inside your own jitted code.
"""

from __future__ import annotations

import functools
from typing import Dict, Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
  "probs_from_logits",
  "ece",
  "mce",
  "classwise_ece",
  "nll",
  "brier",
  "accuracy",
  "reliability_data",
  "calibration_report",
]

Binning = Literal["equal_width", "equal_mass"]
_BINNINGS = ("equal_width", "equal_mass")
_NORMS = ("l1", "l2", "max")


# --------------------------------------------------------------------------------------------
# validation / conversion helpers
# --------------------------------------------------------------------------------------------


def probs_from_logits(logits) -> jax.Array:
  """``softmax(logits)`` over the last axis, in float32 (or float64 under ``jax_enable_x64``).

  Args:
    logits: ``(N, K)`` logits (NumPy or JAX).

  Returns:
    ``(N, K)`` probabilities.
  """
  return jax.nn.softmax(_as_float(logits), axis=-1)


def _as_float(x) -> jax.Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  return x


def _check_probs_labels(probs, labels):
  probs = _as_float(probs)
  labels = jnp.asarray(labels)
  if probs.ndim != 2:
    raise ValueError(f"expected (N, K) probabilities, got shape {probs.shape}")
  if labels.shape != probs.shape[:1]:
    raise ValueError(f"labels must have shape ({probs.shape[0]},), got {labels.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
  if probs.shape[0] == 0:
    raise ValueError("empty input: need at least one example")
  return probs, labels.astype(jnp.int32)


def _check_bins(num_bins, binning, norm="l1"):
  if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
    raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")
  if binning not in _BINNINGS:
    raise ValueError(f"binning must be one of {_BINNINGS}, got {binning!r}")
  if norm not in _NORMS:
    raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
  return int(num_bins)


# --------------------------------------------------------------------------------------------
# jitted kernels
# --------------------------------------------------------------------------------------------


def _bin_index(conf: jax.Array, num_bins: int, binning: str) -> jax.Array:
  """Bin index in ``0..num_bins-1`` for every confidence (see the module conventions)."""
  n = conf.shape[0]
  if binning == "equal_width":
    edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=conf.dtype)
    # edges[m] < conf <= edges[m+1]  <=>  searchsorted(edges, conf, 'left') == m + 1
    idx = jnp.searchsorted(edges, conf, side="left") - 1
    return jnp.clip(idx, 0, num_bins - 1)
  order = jnp.argsort(conf, stable=True)
  ranks = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  return (ranks * num_bins) // n


def _bin_edges(conf: jax.Array, num_bins: int, binning: str) -> jax.Array:
  if binning == "equal_width":
    return jnp.linspace(0.0, 1.0, num_bins + 1, dtype=conf.dtype)
  n = conf.shape[0]
  s = jnp.sort(conf)
  starts = (jnp.arange(num_bins) * n + num_bins - 1) // num_bins  # first rank r with r*M//n == m
  starts = jnp.clip(starts, 0, n - 1)
  return jnp.concatenate([s[starts], s[-1:]])


@functools.partial(jax.jit, static_argnames=("num_bins", "binning"))
def _binned_stats(conf: jax.Array, correct: jax.Array, *, num_bins: int, binning: str):
  """Per-bin (count, mean confidence, mean accuracy) of a 1-D confidence vector.

  Args:
    conf: ``(N,)`` confidences in ``[0, 1]``.
    correct: ``(N,)`` 0/1 outcomes (float).
    num_bins: number of bins ``M`` (static).
    binning: ``'equal_width'`` or ``'equal_mass'`` (static).

  Returns:
    ``(count, mean_conf, mean_acc, edges)``; empty bins have mean 0.
  """
  idx = _bin_index(conf, num_bins, binning)
  count = jax.ops.segment_sum(jnp.ones_like(conf), idx, num_segments=num_bins)
  sum_conf = jax.ops.segment_sum(conf, idx, num_segments=num_bins)
  sum_acc = jax.ops.segment_sum(correct.astype(conf.dtype), idx, num_segments=num_bins)
  safe = jnp.maximum(count, 1.0)
  return count, sum_conf / safe, sum_acc / safe, _bin_edges(conf, num_bins, binning)


def _reduce_gaps(count, mean_conf, mean_acc, norm: str):
  gap = jnp.abs(mean_acc - mean_conf)
  w = count / jnp.sum(count)
  if norm == "l1":
    return jnp.sum(w * gap)
  if norm == "l2":
    return jnp.sqrt(jnp.sum(w * gap**2))
  return jnp.max(jnp.where(count > 0, gap, 0.0))


@functools.partial(jax.jit, static_argnames=("num_bins", "binning", "norm"))
def top_label_calibration_error(
  probs, labels, *, num_bins: int = 15, binning: str = "equal_width", norm: str = "l1"
) -> jax.Array:
  """Jittable top-label calibration error (the kernel behind :func:`ece` / :func:`mce`)."""
  conf = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
  count, mc, ma, _ = _binned_stats(conf, correct, num_bins=num_bins, binning=binning)
  return _reduce_gaps(count, mc, ma, norm)


@functools.partial(jax.jit, static_argnames=("num_bins", "binning", "norm"))
def classwise_calibration_error(
  probs, labels, *, num_bins: int = 15, binning: str = "equal_width", norm: str = "l1"
) -> jax.Array:
  """Jittable class-wise calibration error (the kernel behind :func:`classwise_ece`)."""
  k = probs.shape[-1]
  onehot = jax.nn.one_hot(labels, k, dtype=probs.dtype)

  def per_class(p_k, y_k):
    count, mc, ma, _ = _binned_stats(p_k, y_k, num_bins=num_bins, binning=binning)
    return _reduce_gaps(count, mc, ma, norm)

  return jnp.mean(jax.vmap(per_class, in_axes=(1, 1))(probs, onehot))


# --------------------------------------------------------------------------------------------
# public metrics (host-facing: return Python floats)
# --------------------------------------------------------------------------------------------


def ece(
  probs,
  labels,
  *,
  num_bins: int = 15,
  binning: Binning = "equal_width",
  norm: Literal["l1", "l2", "max"] = "l1",
) -> float:
  """Top-label expected calibration error (Guo et al. 2017; Fan et al. 2024, methods.md §2.2).

  ``ECE = Σ_m (|B_m| / N) · |acc(B_m) − conf(B_m)|`` over bins of the top-label confidence
  ``conf_i = max_k p_ik``, with ``acc`` the fraction of ``argmax_k p_ik == y_i``.

  Args:
    probs: ``(N, K)`` predicted probabilities (use :func:`probs_from_logits` for logits).
    labels: ``(N,)`` integer labels.
    num_bins: number of bins ``M`` (methods.md design decision: 15).
    binning: ``'equal_width'`` (Guo et al.) or ``'equal_mass'`` (adaptive; equal counts).
    norm: ``'l1'`` (ECE), ``'l2'`` (RMS calibration error) or ``'max'`` (MCE).

  Returns:
    The calibration error as a Python float in ``[0, 1]``.
  """
  num_bins = _check_bins(num_bins, binning, norm)
  probs, labels = _check_probs_labels(probs, labels)
  return float(
    top_label_calibration_error(probs, labels, num_bins=num_bins, binning=binning, norm=norm)
  )


def mce(probs, labels, *, num_bins: int = 15, binning: Binning = "equal_width") -> float:
  """Maximum calibration error ``max_{m: |B_m|>0} |acc(B_m) − conf(B_m)|`` (Naeini et al. 2015).

  Same binning as :func:`ece`; equivalent to ``ece(..., norm='max')``.
  """
  return ece(probs, labels, num_bins=num_bins, binning=binning, norm="max")


def classwise_ece(
  probs,
  labels,
  *,
  num_bins: int = 15,
  binning: Binning = "equal_width",
  norm: Literal["l1", "l2", "max"] = "l1",
) -> float:
  """Class-wise ECE (Kull et al. 2019): ``(1/K) Σ_k Σ_m (|B_mk|/N) |acc_k(B_mk) − conf_k(B_mk)|``.

  For every class ``k`` the probabilities ``p_ik`` are binned and compared with the frequency of
  ``y_i == k`` in the bin; the per-class errors are averaged over all ``K`` classes.

  Args:
    probs: ``(N, K)`` probabilities.
    labels: ``(N,)`` integer labels.
    num_bins: bins per class.
    binning: ``'equal_width'`` or ``'equal_mass'`` (applied per class).
    norm: ``'l1'``, ``'l2'`` or ``'max'`` (per class, then averaged).

  Returns:
    Python float.
  """
  num_bins = _check_bins(num_bins, binning, norm)
  probs, labels = _check_probs_labels(probs, labels)
  return float(
    classwise_calibration_error(probs, labels, num_bins=num_bins, binning=binning, norm=norm)
  )


@jax.jit
def _nll_from_logits(logits, labels):
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


@jax.jit
def _nll_from_probs(probs, labels):
  p = jnp.take_along_axis(probs, labels[:, None], axis=-1)
  return -jnp.mean(jnp.log(p))


def nll(logits_or_probs, labels, *, from_logits: bool = True) -> float:
  """Mean negative log-likelihood ``mean_i −log p_{i, y_i}``.

  Args:
    logits_or_probs: ``(N, K)`` logits (default, via ``log_softmax``) or probabilities.
    labels: ``(N,)`` integer labels.
    from_logits: whether the first argument holds logits (True) or probabilities (False); a
      zero probability on the true class gives ``inf``.

  Returns:
    Python float (nats).
  """
  x, labels = _check_probs_labels(logits_or_probs, labels)
  return float(_nll_from_logits(x, labels) if from_logits else _nll_from_probs(x, labels))


@jax.jit
def _brier(probs, labels):
  onehot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
  return jnp.mean(jnp.sum((probs - onehot) ** 2, axis=-1))


def brier(probs, labels) -> float:
  """Multi-class Brier score (Brier 1950): ``mean_i Σ_k (p_ik − 1[y_i = k])²`` (range [0, 2]).

  Args:
    probs: ``(N, K)`` probabilities.
    labels: ``(N,)`` integer labels.

  Returns:
    Python float.
  """
  probs, labels = _check_probs_labels(probs, labels)
  return float(_brier(probs, labels))


def accuracy(probs_or_logits, labels) -> float:
  """Top-1 accuracy ``mean_i 1[argmax_k x_ik == y_i]`` (logits or probabilities)."""
  x, labels = _check_probs_labels(probs_or_logits, labels)
  return float(jnp.mean(jnp.argmax(x, axis=-1) == labels))


def reliability_data(
  probs, labels, *, num_bins: int = 15, binning: Binning = "equal_width"
) -> Dict[str, np.ndarray]:
  """Per-bin statistics of the top-label reliability diagram (Guo et al. 2017, Fig. 1).

  Args:
    probs: ``(N, K)`` probabilities.
    labels: ``(N,)`` integer labels.
    num_bins: number of bins ``M``.
    binning: ``'equal_width'`` or ``'equal_mass'``.

  Returns:
    A dict of NumPy arrays: ``bin_edges`` ``(M+1,)``, ``bin_confidence`` ``(M,)`` (mean top-label
    confidence), ``bin_accuracy`` ``(M,)`` (fraction correct), ``bin_count`` ``(M,)`` (int64).
    Empty bins have confidence and accuracy NaN.
  """
  num_bins = _check_bins(num_bins, binning)
  probs, labels = _check_probs_labels(probs, labels)
  conf = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
  count, mc, ma, edges = _binned_stats(conf, correct, num_bins=num_bins, binning=binning)
  count = np.asarray(count).round().astype(np.int64)
  empty = count == 0
  return {
    "bin_edges": np.asarray(edges, dtype=np.float64),
    "bin_confidence": np.where(empty, np.nan, np.asarray(mc, dtype=np.float64)),
    "bin_accuracy": np.where(empty, np.nan, np.asarray(ma, dtype=np.float64)),
    "bin_count": count,
  }


def calibration_report(logits, labels, *, num_bins: int = 15) -> Dict[str, float]:
  """All calibration numbers of methods.md §2.3 step 2 for one model, from its logits.

  Args:
    logits: ``(N, K)`` logits (apply :func:`kdjax.calibration.apply_temperature` first for a
      temperature-scaled report).
    labels: ``(N,)`` integer labels.
    num_bins: bins for every binned metric.

  Returns:
    Dict of Python floats: ``accuracy``, ``ece`` (equal-width, L1), ``ece_equal_mass``, ``mce``
    (equal-width), ``classwise_ece`` (equal-width), ``nll``, ``brier``, ``num_examples``.
  """
  logits, labels = _check_probs_labels(logits, labels)
  probs = probs_from_logits(logits)
  return {
    "accuracy": accuracy(logits, labels),
    "ece": ece(probs, labels, num_bins=num_bins, binning="equal_width"),
    "ece_equal_mass": ece(probs, labels, num_bins=num_bins, binning="equal_mass"),
    "mce": mce(probs, labels, num_bins=num_bins),
    "classwise_ece": classwise_ece(probs, labels, num_bins=num_bins),
    "nll": nll(logits, labels, from_logits=True),
    "brier": brier(probs, labels),
    "num_examples": float(labels.shape[0]),
  }
