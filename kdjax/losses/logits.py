"""Logit-based distillation losses (pure functions, per-example outputs).

Every loss here takes ``(B, K)`` student and teacher logits and returns a ``(B,)`` array of
per-example values; the train step performs the batch reduction (normally the mean). Each docstring
states which reduction reproduces the reference implementation. Conventions follow
``methods.md`` §0.2 (one KL with explicit conventions) and §0.5 (numerics):

* log-probabilities always come from ``log_softmax`` (never ``log(softmax(.))``);
* ``0 · log 0 = 0`` (the ``xlogy`` / ``rel_entr`` / ``F.kl_div`` convention): a class whose target
  probability is exactly 0 contributes 0, even where the prediction is ``-inf``;
* no ``stop_gradient`` is applied to the teacher inside the losses (the caller stops it; SFTN
  stage 1 does train the teacher through the KL);
* hyper-parameters are keyword-only numbers, validated eagerly by :mod:`kdjax.checks`
  (``UserError``, a ``ValueError``; a traced value passes unchecked); all functions are
  jit-compatible and keep the floating dtype of their inputs (float32 / float64).

Ranking losses (``listmle``, ``pairwise_ranking``, ``pld``) are candidates for the ranking slot of
Fan et al. (ICML 2024); none of them is verified as that paper's loss (no code was released).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from kdjax import checks

__all__ = [
  "kl_per_example",
  "kd",
  "ttm",
  "wttm",
  "dkd",
  "dkd_warmup_factor",
  "dist",
  "listmle",
  "pairwise_ranking",
  "pld",
]

_FORMS = ("kl", "cross_entropy")


# --------------------------------------------------------------------------------------------
# shape / type checks (eager, at trace time; number checks are kdjax.checks)
# --------------------------------------------------------------------------------------------


def _check_bool(name: str, value) -> None:
  if not isinstance(value, bool):
    raise ValueError(f"{name} must be a bool, got {value!r}")


def _check_logits(student_logits, teacher_logits, *, min_classes: int = 1):
  """Checks (B, K) shapes; returns both as arrays of their common floating dtype."""
  s_shape = jnp.shape(student_logits)
  t_shape = jnp.shape(teacher_logits)
  if len(s_shape) != 2 or len(t_shape) != 2:
    raise ValueError(
      "student_logits and teacher_logits must both be 2-D (batch, classes); got "
      f"student_logits.shape={s_shape}, teacher_logits.shape={t_shape}"
    )
  if s_shape != t_shape:
    raise ValueError(
      "student_logits and teacher_logits must have the same shape; got "
      f"student_logits.shape={s_shape}, teacher_logits.shape={t_shape}"
    )
  if s_shape[1] < min_classes:
    raise ValueError(f"need at least {min_classes} classes, got logits of shape {s_shape}")
  dtype = jnp.result_type(student_logits, teacher_logits, float)
  return jnp.asarray(student_logits, dtype), jnp.asarray(teacher_logits, dtype)


def _check_labels(labels, logits_shape):
  l_shape = jnp.shape(labels)
  if l_shape != (logits_shape[0],):
    raise ValueError(
      f"labels must have shape (batch,) = ({logits_shape[0]},) to match logits of shape "
      f"{logits_shape}; got labels.shape={l_shape}"
    )
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise ValueError(f"labels must be integer class indices, got dtype {jnp.result_type(labels)}")
  return jnp.asarray(labels)


def _check_top_k(top_k, num_classes: int) -> int:
  if top_k is None:
    return num_classes
  return checks.integer(
    f"top_k (None or 1..num_classes={num_classes})",
    top_k,
    minimum=1,
    maximum=num_classes,
    strict=True,
  )


# --------------------------------------------------------------------------------------------
# numerics helpers
# --------------------------------------------------------------------------------------------


def _kl_terms(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """Elementwise ``p · (log p − log q)`` with ``0 · log 0 = 0`` (safe gradients)."""
  p = jnp.exp(log_p)
  pos = p > 0
  safe_log_p = jnp.where(pos, log_p, 0.0)
  safe_log_q = jnp.where(pos, log_q, 0.0)
  return jnp.where(pos, p * (safe_log_p - safe_log_q), 0.0)


def _ce_terms(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """Elementwise ``−p · log q`` with ``0 · log q = 0`` where ``p == 0`` (safe gradients)."""
  p = jnp.exp(log_p)
  pos = p > 0
  return jnp.where(pos, -p * jnp.where(pos, log_q, 0.0), 0.0)


def _teacher_order(teacher_logits: jax.Array) -> jax.Array:
  """Teacher's class order, descending; ties broken by lower class index first (stable)."""
  return jnp.argsort(-teacher_logits, axis=-1, stable=True)


