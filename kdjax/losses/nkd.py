r"""NKD: normalized knowledge distillation, per example.

Yang, Zeng, Yuan, Li, "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
Approach with Normalized Loss and Customized Soft Labels", ICCV 2023 (code: yzd-v/cls_KD
``mmcls/models/dis_losses/nkd.py``, ``NKDLoss``). KD is split into the target and the
*normalized* non-target parts; with ``p = softmax(z_t)``, ``log q = log_softmax(z_s)`` (T = 1) and
``p̂``, ``q̂`` the distributions over the non-target classes only (the target column removed, then
softmax at temperature T):

  ``L_b = − p_y · log q_y  −  γ · T² · Σ_{k ≠ y} p̂_k · log q̂_k``,
  ``p̂ = softmax(z_t[k ≠ y] / T)``, ``log q̂ = log_softmax(z_s[k ≠ y] / T)``.

The batch mean equals ``NKDLoss(temp=T, gamma=γ)(z_s, z_t, y)`` (which averages both parts over
the batch); the reference adds it to the student's CE (weight 1). Reference settings: CIFAR-100
``T = 3, γ = 3.5`` (``configs/distillers/cifar100/res34_distill_res18_cifar.py``), ImageNet
``T = 1, γ = 1.5``. The reference detaches ``p_y``; kdjax losses never stop gradients (the
caller stops the teacher's), which is the same for a frozen teacher.

Numerics: the target column is removed by masking it to ``−inf`` before the non-target softmax
(exactly the reference's values) and its ``0 · log 0`` term is taken as 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import checks
from kdjax.losses.logits import _check_labels, _check_logits

__all__ = ["nkd"]


def nkd(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array,
  *,
  temperature: float = 1.0,
  gamma: float = 1.5,
) -> jax.Array:
  """Normalized KD per example (see the module docstring for the formula).

  Args:
    student_logits: ``(B, K)`` student logits, ``K >= 2``.
    teacher_logits: ``(B, K)`` teacher logits.
    labels: ``(B,)`` integer classes.
    temperature: ``T > 0`` of the non-target part (the target part uses T = 1).
    gamma: ``γ >= 0``, the non-target weight.

  Returns:
    ``(B,)`` per-example losses.
  """
  checks.positive("temperature", temperature)
  checks.nonnegative("gamma", gamma)
  z_s, z_t = _check_logits(student_logits, teacher_logits, min_classes=2)
  y = _check_labels(labels, z_s.shape)
  gt = jax.nn.one_hot(y, z_s.shape[1], dtype=bool)
  log_q = jax.nn.log_softmax(z_s, axis=-1)
  p = jax.nn.softmax(z_t, axis=-1)
  target = -jnp.sum(jnp.where(gt, p * log_q, 0.0), axis=-1)
  log_q_nt = jax.nn.log_softmax(jnp.where(gt, -jnp.inf, z_s / temperature), axis=-1)
  p_nt = jax.nn.softmax(jnp.where(gt, -jnp.inf, z_t / temperature), axis=-1)
  non_target = -jnp.sum(jnp.where(gt, 0.0, p_nt * jnp.where(gt, 0.0, log_q_nt)), axis=-1)
  return target + gamma * temperature**2 * non_target
