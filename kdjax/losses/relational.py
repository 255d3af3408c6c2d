"""Relational (batch-level) distillation losses, split into per-example values.

These losses compare *relations between the examples of a batch* (Gram matrices, pairwise
distances and angles, similarity distributions, adjacent-sample correlations), so the reference
value is a batch-level quantity. Each function returns a ``(B,)`` array whose **batch mean**
equals the reference loss value (and therefore has the reference gradient); the docstrings state
how the value is spread over the examples (normally: example b gets the terms of row b of the
relation matrix, the rows that have b as the anchor / vertex). Individual entries still depend on
the other examples of the batch, so any weighting other than the uniform mean changes the loss,
and under data parallelism the caller must all-gather the features to reproduce single-device
values (methods.md §0.5, ``global_batch_stats``).

References: HobbitLong/RepDistiller ``distiller_zoo/SP.py``, ``CC.py``, ``RKD.py``, ``PKT.py``;
yoshitomo-matsubara/torchdistill ``torchdistill/losses/single.py`` (``CCKDLoss``, Gaussian kernel).
Taps (anchors.md §4.4): SP uses the last stage (``feat[-2]``), CC / RKD / PKT the ``pooled``
features (``feat[-1]``; CC through two trainable ``LinearEmbed`` connectors).

Conventions as in :mod:`kdjax.losses.features`: keyword-only hyper-parameters validated eagerly
(``ValueError``), shape mismatches name both shapes, no ``stop_gradient`` on the teacher (the
caller stops it; the references' ``no_grad`` teacher terms are then identical), NaN-free gradients
of norms at 0, ``Precision.HIGHEST`` contractions, dtype of the inputs kept.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from kdjax import checks
from kdjax.losses.features import (
  _HIGHEST,
  _dtype,
  _l2_normalize,
  _safe_norm,
)

__all__ = ["sp", "cc", "cc_gaussian", "rkd", "pkt"]


def _flat_pair(s_name, s, t_name, t, *, flatten: bool, same_dim: bool = False):
  s_shape, t_shape = tuple(jnp.shape(s)), tuple(jnp.shape(t))
  if flatten:
    ok = len(s_shape) >= 2 and len(t_shape) >= 2
    what = "at least 2-D (batch first)"
  else:
    ok = len(s_shape) == 2 and len(t_shape) == 2
    what = "2-D (batch, dim)"
  if not ok:
    raise ValueError(
      f"{s_name} and {t_name} must be {what}; got {s_name}.shape={s_shape}, "
      f"{t_name}.shape={t_shape}"
    )
  if s_shape[0] != t_shape[0] or (same_dim and s_shape != t_shape):
    need = "the same shape" if same_dim else "the same batch size"
    raise ValueError(
      f"{s_name} and {t_name} must have {need}; got {s_name}.shape={s_shape}, "
      f"{t_name}.shape={t_shape}"
    )
  dtype = _dtype(s, t)
  s = jnp.asarray(s, dtype)
  t = jnp.asarray(t, dtype)
  return s.reshape(s_shape[0], -1), t.reshape(t_shape[0], -1)


def _gram(x: jax.Array) -> jax.Array:
  return jnp.matmul(x, x.T, precision=_HIGHEST)


# --------------------------------------------------------------------------------------------
# SP
# --------------------------------------------------------------------------------------------


def sp(student_feat: jax.Array, teacher_feat: jax.Array) -> jax.Array:
  """Similarity-preserving KD, split row-wise over the batch.

  Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019. With ``F`` the
  ``(B, ·)`` flattened features and ``G = row_normalize(F Fᵀ)`` (each row of the ``B × B`` Gram
  matrix L2-normalised, ``F.normalize``), the reference loss is ``‖G_t − G_s‖²_F / B²``.

  Per-example split: ``L_b = Σ_j (G_t − G_s)[b, j]² / B`` (row b of the difference), so
  ``mean_b L_b`` is the reference value.

  Reference: HobbitLong/RepDistiller ``distiller_zoo/SP.py`` (``Similarity``; tap ``feat[-2]``,
  the last stage). Flattening NHWC instead of NCHW only permutes the feature axis, which leaves
  ``F Fᵀ`` unchanged.

  Args:
    student_feat: ``(B, ...)`` student features (e.g. the NHWC last-stage map).
    teacher_feat: ``(B, ...)`` teacher features (any size per example).

  Returns:
    ``(B,)`` values whose mean is the SP loss.

  Raises:
    ValueError: if the batch sizes differ or an input is 1-D.
  """
  f_s, f_t = _flat_pair("student_feat", student_feat, "teacher_feat", teacher_feat, flatten=True)
  g_s = _l2_normalize(_gram(f_s), axis=1)
  g_t = _l2_normalize(_gram(f_t), axis=1)
  d = g_t - g_s
  return jnp.sum(d * d, axis=1) / f_s.shape[0]


# --------------------------------------------------------------------------------------------
# CC
# --------------------------------------------------------------------------------------------


def cc(student_embed: jax.Array, teacher_embed: jax.Array) -> jax.Array:
  """Correlation congruence as implemented in RepDistiller, split over the batch.

  Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019, in the form of
  RepDistiller's ``Correlation`` (code from the paper's authors): with ``Δ = |e_s − e_t|``
  (``(B, D)``, embeddings from two trainable
  :class:`kdjax.losses.connectors.LinearEmbed` connectors, Linear without normalisation),
  ``L = mean_{i=0..B−2} Σ_d Δ[i, d]·Δ[i+1, d]`` (adjacent samples of the batch). There are no
  hyper-parameters; the paper's Gaussian-kernel form is :func:`cc_gaussian`.

  Per-example split: each adjacent pair ``(i, i+1)`` gives half of its term to each of its two
  examples: ``L_b = B/(2(B−1)) · (c_{b−1} + c_b)`` with ``c_i = Σ_d Δ[i]Δ[i+1]`` and
  ``c_{−1} = c_{B−1} = 0``; ``mean_b L_b`` is the reference value. The loss depends on the
  order of the examples in the batch.

  Reference: HobbitLong/RepDistiller ``distiller_zoo/CC.py`` (``Correlation``) with
  ``models/util.py`` ``LinearEmbed`` (``train_student.py``, ``--distill correlation``,
  ``feat_dim = 128``, tap ``feat[-1]``).

  Args:
    student_embed: ``(B, D)`` student embedding, ``B >= 2``.
    teacher_embed: ``(B, D)`` teacher embedding.

  Returns:
    ``(B,)`` values whose mean is the CC loss.

  Raises:
    ValueError: on mismatched or non-2-D shapes, or ``B < 2``.
  """
  e_s, e_t = _flat_pair(
    "student_embed", student_embed, "teacher_embed", teacher_embed, flatten=False, same_dim=True
  )
  b = e_s.shape[0]
  if b < 2:
    raise ValueError(
      f"cc needs a batch of at least 2 examples; got student_embed.shape={e_s.shape}"
    )
  delta = jnp.abs(e_s - e_t)
  pair = jnp.sum(delta[:-1] * delta[1:], axis=1)  # (B-1,)
  zero = jnp.zeros((1,), pair.dtype)
  return (jnp.concatenate([pair, zero]) + jnp.concatenate([zero, pair])) * (b / (2.0 * (b - 1)))


def cc_gaussian(
  student_embed: jax.Array, teacher_embed: jax.Array, *, gamma: float = 0.4, p_order: int = 2
) -> jax.Array:
  """Correlation congruence with the paper's Taylor-expanded Gaussian RBF kernel.

  Peng et al., ICCV 2019, Eq. 7–9: the correlation matrix of a batch of embeddings ``F``
  (``(B, D)``) is ``K[i, j] = exp(−2γ) · Σ_{p=0}^{P} (2γ)^p / p! · ⟨f_i, f_j⟩^p`` (the order-P
  Taylor expansion of ``exp(−γ‖f_i − f_j‖²)`` for unit-norm f), and the loss is
  ``‖K_s − K_t‖_F / B²`` (the Frobenius norm, **not** squared, as the reference's
  ``torch.dist``).

  Reference: yoshitomo-matsubara/torchdistill ``torchdistill/losses/single.py`` (``CCKDLoss``,
  ``kernel_params={'type': 'gaussian', 'gamma': γ, 'max_p': P}``, ``reduction='batchmean'``).
  **Not** RepDistiller's CC (that is :func:`cc`). The embeddings are used as given (torchdistill
  feeds the outputs of its linear + normalisation modules).

  Per-example split: the norm does not decompose over rows, so the batch-level value is given
  to every example unchanged (``L_b = L`` for all b); ``mean_b L_b`` is the reference value.

  Args:
    student_embed: ``(B, D)`` student embedding.
    teacher_embed: ``(B, D')`` teacher embedding (``D'`` may differ).
    gamma: kernel parameter ``γ > 0`` (default 0.4; the usual CC setting, unverified: our
      reading — confirm against the paper / torchdistill config before citing it).
    p_order: expansion order ``P >= 1`` (an int; default 2).

  Returns:
    ``(B,)`` values (all equal) whose mean is the loss.

  Raises:
    ValueError: on invalid hyper-parameters or mismatched / non-2-D shapes.
  """
  gamma = checks.positive("gamma", gamma)
  p_order = checks.integer("p_order", p_order, minimum=1, strict=True)
  e_s, e_t = _flat_pair(
    "student_embed", student_embed, "teacher_embed", teacher_embed, flatten=False
  )
  b = e_s.shape[0]

  def kernel(f):
    r = _gram(f)
    k = jnp.ones_like(r)
    for p in range(1, p_order + 1):
      k = k + ((2.0 * gamma) ** p / math.factorial(p)) * r**p
    return k * jnp.exp(-2.0 * jnp.asarray(gamma, r.dtype))

  dist = _safe_norm((kernel(e_s) - kernel(e_t)).reshape(-1), axis=0)
  return jnp.full((b,), dist / (b * b))


# --------------------------------------------------------------------------------------------
# RKD
# --------------------------------------------------------------------------------------------


def _smooth_l1(x: jax.Array) -> jax.Array:
  """``F.smooth_l1_loss`` elementwise with beta = 1."""
  ax = jnp.abs(x)
  return jnp.where(ax < 1.0, 0.5 * x * x, ax - 0.5)


def _pdist(e: jax.Array, eps: float = 1e-12) -> jax.Array:
  """RepDistiller ``RKDLoss.pdist(squared=False)``: clamped Euclidean distances, zero diagonal."""
  sq = jnp.sum(e * e, axis=1)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * _gram(e), eps)
  eye = jnp.eye(e.shape[0], dtype=bool)
  return jnp.where(eye, 0.0, jnp.sqrt(d2))


def _normalized_distances(e: jax.Array) -> jax.Array:
  d = _pdist(e)
  pos = d > 0
  mean_d = jnp.sum(jnp.where(pos, d, 0.0)) / jnp.sum(pos)
  return d / mean_d


def _angles(e: jax.Array) -> jax.Array:
  """``a[i, j, k] = ⟨n(e_j − e_i), n(e_k − e_i)⟩`` with ``n = F.normalize`` (vertex i)."""
  diff = e[None, :, :] - e[:, None, :]  # diff[i, j] = e_j - e_i
  nd = _l2_normalize(diff, axis=2)
  return jnp.einsum("ijd,ikd->ijk", nd, nd, precision=_HIGHEST)


def rkd(
  student_emb: jax.Array, teacher_emb: jax.Array, *, w_dist: float = 25.0, w_angle: float = 50.0
) -> jax.Array:
  """Relational KD (distance + angle), split by anchor / vertex over the batch.

  Park et al., "Relational Knowledge Distillation", CVPR 2019. On flattened embeddings:

  * distance: ``d[i, j] = ‖e_i − e_j‖`` (``pdist`` with the squared distance clamped at 1e-12,
    diagonal 0), divided by the mean of its positive entries; ``L_dist = mean_{i,j}
    smoothL1(d_s[i, j] − d_t[i, j])``;
  * angle: ``a[i, j, k] = ⟨n(e_j − e_i), n(e_k − e_i)⟩`` (``n = F.normalize``);
    ``L_angle = mean_{i,j,k} smoothL1(a_s − a_t)``;

  and ``L = w_dist·L_dist + w_angle·L_angle`` (smooth L1 with β = 1).

  Per-example split: example b gets its rows, ``L_b = w_dist·mean_j smoothL1(d_s − d_t)[b, j]
  + w_angle·mean_{j,k} smoothL1(a_s − a_t)[b, j, k]`` (b as anchor / angle vertex);
  ``mean_b L_b`` is the reference value. Memory is O(B²·D) for the angle term.

  Reference: HobbitLong/RepDistiller ``distiller_zoo/RKD.py`` (``RKDLoss(w_d=25, w_a=50)``; tap
  ``feat[-1]``). The teacher terms there are under ``no_grad``; here the caller stops the teacher.

  Args:
    student_emb: ``(B, ...)`` student features (flattened per example).
    teacher_emb: ``(B, ...)`` teacher features (any size per example).
    w_dist: distance weight ``>= 0`` (default 25).
    w_angle: angle weight ``>= 0`` (default 50).

  Returns:
    ``(B,)`` values whose mean is the RKD loss.

  Raises:
    ValueError: on negative weights or mismatched batch sizes.
  """
  w_dist = checks.nonnegative("w_dist", w_dist)
  w_angle = checks.nonnegative("w_angle", w_angle)
  e_s, e_t = _flat_pair("student_emb", student_emb, "teacher_emb", teacher_emb, flatten=True)
  dist_rows = jnp.mean(_smooth_l1(_normalized_distances(e_s) - _normalized_distances(e_t)), axis=1)
  angle_rows = jnp.mean(_smooth_l1(_angles(e_s) - _angles(e_t)), axis=(1, 2))
  return w_dist * dist_rows + w_angle * angle_rows


# --------------------------------------------------------------------------------------------
# PKT
# --------------------------------------------------------------------------------------------


def pkt(student_emb: jax.Array, teacher_emb: jax.Array, *, eps: float = 1e-7) -> jax.Array:
  """Probabilistic knowledge transfer (cosine-similarity kernel), split row-wise.

  Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer",
  ECCV 2018. Rows are scaled as ``x / (‖x‖ + eps)`` (NaNs set to 0), ``S = (X Xᵀ + 1)/2``, and
  each row is normalised to sum 1: ``P = S / Σ_j S``. The reference loss is
  ``mean_{i,j} P_t[i, j] · log((P_t[i, j] + eps) / (P_s[i, j] + eps))``.

  Per-example split: ``L_b = mean_j P_t[b, j]·log((P_t[b, j] + eps)/(P_s[b, j] + eps))``
  (row b, the conditional distribution anchored at b); ``mean_b L_b`` is the reference value.

  Reference: HobbitLong/RepDistiller ``distiller_zoo/PKT.py`` (``PKT.cosine_similarity_loss``,
  eps = 1e-7; tap ``feat[-1]``).

  Args:
    student_emb: ``(B, D)`` student features.
    teacher_emb: ``(B, D')`` teacher features (``D'`` may differ).
    eps: ``> 0`` (default 1e-7), used in the row scaling and inside the log as the reference.

  Returns:
    ``(B,)`` values whose mean is the PKT loss.

  Raises:
    ValueError: on ``eps <= 0`` or mismatched / non-2-D shapes.
  """
  eps = checks.positive("eps", eps)
  x_s, x_t = _flat_pair("student_emb", student_emb, "teacher_emb", teacher_emb, flatten=False)

  def probs(x):
    x = x / (_safe_norm(x, axis=1, keepdims=True) + eps)
    x = jnp.where(jnp.isnan(x), 0.0, x)
    s = (_gram(x) + 1.0) / 2.0
    return s / jnp.sum(s, axis=1, keepdims=True)

  p_s, p_t = probs(x_s), probs(x_t)
  return jnp.mean(p_t * jnp.log((p_t + eps) / (p_s + eps)), axis=1)
