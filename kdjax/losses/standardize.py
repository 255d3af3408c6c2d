r"""Logit standardisation (Z-score pre-process) for logit distillation, per example.

Sun, Ren, Li, Wang, Cao, "Logit Standardization in Knowledge Distillation", CVPR 2024
(code: sunshangquan/logit-standardization-KD, ``mdistiller/distillers/{KD,DKD,MLKD}.py``,
``normalize`` and the ``logit_stand`` flag; ``tools/train.py`` ``--logit-stand --base-temp
--kd-weight``).

The paper sets each sample's temperature to the (weighted) standard deviation of its logits:
with ``Z(z) = (z − mean(z)) / σ(z)``, the softened distribution is

  ``q(z)_k = softmax(Z(z) / τ)_k``,

where ``τ`` is the *base temperature* (2 in the paper's CIFAR-100 runs; 3 or 4 for some pairs),
applied to teacher and student separately, so the student only needs to match the teacher's
logit *relations*, not their range or offset. The reference computes, per row of ``(B, K)``
logits,

  ``Z(z) = (z − mean_k z) / (1e-7 + std_k z)``, ``std`` the **unbiased** (K − 1) standard deviation
  (``torch.Tensor.std`` default),

and feeds ``Z(z_s)``, ``Z(z_t)`` to the unchanged loss: KD's ``τ² · KL(softmax(Z(z_t)/τ) ‖
softmax(Z(z_s)/τ))`` (:func:`lskd`), DKD's TCKD/NCKD with ``T = τ`` (:func:`lsdkd`), or MLKD's
multi-temperature KD. The ``τ²`` factor uses the base temperature ``τ`` (as the reference).

Numerics (methods.md §0.5): for a constant row (σ = 0) torch's ``std`` backward is ``0/0`` (NaN);
here the square root is taken only where the variance is positive, so ``Z`` is then 0 with a zero
gradient through ``σ`` (values are identical wherever the reference's are finite).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import checks
from kdjax.losses.logits import dkd, kd

__all__ = ["standardize_logits", "lskd", "lsdkd"]

EPS = 1e-7  # the reference's ``1e-7 + stdv``


def standardize_logits(logits: jax.Array, *, eps: float = EPS, ddof: int = 1) -> jax.Array:
  """Row-wise Z-score ``(z − mean(z)) / (eps + std(z))`` over the last (class) axis.

  Args:
    logits: ``(..., K)`` logits.
    eps: added to the standard deviation (the reference's ``1e-7``).
    ddof: 1 for the unbiased std (torch's default, the reference), 0 for the biased one.

  Returns:
    Standardised logits of the same shape and floating dtype.
  """
  checks.nonnegative("standardize_logits: eps", eps)
  if ddof not in (0, 1):
    raise ValueError(f"standardize_logits: ddof must be 0 or 1, got {ddof!r}.")
  z = jnp.asarray(logits, jnp.result_type(logits, float))
  k = z.shape[-1]
  if k - ddof < 1:
    raise ValueError(f"standardize_logits: need at least {ddof + 1} classes, got shape {z.shape}.")
  centred = z - jnp.mean(z, axis=-1, keepdims=True)
  var = jnp.sum(centred * centred, axis=-1, keepdims=True) / (k - ddof)
  pos = var > 0
  std = jnp.where(pos, jnp.sqrt(jnp.where(pos, var, 1.0)), 0.0)
  return centred / (eps + std)


def lskd(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  *,
  temperature: float = 2.0,
  t2_scale: bool = True,
) -> jax.Array:
  """KD on standardised logits (the paper's "KD + Ours"), per example:

  ``L_b = τ² · KL(softmax(Z(z_t)/τ) ‖ softmax(Z(z_s)/τ))``, ``τ`` the base temperature.

  The batch mean equals the reference's ``kd_loss(z_s, z_t, τ, logit_stand=True)``
  (``.sum(1).mean() · τ²``); the reference's CIFAR-100 runs weight it by ``kd_weight`` 9 (CE 0.1).
  """
  return kd(
    standardize_logits(student_logits),
    standardize_logits(teacher_logits),
    temperature=temperature,
    t2_scale=t2_scale,
  )


def lsdkd(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array,
  *,
  alpha: float,
  beta: float,
  temperature: float = 2.0,
) -> jax.Array:
  """DKD on standardised logits ("DKD + Ours"), per example, without the warm-up factor:

  ``L_b = τ² · (α · TCKD_b + β · NCKD_b)`` computed by :func:`kdjax.losses.dkd` on
  ``Z(z_s)``, ``Z(z_t)`` with ``T = τ``.

  The batch mean equals the reference's ``dkd_loss(..., logit_stand=True)``; its ``tools/train.py``
  multiplies DKD's α and β by ``kd_weight`` (e.g. α = 9, β = 72 for resnet32x4 → resnet8x4) and
  keeps the warm-up ``min(epoch / 20, 1)``.
  """
  return dkd(
    standardize_logits(student_logits),
    standardize_logits(teacher_logits),
    labels,
    alpha=alpha,
    beta=beta,
    temperature=temperature,
  )