# --------------------------------------------------------------------------------------------
# KL family
# --------------------------------------------------------------------------------------------


def kl_per_example(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  *,
  teacher_temperature: float,
  student_temperature: float,
  t2_scale: bool,
  form: Literal["kl", "cross_entropy"] = "kl",
) -> jax.Array:
  """The one temperature-scaled KL of kdjax (methods.md §0.2), per example.

  With ``p = softmax(z_t / T_t)`` (target) and ``log q = log_softmax(z_s / T_s)`` (prediction):

  * ``form='kl'``:            ``L_b = c · Σ_k p_k (log p_k − log q_k)``  (= ``KL(p ‖ q)``)
  * ``form='cross_entropy'``: ``L_b = c · Σ_k −p_k log q_k``  (KL + teacher entropy: same
    gradient w.r.t. the student, different value; Ojha et al. 2023 write this form)

  with ``c = T_s²`` if ``t2_scale`` else 1. Terms with ``p_k == 0`` are 0 (``0 · log 0 = 0``, as
  PyTorch ``F.kl_div``).

  Convention (design decision): the T² factor uses the *student* temperature ``T_s``, the
  temperature that divides the student's gradient (as in lxcnju/ATS-LargeKD's ``s_τ²``). When
  ``T_t == T_s == T`` (Hinton KD, CheckpointKD, SFTN, DKD, SSKD) this is the usual ``T²``.

  Reduction that reproduces the references: the batch mean, e.g. RepDistiller
  ``DistillKL(T)(z_s, z_t) == mean(kl_per_example(z_s, z_t, teacher_temperature=T,
  student_temperature=T, t2_scale=True))``; PyTorch ``reduction='batchmean'`` (× T²) likewise.

  Args:
    student_logits: ``(B, K)`` student logits ``z_s``.
    teacher_logits: ``(B, K)`` teacher logits ``z_t`` (not stop-gradiented here).
    teacher_temperature: ``T_t > 0``.
    student_temperature: ``T_s > 0``.
    t2_scale: multiply by ``T_s²``.
    form: ``'kl'`` or ``'cross_entropy'``.

  Returns:
    ``(B,)`` per-example losses, in the inputs' floating dtype.

  Raises:
    ValueError: on non-positive temperatures, unknown ``form``, non-bool ``t2_scale`` or
      mismatched / non-2-D logit shapes.
  """
  checks.positive("teacher_temperature", teacher_temperature)
  checks.positive("student_temperature", student_temperature)
  _check_bool("t2_scale", t2_scale)
  if form not in _FORMS:
    raise ValueError(f"form must be one of {_FORMS}, got {form!r}")
  z_s, z_t = _check_logits(student_logits, teacher_logits)
  log_p = jax.nn.log_softmax(z_t / teacher_temperature, axis=-1)
  log_q = jax.nn.log_softmax(z_s / student_temperature, axis=-1)
  terms = _kl_terms(log_p, log_q) if form == "kl" else _ce_terms(log_p, log_q)
  loss = jnp.sum(terms, axis=-1)
  if t2_scale:
    loss = loss * (student_temperature**2)
  return loss


