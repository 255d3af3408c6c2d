r"""Checkpoint-KD's per-teacher-KL ensemble term ``ensemble_kd`` (Wang et al., NeurIPS 2022).

LeapLabTHU/CheckpointKD ``student.py`` has two ensemble teachers: ``--avg_teacher`` (the default)
averages the members' logits before the softmax (kdjax: ``teacher.ensemble_mode='logit_mean'``
and the ordinary ``kd`` term), and the other branch averages the members' KLs::

  kd_loss = Σ_j w_j · T² · KL_batchmean( softmax(z_t^(j)/T) ‖ softmax(z_s/T) ),   w_j = 1/n

This module is that branch: per example ``(1/M) Σ_m T²·KL(softmax(z_m/T) ‖ softmax(z_s/T))``, the
mean over teachers of Hinton's KD (:func:`kdjax.losses.kd`), with optional per-member ``weights``
(normalised to sum 1). It reads the members' logits from the teacher tap ``member_logits``
``(B, M, K)``, which the ensemble teacher provides (``kdjax/train/teacher.py``;
``config.teacher.members``). Torch goldens: ``tests/golden/ckd.npz``
(``tools/goldens/make_ckd_goldens.py``), test ``tests/test_configs_protocols.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import checks, losses
from kdjax.errors import UserError
from kdjax.methods.registry import register_term

MEMBER_LOGITS = "member_logits"


def ensemble_kd(
  student_logits, member_logits, *, temperature: float = 5.0, t2_scale: bool = True, weights=None
):
  """Per-example mean over the ``M`` teachers of ``T²·KL(p_m^T ‖ p_s^T)``.

  Args:
    student_logits: ``(B, K)``.
    member_logits: ``(B, M, K)``, one row of logits per ensemble member.
    temperature, t2_scale: as :func:`kdjax.losses.kd`.
    weights: ``None`` (uniform, CheckpointKD's ``w_j = 1/n``) or ``M`` non-negative numbers,
      normalised to sum 1.

  Returns:
    ``(B,)``; its batch mean is CheckpointKD's ``kd_loss`` of the per-teacher branch.
  """
  if member_logits.ndim != 3 or member_logits.shape[0] != student_logits.shape[0]:
    raise UserError(
      f"ensemble_kd: member_logits must be (B, M, K) with B = "
      f"{student_logits.shape[0]}, got {member_logits.shape}."
    )
  m = member_logits.shape[1]
  per = jax.vmap(
    lambda zt: losses.kd(student_logits, zt, temperature=temperature, t2_scale=t2_scale),
    in_axes=1,
    out_axes=1,
  )(member_logits)
  if weights is None:
    return per.mean(axis=1)
  w = jnp.asarray(weights, per.dtype)
  if w.shape != (m,):
    raise UserError(
      f"ensemble_kd: weights needs one number per member ({m}), got {tuple(weights)!r}."
    )
  return per @ (w / w.sum())


@register_term("ensemble_kd", teacher_taps=(MEMBER_LOGITS,))
def ensemble_kd_term(s, t, batch, *, temperature: float = 5.0, t2_scale: bool = True, weights=None):
  """CheckpointKD per-teacher KL: mean over ensemble members of ``T²·KL(p_m^T ‖ p_s^T)``."""
  del batch
  checks.positive("term ensemble_kd: temperature", temperature)
  if weights is not None:
    for i, w in enumerate(weights):
      checks.nonnegative(f"term ensemble_kd: weights[{i}]", w)
    checks.positive("term ensemble_kd: sum(weights)", sum(float(w) for w in weights))
  return ensemble_kd(
    s.logits, t.taps[MEMBER_LOGITS], temperature=temperature, t2_scale=t2_scale, weights=weights
  )
