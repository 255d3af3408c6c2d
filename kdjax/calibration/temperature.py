"""Post-hoc temperature scaling (Guo et al. 2017), the teacher-calibration control of methods.md §2.3.6.

A single scalar ``T > 0`` rescales the logits, ``p = softmax(z / T)``; it is fitted by minimising the
held-out negative log-likelihood

    NLL(T) = mean_i [ −z_{i,y_i} / T + logsumexp_k(z_ik / T) ].

With ``β = 1/T`` the objective ``NLL(β) = mean_i [ −β z_{i,y_i} + logsumexp_k(β z_ik) ]`` is convex
(a log-sum-exp of functions linear in β), with derivative ``mean_i (E_p[z_i] − z_{i,y_i})`` and second
derivative ``mean_i Var_p(z_i) ≥ 0``. :func:`fit_temperature` therefore runs a damped, projected
Newton iteration on β in float64 NumPy on the host: deterministic, no random restarts, and it
converges to the global minimum (or to a bound when the minimum lies outside ``[min_t, max_t]``,
e.g. for a perfectly separated training split whose NLL decreases as ``T → 0``).

Temperature scaling leaves the argmax (accuracy) unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp, softmax

__all__ = ["fit_temperature", "apply_temperature", "temperature_nll"]


def apply_temperature(logits, temperature) -> jax.Array:
  """Temperature-scaled logits ``z / T`` (jittable; ``T`` may be a traced scalar).

  Args:
    logits: ``(..., K)`` logits.
    temperature: scalar ``T > 0``.

  Returns:
    ``logits / T`` as a JAX array (softmax of it gives the calibrated probabilities).
  """
  return jnp.asarray(logits) / temperature


def temperature_nll(logits, labels, temperature: float) -> float:
  """Mean NLL of ``softmax(logits / T)`` (float64, host-side), the objective of :func:`fit_temperature`."""
  z, y = _prepare(logits, labels)
  return float(_nll_beta(z, y, 1.0 / float(temperature)))


def _prepare(logits, labels):
  z = np.asarray(logits, dtype=np.float64)
  y = np.asarray(labels)
  if z.ndim != 2:
    raise ValueError(f"expected (N, K) logits, got shape {z.shape}")
  if y.shape != z.shape[:1] or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"labels must be ({z.shape[0]},) integers, got {y.shape} {y.dtype}")
  if z.shape[0] == 0:
    raise ValueError("empty input: need at least one example")
  if not np.all(np.isfinite(z)):
    raise ValueError("logits must be finite")
  return z, y.astype(np.int64)


def _nll_beta(z, y, beta):
  zy = z[np.arange(z.shape[0]), y]
  return float(np.mean(logsumexp(beta * z, axis=-1) - beta * zy))


def _grad_hess_beta(z, y, beta):
  p = softmax(beta * z, axis=-1)
  ez = np.sum(p * z, axis=-1)
  var = np.sum(p * z * z, axis=-1) - ez**2
  zy = z[np.arange(z.shape[0]), y]
  return float(np.mean(ez - zy)), float(np.mean(np.maximum(var, 0.0)))


def fit_temperature(
  logits,
  labels,
  *,
  init: float = 1.0,
  max_iter: int = 100,
  tol: float = 1e-10,
  min_t: float = 1e-2,
  max_t: float = 1e2,
) -> float:
  """Fits the temperature ``T`` minimising the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

  Fit on a held-out split (not the test split you report on). The optimisation is a projected
  Newton method on the convex objective ``NLL(β)``, ``β = 1/T ∈ [1/max_t, 1/min_t]``, with a
  backtracking line search (see the module docstring); it is deterministic.

  Args:
    logits: ``(N, K)`` held-out logits (NumPy or JAX).
    labels: ``(N,)`` integer labels.
    init: starting temperature.
    max_iter: maximum Newton iterations (typically < 15 are used).
    tol: stop when ``|Δβ| ≤ tol · max(1, β)`` or the gradient vanishes.
    min_t: smallest allowed temperature.
    max_t: largest allowed temperature.

  Returns:
    The fitted temperature as a Python float in ``[min_t, max_t]``.
  """
  if not (0 < min_t <= init <= max_t):
    raise ValueError(f"need 0 < min_t <= init <= max_t, got {min_t}, {init}, {max_t}")
  if int(max_iter) < 1:
    raise ValueError(f"max_iter must be >= 1, got {max_iter}")
  z, y = _prepare(logits, labels)
  lo, hi = 1.0 / max_t, 1.0 / min_t
  beta = 1.0 / float(init)
  f = _nll_beta(z, y, beta)
  for _ in range(int(max_iter)):
    g, h = _grad_hess_beta(z, y, beta)
    if g == 0.0:
      break
    if h > 1e-12 * max(1.0, abs(g)):
      step = -g / h
    else:  # flat curvature: gradient step towards the bound
      step = -np.sign(g) * max(beta, 1.0)
    new = float(np.clip(beta + step, lo, hi))
    # Backtracking (Armijo on the convex 1-D objective) keeps the iteration monotone.
    t = 1.0
    while True:
      cand = beta + t * (new - beta)
      fc = _nll_beta(z, y, cand)
      if fc <= f + 1e-4 * t * g * (new - beta) or t < 1e-8:
        break
      t *= 0.5
    if fc > f:  # no decrease possible: at the optimum up to float precision
      break
    converged = abs(cand - beta) <= tol * max(1.0, beta)
    beta, f = cand, fc
    if converged:
      break
  return float(1.0 / beta)