def kd(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  *,
  temperature: float,
  t2_scale: bool = True,
) -> jax.Array:
  """Hinton knowledge distillation, per example.

  Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015):
  ``L_b = T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))`` (T² omitted if ``t2_scale=False``).

  Reference: HobbitLong/RepDistiller ``distiller_zoo/KD.py`` (``DistillKL``:
  ``F.kl_div(log_softmax(y_s/T), softmax(y_t/T), size_average=False) · T² / B``) and
  megvii-research/mdistiller ``mdistiller/distillers/KD.py`` (``kd_loss``: ``.sum(1).mean() · T²``).
  The **batch mean** of this function equals both references exactly.

  Args:
    student_logits: ``(B, K)`` student logits.
    teacher_logits: ``(B, K)`` teacher logits.
    temperature: ``T > 0``, applied to both student and teacher.
    t2_scale: multiply by ``T²`` (the references do).

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: on ``temperature <= 0`` or mismatched logit shapes.
  """
  checks.positive("temperature", temperature)
  return kl_per_example(
    student_logits,
    teacher_logits,
    teacher_temperature=temperature,
    student_temperature=temperature,
    t2_scale=t2_scale,
    form="kl",
  )


def _ttm_parts(student_logits, teacher_logits, gamma):
  z_s, z_t = _check_logits(student_logits, teacher_logits)
  log_p_t = jax.nn.log_softmax(z_t, axis=-1)
  # Power transform in the log domain: log p̂ = γ·log p_t − logsumexp(γ·log p_t)
  # (= γ·z_t − logsumexp(γ·z_t)); log U = logsumexp(γ·log p_t), U = Σ_k p_t,k^γ.
  scaled = gamma * log_p_t
  log_u = jax.nn.logsumexp(scaled, axis=-1)
  log_p_hat = scaled - log_u[:, None]
  log_q = jax.nn.log_softmax(z_s, axis=-1)
  kl = jnp.sum(_kl_terms(log_p_hat, log_q), axis=-1)
  return kl, log_u


def ttm(student_logits: jax.Array, teacher_logits: jax.Array, *, gamma: float) -> jax.Array:
  """Transformed Teacher Matching (TTM), per example.

  Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching", ICLR 2024:
  ``L_b = KL(p̂ ‖ softmax(z_s))`` with the power-transformed teacher
  ``p̂ = p_t^γ / Σ_j p_t,j^γ = softmax(γ·z_t)``, ``p_t = softmax(z_t)``, ``γ = 1/T``. The student
  has **no** temperature and there is **no** T² factor. Computed in the log domain
  (``log p̂ = γ·z_t − logsumexp(γ·z_t)``), equal to the reference's pow-then-normalise.

  Reference: zkxufo/TTM ``distiller_zoo/ttm.py`` (``TTM(l=γ)``: ``mean_b Σ_k kl_div``). The
  **batch mean** of this function equals the reference. ``ttm(..., gamma=1)`` equals
  ``kd(..., temperature=1, t2_scale=False)``.

  Args:
    student_logits: ``(B, K)`` student logits.
    teacher_logits: ``(B, K)`` teacher logits.
    gamma: ``γ = 1/T > 0`` (the reference's ``--ttm_l``).

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: on ``gamma <= 0`` or mismatched logit shapes.
  """
  checks.positive("gamma", gamma)
  kl, _ = _ttm_parts(student_logits, teacher_logits, gamma)
  return kl


def wttm(student_logits: jax.Array, teacher_logits: jax.Array, *, gamma: float) -> jax.Array:
  """Weighted Transformed Teacher Matching (WTTM), per example.

  Zheng & Yang, ICLR 2024: ``L_b = U_γ(p_t) · KL(p̂ ‖ softmax(z_s))`` with the sample weight
  ``U_γ(p_t) = Σ_j p_t,j^γ`` computed from the *untransformed* teacher softmax
  ``p_t = softmax(z_t)`` and ``p̂`` as in :func:`ttm` (no student temperature, no T²).
  ``log U = logsumexp(γ·log_softmax(z_t))`` is computed in the log domain. U depends only on the
  teacher and is not stop-gradiented here (the caller stops the teacher).

  Reference: zkxufo/TTM ``distiller_zoo/wttm.py`` (``WTTM(l=γ)``: ``mean_b(norm_b · KL_b)``). The
  **batch mean** of this function equals the reference.

  Args:
    student_logits: ``(B, K)`` student logits.
    teacher_logits: ``(B, K)`` teacher logits.
    gamma: ``γ = 1/T > 0`` (the reference's ``--ttm_l``).

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: on ``gamma <= 0`` or mismatched logit shapes.
  """
  checks.positive("gamma", gamma)
  kl, log_u = _ttm_parts(student_logits, teacher_logits, gamma)
  return jnp.exp(log_u) * kl


