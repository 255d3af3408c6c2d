r"""CTKD: curriculum temperature for knowledge distillation (global temperature), per example.

Li, Li, Yang, Zhao, Song, Luo, Li, Yang, "Curriculum Temperature for Knowledge Distillation",
AAAI 2023 (code: zhengli97/CTKD ``models/temp_global.py``, ``helper/loops.py``,
``train_student.py``; also in sunshangquan/logit-standardization-KD ``CTKD/``). The KD temperature
is a learnable parameter ``θ`` (the trainable connector of the ``ctkd`` term) passed through a
gradient-reversal layer, so the student minimises the KD loss while ``θ`` *maximises* it, with a
difficulty ``λ`` that grows along an easy-to-hard curriculum:

  ``τ = t_start + t_end · sigmoid(GRL_λ(θ))``  (``t_start`` 1, ``t_end`` 20, ``θ`` init 1),
  ``L_b = τ² · KL(softmax(z_t/τ) ‖ softmax(z_s/τ))``,
  ``λ(epoch) = min + (max − min) · (cos(π · clip(epoch, 0, n) / n) + 1) / 2``

with the reference's ``--cosine_decay 1 --decay_max 0 --decay_min -1 --decay_loops 10`` (epoch
counted from 1): ``λ`` goes from ≈ 0 to −1 over the first 10 epochs. ``GRL_λ`` is the identity
forward and multiplies the incoming gradient by ``λ`` (the reference's
``GradientReversalFunction``: ``dx = λ · grad``; the sign reversal comes from λ ≤ 0).

The batch mean of :func:`ctkd` equals the reference's ``DistillKL()(z_s, z_t, τ)``
(``KLDivLoss(reduction='batchmean') · T · T``); with ``standardize=True`` it equals
``DistillKL_logit_stand`` (the logit-standardization-KD variant: Z-scored logits, see
:mod:`kdjax.losses.standardize`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from kdjax import checks
from kdjax.losses.logits import kd
from kdjax.losses.standardize import standardize_logits

__all__ = ["gradient_reversal", "ctkd_lambda", "ctkd_temperature", "ctkd"]


@jax.custom_vjp
def gradient_reversal(x: jax.Array, lam: jax.Array) -> jax.Array:
  """Identity forward; backward multiplies the cotangent by ``lam`` (no gradient to ``lam``)."""
  return x


def _grl_fwd(x, lam):
  return x, lam


def _grl_bwd(lam, g):
  return (jnp.asarray(lam, g.dtype) * g, jnp.zeros_like(lam))


gradient_reversal.defvjp(_grl_fwd, _grl_bwd)


def ctkd_lambda(
  epoch, *, max_value: float = 0.0, min_value: float = -1.0, num_loops: float = 10.0
) -> jax.Array:
  """The reference's ``CosineDecay(max_value, min_value, num_loops).get_value(epoch)``."""
  checks.positive("ctkd_lambda: num_loops", num_loops)
  i = jnp.clip(jnp.asarray(epoch, jnp.float32), 0.0, float(num_loops))
  value = (jnp.cos(i * math.pi / num_loops) + 1.0) * 0.5
  return value * (max_value - min_value) + min_value


def ctkd_temperature(
  global_t: jax.Array, lam, *, t_start: float = 1.0, t_end: float = 20.0
) -> jax.Array:
  """``t_start + t_end · sigmoid(GRL_λ(θ))`` for the ``(1,)`` parameter ``θ``; returns a scalar."""
  theta = gradient_reversal(jnp.asarray(global_t), jnp.asarray(lam, jnp.result_type(global_t)))
  return (t_start + t_end * jax.nn.sigmoid(theta)).reshape(())


def ctkd(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  temperature: jax.Array,
  *,
  standardize: bool = False,
) -> jax.Array:
  """KD at the learned temperature ``τ`` (a scalar array), per example:
  ``τ² · KL(softmax(z_t/τ) ‖ softmax(z_s/τ))`` (Z-scored logits if ``standardize``). Gradients
  flow to ``τ`` (and, through :func:`ctkd_temperature`, reversed to ``θ``)."""
  if standardize:
    student_logits = standardize_logits(student_logits)
    teacher_logits = standardize_logits(teacher_logits)
  return kd(student_logits, teacher_logits, temperature=temperature)
