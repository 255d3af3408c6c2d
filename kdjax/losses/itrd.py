"""ITRD: information-theoretic representation distillation (batch-level losses).

Miles, Lopez-Rodriguez, Mikolajczyk, "Information Theoretic Representation Distillation",
BMVC 2022; the form of zkxufo/TTM ``distiller_zoo/itrd.py`` (``ITLoss``), methods.md §7.2 ITRD.
Inputs are the ``pooled`` features (``(B, D)``); the student's are mapped to the teacher's width by
the trainable linear ``Embed`` (the term's connector, :class:`kdjax.losses.connectors.LinearEmbed`).

Both parts use batch statistics, so the per-example output is the batch value broadcast to
``(B,)`` (its mean is the reference loss, as for SP/RKD in kdjax): the gradient is the reference's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import checks


def _check(f_s, f_t, name):
  if f_s.ndim != 2 or f_t.ndim != 2 or f_s.shape != f_t.shape:
    raise ValueError(
      f"{name}: expected two (B, D) features of one shape (embed the student "
      f"first), got {f_s.shape} and {f_t.shape}."
    )
  if f_s.shape[0] < 2:
    raise ValueError(f"{name}: needs a batch of at least 2 (batch statistics), got {f_s.shape[0]}.")


def itrd_correlation(f_s_embedded: jax.Array, f_t: jax.Array, *, alpha: float = 1.5) -> jax.Array:
  """Correlation part: ``log2(Σ_d (|c_d − 1|²)^α)`` with the cross-correlation
  ``c = Σ_b ŝ_b ⊙ t̂_b / B`` of the batch-standardised features (``(f − mean_0) / std_0``, the
  unbiased std, as torch's default). Returns ``(B,)`` (the batch value broadcast)."""
  _check(f_s_embedded, f_t, "itrd_correlation")
  checks.positive("itrd_correlation: alpha", alpha)
  n = f_s_embedded.shape[0]
  z = lambda f: (f - f.mean(0)) / jnp.std(f, axis=0, ddof=1)
  c = jnp.einsum("bx,bx->x", z(f_s_embedded), z(f_t)) / n
  loss = jnp.log2(jnp.sum((jnp.abs(c - 1.0) ** 2) ** alpha))
  return jnp.full((n,), loss)


def itrd_mutual_information(f_s: jax.Array, f_t: jax.Array) -> jax.Array:
  """Mutual-information part on L2-normalised rows: ``G_s = ŝŝᵀ``, ``G_t = t̂t̂ᵀ``,
  ``G_st = G_s ⊙ G_t``, each of ``G_s`` / ``G_st`` divided by its trace;
  ``L = Σ_{ij} (G_s² − G_st²)``. Returns ``(B,)`` (the batch value broadcast)."""
  _check(f_s, f_t, "itrd_mutual_information")
  nrm = lambda f: f / jnp.maximum(jnp.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  s, t = nrm(f_s), nrm(f_t)
  g_s = s @ s.T
  g_st = g_s * (t @ t.T)
  g_s = g_s / jnp.trace(g_s)
  g_st = g_st / jnp.trace(g_st)
  loss = jnp.sum(g_s**2 - g_st**2)
  return jnp.full((f_s.shape[0],), loss)


def itrd(
  f_s: jax.Array,
  f_s_embedded: jax.Array,
  f_t: jax.Array,
  *,
  corr_weight: float = 2.0,
  mi_weight: float = 1.0,
  alpha: float = 1.5,
) -> jax.Array:
  """``λ_corr · L_corr + λ_mutual · L_mi`` (zkxufo/TTM defaults λ_corr 2, λ_mutual 1, α 1.5).

  ``f_s`` is the raw student feature and ``f_s_embedded = Embed(f_s)``: the correlation part
  always uses the embedded one; the MI part uses it only when the widths differ (the reference's
  ``if s_dim != t_dim``), the raw one otherwise. Returns ``(B,)``."""
  checks.nonnegative("itrd: corr_weight", corr_weight)
  checks.nonnegative("itrd: mi_weight", mi_weight)
  f_mi = f_s if f_s.shape[-1] == f_t.shape[-1] else f_s_embedded
  return corr_weight * itrd_correlation(
    f_s_embedded, f_t, alpha=alpha
  ) + mi_weight * itrd_mutual_information(f_mi, f_t)