# --------------------------------------------------------------------------------------------
# DKD
# --------------------------------------------------------------------------------------------


def dkd_warmup_factor(epoch, warmup):
  """DKD warm-up factor ``min(epoch / warmup, 1)`` (mdistiller ``DKD.forward_train``).

  ``epoch`` is counted from 1 as in mdistiller (so epoch 1 of a 20-epoch warm-up gives 0.05).
  Python numbers give a Python float; an array ``epoch`` (e.g. traced) gives a JAX scalar.

  Raises:
    ValueError: on ``warmup <= 0`` or a negative concrete ``epoch``.
  """
  checks.positive("warmup", warmup)
  if not hasattr(epoch, "shape"):
    return min(checks.nonnegative("epoch", epoch) / float(warmup), 1.0)
  return jnp.minimum(jnp.asarray(epoch) / warmup, 1.0)


def dkd(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array,
  *,
  alpha: float,
  beta: float,
  temperature: float,
) -> jax.Array:
  """Decoupled Knowledge Distillation (DKD), per example, without the warm-up factor.

  Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022:
  ``L_b = T² · (α·TCKD_b + β·NCKD_b)`` where, with ``p = softmax(z/T)`` on each side and ``y``
  the label,

  * ``TCKD_b = KL(b_t ‖ b_s)``, ``b = [p_y, Σ_{k≠y} p_k]`` (binary target / non-target mass);
  * ``NCKD_b = KL(softmax(z_t/T)|_{k≠y} ‖ softmax(z_s/T)|_{k≠y})`` over the non-target classes.

  Reference: megvii-research/mdistiller ``mdistiller/distillers/DKD.py`` (``dkd_loss``, which sums
  over classes and batch and divides by B). The **batch mean** of this function equals
  ``dkd_loss``. The reference's total adds ``min(epoch/warmup, 1)`` (see
  :func:`dkd_warmup_factor`; mdistiller: warmup 20, epoch from 1); the caller applies it, e.g.
  ``dkd_warmup_factor(epoch, 20) * mean(dkd(...))``.

  Numerics: the binary masses are formed in the log domain (``log b = log_softmax`` at ``y`` and
  ``logsumexp`` of the others) instead of the reference's ``torch.log`` of summed probabilities;
  the target class is removed for NCKD with ``-inf`` instead of ``−1000`` (``exp(−1000)`` is
  already 0, so values agree; see methods.md §0.5).

  Args:
    student_logits: ``(B, K)`` student logits, ``K >= 2``.
    teacher_logits: ``(B, K)`` teacher logits.
    labels: ``(B,)`` integer ground-truth classes in ``[0, K)`` (not range-checked: an
      out-of-range label yields an all-zero mask, as ``jax.nn.one_hot`` does).
    alpha: TCKD weight ``>= 0`` (mdistiller default 1.0).
    beta: NCKD weight ``>= 0`` (mdistiller default 8.0; per-pair values in methods.md §7.2).
    temperature: ``T > 0`` (mdistiller default 4.0).

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: on invalid hyper-parameters or mismatched shapes.
  """
  checks.nonnegative("alpha", alpha)
  checks.nonnegative("beta", beta)
  checks.positive("temperature", temperature)
  z_s, z_t = _check_logits(student_logits, teacher_logits, min_classes=2)
  y = _check_labels(labels, z_s.shape)
  gt = jax.nn.one_hot(y, z_s.shape[1], dtype=bool)

  def binary_log(z):
    log_p = jax.nn.log_softmax(z / temperature, axis=-1)
    log_gt = jnp.sum(jnp.where(gt, log_p, 0.0), axis=-1)
    log_other = jax.nn.logsumexp(jnp.where(gt, -jnp.inf, log_p), axis=-1)
    return jnp.stack([log_gt, log_other], axis=-1)

  tckd = jnp.sum(_kl_terms(binary_log(z_t), binary_log(z_s)), axis=-1)

  def masked_log_softmax(z):
    return jax.nn.log_softmax(jnp.where(gt, -jnp.inf, z / temperature), axis=-1)

  nckd = jnp.sum(_kl_terms(masked_log_softmax(z_t), masked_log_softmax(z_s)), axis=-1)
  return (alpha * tckd + beta * nckd) * (temperature**2)


