"""Output-level fidelity between two models (Ojha et al., NeurIPS 2023; methods.md §6.3, §6.5).

Top-1 agreement (the "consensus score" of §6.3.4 when computed on OOD sets, and the "agreement
score" of §6.3.3 when ``b`` is the same model on transformed inputs), per-example KL and
Jensen–Shannon divergences ("KL fidelity"), and agreement per ground-truth class. All functions are
pure, jittable and work on ``(B, K)`` logits (NumPy or JAX); they return JAX arrays.

Conventions: log-probabilities come from ``log_softmax``; ``0 · log 0 = 0``; divergences are in
nats.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import checks

__all__ = [
  "top1_agreement",
  "kl_divergence",
  "js_divergence",
  "per_class_agreement",
]


def _logits(x) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"expected (B, K) logits, got shape {x.shape}")
  return x.astype(jnp.result_type(x.dtype, jnp.float32))


def top1_agreement(logits_a, logits_b) -> jax.Array:
  """Fraction of examples on which the two models predict the same class.

  ``mean_i 1[argmax_k a_ik == argmax_k b_ik]`` (the consensus score of Ojha et al. 2023, §6.3.4,
  counts agreement "right or wrong").

  Args:
    logits_a: ``(B, K)`` logits (or probabilities) of model A.
    logits_b: ``(B, K)`` logits (or probabilities) of model B.

  Returns:
    Scalar in ``[0, 1]``.
  """
  a, b = _logits(logits_a), _logits(logits_b)
  return jnp.mean((jnp.argmax(a, -1) == jnp.argmax(b, -1)).astype(jnp.float32))


def kl_divergence(p_logits, q_logits, *, temperature: float = 1.0) -> jax.Array:
  """Per-example ``KL(p ‖ q) = Σ_k p_k (log p_k − log q_k)``, ``p = softmax(p_logits / τ)``.

  Args:
    p_logits: ``(B, K)`` logits of the reference distribution (e.g. the teacher).
    q_logits: ``(B, K)`` logits of the approximating distribution (e.g. the student).
    temperature: ``τ > 0`` applied to both (no ``τ²`` factor: this is a metric, not a loss).

  Returns:
    ``(B,)`` divergences (nats, ``>= 0`` up to rounding).
  """
  checks.positive("temperature", temperature)
  lp = jax.nn.log_softmax(_logits(p_logits) / temperature, axis=-1)
  lq = jax.nn.log_softmax(_logits(q_logits) / temperature, axis=-1)
  p = jnp.exp(lp)
  return jnp.sum(jnp.where(p > 0, p * (lp - lq), 0.0), axis=-1)


def js_divergence(p_logits, q_logits, *, temperature: float = 1.0) -> jax.Array:
  """Per-example Jensen–Shannon divergence ``½ KL(p ‖ m) + ½ KL(q ‖ m)``, ``m = (p + q) / 2``.

  Symmetric and bounded by ``log 2``.

  Args:
    p_logits: ``(B, K)`` logits.
    q_logits: ``(B, K)`` logits.
    temperature: ``τ > 0`` applied to both.

  Returns:
    ``(B,)`` divergences (nats, in ``[0, log 2]``).
  """
  checks.positive("temperature", temperature)
  lp = jax.nn.log_softmax(_logits(p_logits) / temperature, axis=-1)
  lq = jax.nn.log_softmax(_logits(q_logits) / temperature, axis=-1)
  lm = jnp.logaddexp(lp, lq) - jnp.log(2.0).astype(lp.dtype)
  p, q = jnp.exp(lp), jnp.exp(lq)
  kl_pm = jnp.sum(jnp.where(p > 0, p * (lp - lm), 0.0), axis=-1)
  kl_qm = jnp.sum(jnp.where(q > 0, q * (lq - lm), 0.0), axis=-1)
  return jnp.maximum(0.5 * (kl_pm + kl_qm), 0.0)


def per_class_agreement(logits_a, logits_b, labels, num_classes: int) -> jax.Array:
  """Top-1 agreement of A and B restricted to the examples of each ground-truth class.

  Args:
    logits_a: ``(B, K)`` logits of model A.
    logits_b: ``(B, K)`` logits of model B.
    labels: ``(B,)`` integer ground-truth labels (used only to group the examples).
    num_classes: number of classes ``C`` (static).

  Returns:
    ``(C,)`` agreement per class; NaN for classes with no example.
  """
  a, b = _logits(logits_a), _logits(logits_b)
  labels = jnp.asarray(labels).astype(jnp.int32)
  agree = (jnp.argmax(a, -1) == jnp.argmax(b, -1)).astype(jnp.float32)
  num = jax.ops.segment_sum(agree, labels, num_segments=num_classes)
  den = jax.ops.segment_sum(jnp.ones_like(agree), labels, num_segments=num_classes)
  return jnp.where(den > 0, num / jnp.maximum(den, 1.0), jnp.nan)
