"""Built-in method terms: thin adapters from (student, teacher, batch) to ``kdjax.losses``.

Each adapter's keyword-only arguments are the term's hyper-parameters (validated by name at
config time). Adding a method = one loss in ``kdjax.losses`` + one adapter here + configs.
"""
from __future__ import annotations

import jax.numpy as jnp

from kdjax import losses
from kdjax.methods.base import register_term


@register_term("kd")
def kd_term(s, t, batch, *, temperature: float = 4.0, t2_scale: bool = True):
  """Hinton KD, ``T^2 KL(p_t^T || p_s^T)`` per example (RepDistiller ``DistillKL``)."""
  del batch
  return losses.kd(s.logits, t.logits, temperature=temperature, t2_scale=t2_scale)


@register_term("ttm")
def ttm_term(s, t, batch, *, gamma: float):
  """Transformed teacher matching, ``KL(softmax(gamma z_t) || softmax(z_s))`` (zkxufo/TTM)."""
  del batch
  return losses.ttm(s.logits, t.logits, gamma=gamma)


@register_term("wttm")
def wttm_term(s, t, batch, *, gamma: float):
  """Weighted TTM: the TTM term weighted per sample by ``U_gamma(p_t)`` (zkxufo/TTM)."""
  del batch
  return losses.wttm(s.logits, t.logits, gamma=gamma)


@register_term("dkd")
def dkd_term(s, t, batch, *, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
             warmup_epochs: int = 20):
  """Decoupled KD (mdistiller), scaled by the warm-up factor ``min(epoch / warmup, 1)``."""
  loss = losses.dkd(s.logits, t.logits, batch.labels, alpha=alpha, beta=beta,
                    temperature=temperature)
  if warmup_epochs:
    loss = loss * losses.dkd_warmup_factor(jnp.asarray(batch.epoch, jnp.float32), warmup_epochs)
  return loss


@register_term("dist")
def dist_term(s, t, batch, *, beta: float = 1.0, gamma: float = 1.0, temperature: float = 4.0):
  """DIST: inter- and intra-class Pearson relations (Huang et al. 2022)."""
  del batch
  return losses.dist(s.logits, t.logits, beta=beta, gamma=gamma, temperature=temperature)


@register_term("listmle")
def listmle_term(s, t, batch, *, top_k=None):
  """Plackett-Luce / ListMLE on the teacher's class order (calibration-insensitive ranking)."""
  del batch
  return losses.listmle(s.logits, t.logits, top_k=top_k)


@register_term("pairwise_ranking")
def pairwise_ranking_term(s, t, batch, *, temperature: float = 1.0, top_k=None):
  """Pairwise logistic ranking loss on the teacher's class order."""
  del batch
  return losses.pairwise_ranking(s.logits, t.logits, temperature=temperature, top_k=top_k)


@register_term("pld")
def pld_term(s, t, batch, *, teacher_temperature: float = 1.0):
  """Teacher-weighted list-wise ranking loss (PLD, candidate 4 of the ranking slot)."""
  return losses.pld(s.logits, t.logits, batch.labels, teacher_temperature=teacher_temperature)


@register_term("kl")
def kl_term(s, t, batch, *, teacher_temperature: float, student_temperature: float,
            t2_scale: bool = True, form: str = "kl"):
  """The general KL of methods.md 0.2 (e.g. calibration paper: tau = 1.8 and ce_weight = 0)."""
  del batch
  return losses.kl_per_example(s.logits, t.logits, teacher_temperature=teacher_temperature,
                               student_temperature=student_temperature, t2_scale=t2_scale,
                               form=form)


# ---- SFTN stage 1 (student-friendly teacher; Park et al., NeurIPS 2021; methods.md §4) --------
_SFTN_KL_DIRECTIONS = ("teacher_to_branch", "branch_to_teacher")
_SFTN_BRANCH_REDUCE = ("mean", "sum")


@register_term("sftn", student_taps=("branch_logits",), needs_teacher=False)
def sftn_term(s, t, batch, *, kl_weight: float = 3.0, ce_weight: float = 1.0,
              temperature: float = 1.0, kl_direction: str = "teacher_to_branch",
              t2_scale: bool = True, detach_teacher_logits_in_kl: bool = False,
              branch_reduce: str = "mean"):
  """SFTN branch terms on the model ``'sftn'`` (``s.logits`` = teacher logits ``z_T``,
  ``s.taps['branch_logits']`` = ``(R, B, K)`` branch logits ``z_R^i``), per example:
  ``ce_weight · red_i CE(z_R^i, y) + kl_weight · red_i τ² KL(p_T^τ ‖ p_R^{i,τ})`` with ``red`` the
  mean (or sum) over branches; ``kl_direction='branch_to_teacher'`` uses ``KL(p_R ‖ p_T)``.
  ``method.ce_weight`` is λ_T; give this term weight 1."""
  import jax  # noqa: PLC0415  (this block only)

  del t
  if kl_direction not in _SFTN_KL_DIRECTIONS:
    raise ValueError(f"sftn kl_direction must be one of {_SFTN_KL_DIRECTIONS}, got "
                     f"{kl_direction!r}.")
  if branch_reduce not in _SFTN_BRANCH_REDUCE:
    raise ValueError(f"sftn branch_reduce must be one of {_SFTN_BRANCH_REDUCE}, got "
                     f"{branch_reduce!r}.")
  for name, v in (("kl_weight", kl_weight), ("ce_weight", ce_weight)):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
      raise ValueError(f"sftn {name} must be a number >= 0, got {v!r}.")
  for name, v in (("t2_scale", t2_scale),
                  ("detach_teacher_logits_in_kl", detach_teacher_logits_in_kl)):
    if not isinstance(v, bool):
      raise ValueError(f"sftn {name} must be a bool, got {v!r}.")
  if "branch_logits" not in s.taps:
    raise ValueError("the sftn term needs taps['branch_logits']: train model 'sftn'.")
  z_t = s.logits
  z_b = s.taps["branch_logits"]
  if z_b.ndim != 3 or tuple(z_b.shape[1:]) != tuple(z_t.shape):
    raise ValueError(f"sftn: branch_logits must be (R, B, K) with (B, K) = {tuple(z_t.shape)}, "
                     f"got {tuple(z_b.shape)}.")
  z_kl = jax.lax.stop_gradient(z_t) if detach_teacher_logits_in_kl else z_t
  k = z_t.shape[-1]
  target = jax.nn.one_hot(batch.labels, k, dtype=jnp.float32)
  mix_labels = getattr(batch, "mix_labels", None)
  if mix_labels is not None:        # mixup: the same label mixing as the main CE
    lam = batch.mix_lam
    target = lam * target + (1.0 - lam) * jax.nn.one_hot(mix_labels, k, dtype=jnp.float32)
  ce, kl = [], []
  for r in range(z_b.shape[0]):
    z_r = z_b[r]
    ce.append(-jnp.sum(target * jax.nn.log_softmax(z_r.astype(jnp.float32), axis=-1), axis=-1))
    student, teacher = (z_r, z_kl) if kl_direction == "teacher_to_branch" else (z_kl, z_r)
    kl.append(losses.kl_per_example(student, teacher, teacher_temperature=temperature,
                                    student_temperature=temperature, t2_scale=t2_scale))
  reduce = jnp.mean if branch_reduce == "mean" else jnp.sum
  return ce_weight * reduce(jnp.stack(ce), axis=0) + kl_weight * reduce(jnp.stack(kl), axis=0)