# --------------------------------------------------------------------------------------------
# DIST
# --------------------------------------------------------------------------------------------


def _pearson_rows(a: jax.Array, b: jax.Array, eps: float) -> jax.Array:
  """Row-wise Pearson: cosine of mean-centred rows, ``/(‖a‖‖b‖ + eps)`` as the reference."""
  a = a - jnp.mean(a, axis=-1, keepdims=True)
  b = b - jnp.mean(b, axis=-1, keepdims=True)

  def safe_norm(x):
    ss = jnp.sum(x * x, axis=-1)
    pos = ss > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, ss, 1.0)), 0.0)

  return jnp.sum(a * b, axis=-1) / (safe_norm(a) * safe_norm(b) + eps)


def dist(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  *,
  beta: float = 1.0,
  gamma: float = 1.0,
  temperature: float = 4.0,
) -> jax.Array:
  """DIST (inter- and intra-class Pearson relation), split into per-example values.

  Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022. With
  ``y = softmax(z/τ)`` on both sides and ``ρ`` the Pearson correlation (cosine similarity of
  mean-centred vectors, ``eps = 1e-8`` added to the norm product):
  ``L = τ²·[β·(1 − mean_b ρ(y_s[b,:], y_t[b,:])) + γ·(1 − mean_k ρ(y_s[:,k], y_t[:,k]))]``.

  Reference: zkxufo/TTM ``distiller_zoo/dist.py`` (``DIST(beta, gamma, tau)``).

  Per-example split (design decision): the inter-class term is per example,
  ``τ²·β·(1 − ρ(y_s[b], y_t[b]))``; the intra-class term is a **batch-level** quantity (Pearson
  over the batch axis per class), so its value ``τ²·γ·(1 − mean_k ρ_k)`` is distributed equally,
  i.e. added unchanged to every example. Hence the **batch mean** of the returned ``(B,)`` array
  equals the reference loss (value and gradient), but individual entries are not independent
  per-example losses: any weighting other than the uniform mean changes the intra-class
  gradient, and the intra term depends on the whole batch passed in (under data parallelism the
  caller must all-gather logits to reproduce single-device values, methods.md §0.5).

  Args:
    student_logits: ``(B, K)`` student logits.
    teacher_logits: ``(B, K)`` teacher logits.
    beta: inter-class weight ``>= 0`` (default 1).
    gamma: intra-class weight ``>= 0`` (default 1).
    temperature: ``τ > 0`` (default 4, the zkxufo/TTM ``train_student.py`` default).

  Returns:
    ``(B,)`` values whose mean is the DIST loss.

  Raises:
    ValueError: on invalid hyper-parameters or mismatched logit shapes.
  """
  checks.nonnegative("beta", beta)
  checks.nonnegative("gamma", gamma)
  checks.positive("temperature", temperature)
  z_s, z_t = _check_logits(student_logits, teacher_logits)
  eps = 1e-8
  y_s = jax.nn.softmax(z_s / temperature, axis=-1)
  y_t = jax.nn.softmax(z_t / temperature, axis=-1)
  inter = 1.0 - _pearson_rows(y_s, y_t, eps)  # (B,)
  intra = 1.0 - jnp.mean(_pearson_rows(y_s.T, y_t.T, eps))  # scalar
  return (temperature**2) * (beta * inter + gamma * intra)


# --------------------------------------------------------------------------------------------
# ranking losses (methods.md §2.2; candidates, not verified as Fan et al.'s loss)
# --------------------------------------------------------------------------------------------


