"""SSKD: knowledge distillation meets self-supervision (rotated views, similarity KD).

Xu, Liu, Li, Loy, "Knowledge Distillation Meets Self-Supervision", ECCV 2020; the form of
xuguodong03/SSKD ``student.py`` (methods.md §7.2 SSKD). The total student loss there is::

  0.1 CE(normal) + 0.9 KD_T4(normal) + 2.7 KD_T4(rotated views, error-filtered)
                 + 10 KL_T0.5(similarity rows, error-filtered)

The first two are kdjax's ordinary CE and ``kd`` on the normal views; this module holds the two
view-level terms and the teacher's self-supervision head loss (its 60-epoch pre-training).

**View layout** (every function here): a batch of ``B`` images in ``V`` views is ``(V·B, ...)``
with row ``b·V + v`` the view ``v`` of example ``b`` and ``v = 0`` the normal (un-rotated) view,
exactly SSKD's ``x.view(-1, c, h, w)`` of ``(B, 4, c, h, w)`` and its ``nor_index = arange % 4 ==
0``. The ``V − 1`` non-normal rows of all examples, in row order, are SSKD's ``aug`` rows.

**Error-level filtering.** A transformed sample is *correct* when its target has rank 0 under the
teacher (its class is the teacher's top-1; for similarity rows: its own normal view is the most
similar). All correct samples are kept, plus the ``int(ratio · n_wrong)`` wrong samples with the
smallest target rank (ties by row order: a stable sort, where SSKD's ``torch.argsort`` leaves
ties unspecified). The KL is ``batchmean`` over the kept rows times ``T²``.

**Per-example outputs.** The reference divides by the number of kept rows ``n``; kdjax returns
``(B,)`` values whose batch mean equals it: example ``b`` gets ``B/n · Σ_{kept views v of b} KL``.
Selection is a function of the teacher only (no gradient), so gradients equal the reference's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import checks
from kdjax.losses.logits import kl_per_example


def _split(x, num_views: int, name: str):
  """``(V·B, ...)`` -> normal ``(B, ...)``, transformed ``((V−1)·B, ...)`` (SSKD's aug rows)."""
  num_views = checks.integer(f"{name}: num_views (view 0 = normal)", num_views, minimum=2)
  if x.shape[0] % num_views:
    raise ValueError(
      f"{name}: the leading axis ({x.shape[0]}) must be num_views ({num_views}) x "
      "batch: pass every view of every example (row b*V + v)."
    )
  b = x.shape[0] // num_views
  xv = x.reshape((b, num_views) + x.shape[1:])
  return xv[:, 0], xv[:, 1:].reshape((b * (num_views - 1),) + x.shape[1:])


def target_rank(scores: jax.Array, target: jax.Array) -> jax.Array:
  """Rank of ``target`` in each row of ``scores`` sorted descending (0 = the row's maximum):
  the number of entries strictly larger than the target's (SSKD's argsort/argmax, ties aside)."""
  tv = jnp.take_along_axis(scores, target[:, None], axis=1)
  return jnp.sum(scores > tv, axis=1)


def error_filter(rank: jax.Array, ratio: float) -> jax.Array:
  """Bool keep-mask: every ``rank == 0`` row plus the ``int(ratio · n_wrong)`` wrong rows of
  smallest rank (stable: earlier rows first)."""
  ratio = checks.in_range("error_filter: ratio", ratio, 0, 1)
  n = rank.shape[0]
  # int(w * ratio) exactly as Python computes it (float64), for every possible w.
  keep_wrong = jnp.asarray(np.array([int(w * ratio) for w in range(n + 1)], np.int32))
  n_wrong = jnp.sum(rank > 0)
  n_keep = (n - n_wrong) + keep_wrong[n_wrong]
  order = jnp.argsort(rank, stable=True)
  pos = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  return pos < n_keep


def _kl_t2(student_scores, teacher_scores, temperature):
  """``T² KL(softmax(t/T) ‖ softmax(s/T))`` per row: kdjax's one KL (``kl_per_example``)."""
  return kl_per_example(
    student_scores,
    teacher_scores,
    teacher_temperature=temperature,
    student_temperature=temperature,
    t2_scale=True,
  )


def _per_example(kl_rows, keep, batch: int, num_views: int):
  """Kept-row batchmean, redistributed per example (see module docstring)."""
  keep = keep.astype(kl_rows.dtype)
  n = jnp.maximum(jnp.sum(keep), 1.0)
  per_row = (kl_rows * keep).reshape(batch, num_views - 1)
  return per_row.sum(1) * (batch / n)


def cosine_rows(aug: jax.Array, nor: jax.Array, eps: float = 1e-8) -> jax.Array:
  """``(R, B)`` cosine similarities of each transformed-view feature against every normal-view
  feature (SSKD's expanded ``F.cosine_similarity``)."""
  dots = aug @ nor.T
  na = jnp.linalg.norm(aug, axis=1)[:, None]
  nn_ = jnp.linalg.norm(nor, axis=1)[None, :]
  return dots / jnp.maximum(na * nn_, eps)


def _similarity(rep, num_views, name):
  nor, aug = _split(rep, num_views, name)
  b = nor.shape[0]
  target = jnp.repeat(jnp.arange(b), num_views - 1)
  return cosine_rows(aug, nor), target, b


def sskd_transform_kd(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array,
  *,
  temperature: float = 4.0,
  ratio: float = 1.0,
  num_views: int = 4,
) -> jax.Array:
  """KD on the transformed (rotated) views with error-level filtering (SSKD ``loss3``):
  ``T² · batchmean_kept KL(softmax(z_t/T) ‖ softmax(z_s/T))`` over the ``(V−1)·B`` transformed
  rows, a row kept by :func:`error_filter` on the rank of its label under the teacher.

  Args: ``(V·B, K)`` logits in the view layout, ``labels (B,)``. Returns ``(B,)``."""
  checks.positive("sskd_transform_kd: temperature", temperature)
  _, s_aug = _split(student_logits, num_views, "sskd_transform_kd")
  _, t_aug = _split(teacher_logits, num_views, "sskd_transform_kd")
  b = labels.shape[0]
  if s_aug.shape[0] != b * (num_views - 1):
    raise ValueError(
      f"sskd_transform_kd: {student_logits.shape[0]} logit rows but {b} labels "
      f"with num_views = {num_views}."
    )
  t_aug = jax.lax.stop_gradient(t_aug)
  # The label's rank under softmax(z_t / T) is its rank under z_t (monotone).
  keep = error_filter(target_rank(t_aug, jnp.repeat(labels, num_views - 1)), ratio)
  return _per_example(_kl_t2(s_aug, t_aug, temperature), keep, b, num_views)


def sskd_similarity(
  student_rep: jax.Array,
  teacher_rep: jax.Array,
  *,
  temperature: float = 0.5,
  ratio: float = 0.75,
  num_views: int = 4,
) -> jax.Array:
  """Self-supervision KD (SSKD ``loss4``): for each transformed-view row, the cosine similarities
  to the batch's normal-view features (``(V−1)·B × B``), student vs. teacher (their projection
  heads' outputs); ``T² · batchmean_kept KL(softmax(s_t/T) ‖ softmax(s_s/T))``, a row kept by
  :func:`error_filter` on the rank of its own example under the teacher's similarities.

  Args: ``(V·B, D_s)``, ``(V·B, D_t)`` in the view layout. Returns ``(B,)``."""
  checks.positive("sskd_similarity: temperature", temperature)
  s_sim, target, b = _similarity(student_rep, num_views, "sskd_similarity")
  t_sim, _, _ = _similarity(jax.lax.stop_gradient(teacher_rep), num_views, "sskd_similarity")
  keep = error_filter(target_rank(t_sim, target), ratio)
  return _per_example(_kl_t2(s_sim, t_sim, temperature), keep, b, num_views)


def sskd_head_ce(rep: jax.Array, *, num_views: int = 4) -> jax.Array:
  """The self-supervision task of SSKD's teacher head (``student.py``, its first 60 epochs):
  each transformed view must pick its own example's normal view among the batch, ``CE(cosine
  similarity row, own index)`` (temperature 1), mean over the ``(V−1)·B`` rows.

  Args: ``(V·B, D)`` projection-head outputs. Returns ``(B,)`` (per example: the mean over its
  ``V−1`` transformed views; the batch mean is the reference's)."""
  sim, target, b = _similarity(rep, num_views, "sskd_head_ce")
  ce = -jnp.take_along_axis(jax.nn.log_softmax(sim, -1), target[:, None], 1)[:, 0]
  return ce.reshape(b, num_views - 1).mean(1)
