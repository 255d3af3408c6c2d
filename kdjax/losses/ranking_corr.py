r"""Differentiable rank-correlation losses (soft Spearman, soft Kendall) between student and
teacher class scores — **CANDIDATES** for the calibration-insensitive ranking loss of Fan et al.,
"Revisit the Essence of Distilling Knowledge through Calibration", ICML 2024 (candidate 5 of the
ranking slot, methods.md §2.2; cf. rank-correlation KD such as RKKD, ICML 2025). The paper's own
formula is unknown: these are **not verified as the paper's loss**, like ``listmle`` and
``pairwise_ranking`` (:mod:`kdjax.losses.logits`).

Soft ranks (pairwise-sigmoid relaxation; ascending, rank 1 = smallest)::

  r_i(x; τ) = 1/2 + Σ_j σ((x_i − x_j) / τ)          (the j = i term gives the 1/2 → rank ≥ 1)

As ``τ → 0`` it tends to the exact ranks with ties averaged (``scipy.stats.rankdata``'s
``'average'``). The teacher side uses the exact averaged ranks of ``z_t`` (no gradient, invariant
to any increasing transform of the teacher scores: temperature, calibration), the student side
the soft ranks of ``z_s``.

* Spearman: ``L_b = 1 − ρ(r(z_s; τ), rank(z_t))``, ρ the Pearson correlation over the K classes.
* Kendall: ``L_b = 1 − τ_K``, ``τ_K = Σ_{i<j} tanh((z_s,i − z_s,j)/τ)·sign(z_t,i − z_t,j) /
  (K(K−1)/2)`` (the tanh relaxation of Kendall's τ-a).

Both are in [0, 2] per example (0: same order). Cost O(B·K²) memory and time (K = 100: 10⁴ pairs
per example). Reduction: per example (the batch mean is the loss). Reference: no public code;
tests compare with ``scipy.stats.spearmanr`` / ``kendalltau`` at small τ (tests/test_ranking_corr.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import checks


def _f32(x):
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def soft_rank(x: jax.Array, temperature: float) -> jax.Array:
  """Ascending soft ranks along the last axis, ``1/2 + Σ_j σ((x_i − x_j)/τ)`` (module docstring)."""
  x = _f32(x)
  d = (x[..., :, None] - x[..., None, :]) / temperature
  return 0.5 + jnp.sum(jax.nn.sigmoid(d), axis=-1)


def hard_rank(x: jax.Array) -> jax.Array:
  """Exact ascending ranks along the last axis, ties averaged (scipy ``rankdata`` 'average');
  no gradient."""
  x = jax.lax.stop_gradient(_f32(x))
  less = jnp.sum(x[..., None, :] < x[..., :, None], axis=-1)
  equal = jnp.sum(x[..., None, :] == x[..., :, None], axis=-1)  # includes i itself
  return (less + 0.5 * (equal + 1)).astype(x.dtype)


def _pearson(a: jax.Array, b: jax.Array, eps: float = 1e-12) -> jax.Array:
  a = a - a.mean(-1, keepdims=True)
  b = b - b.mean(-1, keepdims=True)
  return jnp.sum(a * b, -1) / jnp.sqrt(jnp.sum(a * a, -1) * jnp.sum(b * b, -1) + eps)


def spearman_loss(
  student_logits: jax.Array, teacher_logits: jax.Array, *, temperature: float = 0.1
) -> jax.Array:
  """``1 − ρ_Spearman`` per example ``(B,)`` between the student's soft ranks (``τ`` =
  ``temperature``, on the logit scale) and the teacher's exact ranks. CANDIDATE (module docstring)."""
  checks.positive("spearman_loss: temperature", temperature)
  return 1.0 - _pearson(soft_rank(student_logits, temperature), hard_rank(teacher_logits))


def kendall_loss(
  student_logits: jax.Array, teacher_logits: jax.Array, *, temperature: float = 0.1
) -> jax.Array:
  """``1 − τ_Kendall`` per example ``(B,)``, the student's pairwise signs relaxed by
  ``tanh(Δz_s/τ)``, the teacher's exact. CANDIDATE (module docstring)."""
  checks.positive("kendall_loss: temperature", temperature)
  zs = _f32(student_logits)
  zt = jax.lax.stop_gradient(_f32(teacher_logits))
  k = zs.shape[-1]
  s = jnp.tanh((zs[..., :, None] - zs[..., None, :]) / temperature)
  t = jnp.sign(zt[..., :, None] - zt[..., None, :])
  # each unordered pair appears twice (i<j and j>i, same product): divide by K(K-1)
  return 1.0 - jnp.sum(s * t, axis=(-2, -1)) / (k * (k - 1))