def _plackett_luce_terms(sorted_scores: jax.Array, num_positions: int) -> jax.Array:
  """``−s_k + log Σ_{j≥k} exp(s_j)`` for the first ``num_positions`` positions k.

  ``sorted_scores`` are the student's scores in the target order. The suffix log-sum-exps are an
  exact masked ``logsumexp`` over a ``(num_positions, K)`` triangle: O(B·k·K) work, cheap to
  compile (``lax.cumlogsumexp`` lowers to a large associative scan) and free of the underflow of
  a max-shifted cumulative sum when the logits span more than ~80 (float32).
  """
  num_classes = sorted_scores.shape[-1]
  pos = jnp.arange(num_positions)[:, None]
  suffix = jnp.arange(num_classes)[None, :] >= pos  # (k, K): j >= k
  masked = jnp.where(suffix, sorted_scores[:, None, :], -jnp.inf)  # (B, k, K)
  return jax.nn.logsumexp(masked, axis=-1) - sorted_scores[:, :num_positions]


def listmle(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  *,
  top_k: int | None = None,
) -> jax.Array:
  """ListMLE / Plackett–Luce ranking loss on the teacher's class order, per example.

  Xia et al., "Listwise Approach to Learning to Rank" (ICML 2008), used as candidate 1 (and 2,
  top-k) of the ranking slot of Fan et al., "Revisit the Essence of Distilling Knowledge through
  Calibration" (ICML 2024), methods.md §2.2. **Not verified as the paper's loss.**

  With π the teacher's order (descending ``z_t``):
  ``L_b = Σ_{k=1}^{k_max} [ −z_s[π_k] + log Σ_{j≥k} exp(z_s[π_j]) ]``, ``k_max = top_k`` or K.
  Summed over positions (not normalised); the last full-list term is identically 0. Depends on
  the teacher only through π, so it is invariant to positive scaling and shifts of ``z_t``
  (teacher temperature / calibration). No student temperature. Cost O(B·k_max·K) (exact masked
  suffix log-sum-exp).

  Ties in ``z_t`` are broken by a stable argsort: among equal teacher logits the lower class
  index ranks first.

  Reference: none public for this use; golden-tested against an independent NumPy
  implementation (tests/test_losses_logits.py). Reduction: batch mean (design decision).

  Args:
    student_logits: ``(B, K)`` student logits.
    teacher_logits: ``(B, K)`` teacher logits (only their order is used; no gradient flows).
    top_k: None (full list) or an int in ``[1, K]``: only the first ``top_k`` positions.

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: on an invalid ``top_k`` or mismatched logit shapes.
  """
  z_s, z_t = _check_logits(student_logits, teacher_logits)
  k = _check_top_k(top_k, z_s.shape[1])
  order = _teacher_order(jax.lax.stop_gradient(z_t))
  s = jnp.take_along_axis(z_s, order, axis=-1)
  return jnp.sum(_plackett_luce_terms(s, k), axis=-1)


def pairwise_ranking(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  *,
  temperature: float = 1.0,
  top_k: int | None = None,
) -> jax.Array:
  """Pairwise logistic ranking loss on the teacher's class order, per example.

  Candidate 3 of the ranking slot of Fan et al. (ICML 2024), methods.md §2.2 (RankNet-style
  pairwise logistic loss, Burges et al. 2005). **Not verified as the paper's loss.**

  With π the teacher's order (descending ``z_t``, stable tie-break: lower class index first),
  the pairs are ``P = {(π_a, π_b): a < b, a < top_k}`` (each of the teacher's top-k classes
  against every class ranked below it; all ``K(K−1)/2`` ordered pairs when ``top_k`` is None):
  ``L_b = (1/|P|) Σ_{(i,j)∈P} log(1 + exp(−(z_s[i] − z_s[j]) / τ_r))``.
  Teacher-tied classes still form a pair, oriented by the tie-break. Invariant to positive
  scaling and shifts of ``z_t``. Memory is O(B·K²).

  Reference: none public; golden-tested against an independent NumPy implementation.
  Reduction: batch mean (design decision).

  Args:
    student_logits: ``(B, K)`` student logits, ``K >= 2``.
    teacher_logits: ``(B, K)`` teacher logits (only their order is used; no gradient flows).
    temperature: ``τ_r > 0`` dividing the student's score differences.
    top_k: None or an int in ``[1, K]`` restricting the higher-ranked element of each pair.

  Returns:
    ``(B,)`` per-example losses (mean over pairs).

  Raises:
    ValueError: on invalid hyper-parameters or mismatched logit shapes.
  """
  checks.positive("temperature", temperature)
  z_s, z_t = _check_logits(student_logits, teacher_logits, min_classes=2)
  num_classes = z_s.shape[1]
  k = _check_top_k(top_k, num_classes)
  order = _teacher_order(jax.lax.stop_gradient(z_t))
  s = jnp.take_along_axis(z_s, order, axis=-1)
  diff = (s[:, :, None] - s[:, None, :]) / temperature  # diff[b, a, c] = s_a - s_c
  a_idx = jnp.arange(num_classes)[:, None]
  c_idx = jnp.arange(num_classes)[None, :]
  mask = (a_idx < c_idx) & (a_idx < k)
  num_pairs = sum(num_classes - 1 - a for a in range(min(k, num_classes)))
  per_pair = jax.nn.softplus(-diff)
  return jnp.sum(jnp.where(mask, per_pair, 0.0), axis=(1, 2)) / num_pairs


