"""SFTN stage 1: the student-friendly teacher's branch terms (Park et al., NeurIPS 2021).

The model ``'sftn'`` (:mod:`kdjax.models`) returns the teacher logits and ``taps['branch_logits']``
(``(R, B, K)``, one student branch per stage boundary); the term below trains them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import checks, losses
from kdjax.methods.registry import register_term
from kdjax.errors import UserError

_SFTN_KL_DIRECTIONS = ("teacher_to_branch", "branch_to_teacher")
_SFTN_BRANCH_REDUCE = ("mean", "sum")


@register_term("sftn", student_taps=("branch_logits",), needs_teacher=False)
def sftn_term(
  s,
  t,
  batch,
  *,
  kl_weight: float = 3.0,
  ce_weight: float = 1.0,
  temperature: float = 1.0,
  kl_direction: str = "teacher_to_branch",
  t2_scale: bool = True,
  detach_teacher_logits_in_kl: bool = False,
  branch_reduce: str = "mean",
):
  """SFTN branch terms on the model ``'sftn'`` (``s.logits`` = teacher logits ``z_T``,
  ``s.taps['branch_logits']`` = ``(R, B, K)`` branch logits ``z_R^i``), per example:
  ``ce_weight · red_i CE(z_R^i, y) + kl_weight · red_i τ² KL(p_T^τ ‖ p_R^{i,τ})`` with ``red`` the
  mean (or sum) over branches; ``kl_direction='branch_to_teacher'`` uses ``KL(p_R ‖ p_T)``.
  ``method.ce_weight`` is λ_T; give this term weight 1.

  Gradients (``tests/test_sftn_gradients.py``): the branch CE reaches bridges and branches (and
  the teacher trunk unless the model's ``detach_branch_input``); the KL also reaches the whole
  teacher through ``z_T`` unless ``detach_teacher_logits_in_kl``. The defaults (KL live into
  ``z_T``) are kimyuji/SFTN_kd's ``DistillKL(logit_s, logit_t)``. Training from scratch, that
  edge can collapse the teacher onto the untrained branches early on. At init its gradient on the
  teacher head is 1.5–2x the teacher CE's at λ_R^KL = 3, τ = 1, and short runs stay near chance
  (docs/sftn_fmnist). Cutting it (``detach_teacher_logits_in_kl=True``) avoids the collapse but
  departs from the reference."""
  del t
  if kl_direction not in _SFTN_KL_DIRECTIONS:
    raise UserError(
      f"sftn kl_direction must be one of {_SFTN_KL_DIRECTIONS}, got {kl_direction!r}."
    )
  if branch_reduce not in _SFTN_BRANCH_REDUCE:
    raise UserError(
      f"sftn branch_reduce must be one of {_SFTN_BRANCH_REDUCE}, got {branch_reduce!r}."
    )
  checks.nonnegative("sftn kl_weight", kl_weight)
  checks.nonnegative("sftn ce_weight", ce_weight)
  for name, v in (
    ("t2_scale", t2_scale),
    ("detach_teacher_logits_in_kl", detach_teacher_logits_in_kl),
  ):
    if not isinstance(v, bool):
      raise UserError(f"sftn {name} must be a bool, got {v!r}.")
  if "branch_logits" not in s.taps:
    raise UserError("the sftn term needs taps['branch_logits']: train model 'sftn'.")
  z_t = s.logits
  z_b = s.taps["branch_logits"]
  if z_b.ndim != 3 or tuple(z_b.shape[1:]) != tuple(z_t.shape):
    raise UserError(
      f"sftn: branch_logits must be (R, B, K) with (B, K) = {tuple(z_t.shape)}, "
      f"got {tuple(z_b.shape)}."
    )
  z_kl = jax.lax.stop_gradient(z_t) if detach_teacher_logits_in_kl else z_t
  k = z_t.shape[-1]
  target = jax.nn.one_hot(batch.labels, k, dtype=jnp.float32)
  mix_labels = getattr(batch, "mix_labels", None)
  if mix_labels is not None:  # mixup: the same label mixing as the main CE
    lam = batch.mix_lam
    target = lam * target + (1.0 - lam) * jax.nn.one_hot(mix_labels, k, dtype=jnp.float32)
  ce, kl = [], []
  for r in range(z_b.shape[0]):
    z_r = z_b[r]
    ce.append(losses.cross_entropy(z_r.astype(jnp.float32), target))
    student, teacher = (z_r, z_kl) if kl_direction == "teacher_to_branch" else (z_kl, z_r)
    kl.append(
      losses.kl_per_example(
        student,
        teacher,
        teacher_temperature=temperature,
        student_temperature=temperature,
        t2_scale=t2_scale,
      )
    )
  reduce = jnp.mean if branch_reduce == "mean" else jnp.sum
  return ce_weight * reduce(jnp.stack(ce), axis=0) + kl_weight * reduce(jnp.stack(kl), axis=0)