def pld(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array,
  *,
  teacher_temperature: float = 1.0,
) -> jax.Array:
  """Teacher-weighted list-wise (PLD-style) ranking loss, per example.

  Candidate 4 of the ranking slot, methods.md §2.2: the PLD loss of Bassam et al. (2025), *not*
  Fan et al.'s loss; transcribed from methods.md and **not verified as the paper's loss**.
  With ``π* = [y, then the other classes by descending z_t]`` and
  ``q = softmax(z_t / τ_T)``:
  ``L_b = Σ_{k=1}^{K} q[π*_k] · [ −z_s[π*_k] + log Σ_{j≥k} exp(z_s[π*_j]) ]``.
  Unlike :func:`listmle`, the weights ``q`` depend on the teacher's scale (not only its order).
  Ties in ``z_t`` among the non-label classes: stable argsort, lower class index first.
  Cost O(B·K²) (exact masked suffix log-sum-exp).

  Reference: none public here; golden-tested against an independent NumPy implementation.
  Reduction: batch mean (design decision). The teacher is not stop-gradiented (the weights ``q``
  carry a teacher gradient unless the caller stops it).

  Args:
    student_logits: ``(B, K)`` student logits.
    teacher_logits: ``(B, K)`` teacher logits.
    labels: ``(B,)`` integer ground-truth classes in ``[0, K)``.
    teacher_temperature: ``τ_T > 0`` of the weights (default 1).

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: on invalid hyper-parameters or mismatched shapes.
  """
  checks.positive("teacher_temperature", teacher_temperature)
  z_s, z_t = _check_logits(student_logits, teacher_logits)
  y = _check_labels(labels, z_s.shape)
  order = _teacher_order(jax.lax.stop_gradient(z_t))
  # Move the label to the front, keeping the teacher order of the rest (stable).
  not_label = (order != y[:, None]).astype(jnp.int32)
  order = jnp.take_along_axis(order, jnp.argsort(not_label, axis=-1, stable=True), axis=-1)
  s = jnp.take_along_axis(z_s, order, axis=-1)
  q = jax.nn.softmax(z_t / teacher_temperature, axis=-1)
  w = jnp.take_along_axis(q, order, axis=-1)
  return jnp.sum(w * _plackett_luce_terms(s, z_s.shape[1]), axis=-1)


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example cross-entropy ``-sum_k y_k log softmax(z)_k``, the one CE of kdjax.

  ``targets`` is either integer labels (shape ``logits.shape[-2:-1]``, i.e. ``(B,)`` for logits
  ``(..., B, C)``: a gather of ``-log softmax(z)_y``, broadcast over leading axes) or a target
  distribution of the logits' shape (one-hot, label-smoothed or mixup-mixed: a dense sum).
  ``log_softmax`` is taken in the logits' dtype; pass float32 (or wider) logits.
  Returns the logits' shape without the class axis.
  """
  log_p = jax.nn.log_softmax(logits, axis=-1)
  if jnp.issubdtype(targets.dtype, jnp.integer):
    idx = jnp.broadcast_to(targets[:, None], log_p.shape[:-1] + (1,))
    return -jnp.take_along_axis(log_p, idx, axis=-1)[..., 0]
  return -jnp.sum(targets * log_p, axis=-1)
