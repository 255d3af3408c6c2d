"""Logit terms: KD, TTM, WTTM, DKD, DIST, the general KL and the ranking losses.

Each adapter maps ``(student, teacher, batch)`` to a pure per-example loss of
:mod:`kdjax.losses.logits`; its keyword-only arguments are the term's hyper-parameters. No taps,
no connectors. Named recipes: :data:`PRESETS` (see :func:`kdjax.methods.preset`).
"""

from __future__ import annotations

import jax.numpy as jnp

from kdjax import losses
from kdjax.methods.registry import register_term


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
def dkd_term(
  s,
  t,
  batch,
  *,
  alpha: float = 1.0,
  beta: float = 8.0,
  temperature: float = 4.0,
  warmup_epochs: int = 20,
):
  """Decoupled KD (mdistiller), scaled by the warm-up factor ``min(epoch / warmup, 1)``."""
  loss = losses.dkd(
    s.logits, t.logits, batch.labels, alpha=alpha, beta=beta, temperature=temperature
  )
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
def kl_term(
  s,
  t,
  batch,
  *,
  teacher_temperature: float,
  student_temperature: float,
  t2_scale: bool = True,
  form: str = "kl",
):
  """The general KL of methods.md 0.2 (e.g. calibration paper: tau = 1.8 and ce_weight = 0)."""
  del batch
  return losses.kl_per_example(
    s.logits,
    t.logits,
    teacher_temperature=teacher_temperature,
    student_temperature=student_temperature,
    t2_scale=t2_scale,
    form=form,
  )


# ---- named recipes (kdjax.methods.preset) ----------------------------------------------------
def kd_preset(*, ce_weight: float = 0.1, weight: float = 0.9, temperature: float = 4.0):
  """Hinton KD with RepDistiller's weights (``-r 0.1 -a 0.9``, T = 4)."""
  return dict(
    name="kd",
    ce_weight=ce_weight,
    terms=dict(kd=dict(weight=weight, temperature=temperature, t2_scale=True)),
  )


def ttm_preset(*, gamma: float, beta: float, weighted: bool = False):
  """(W)TTM, zkxufo/TTM ``train_student.py``: ``-r 1 -a 0 -b beta``, the TTM/WTTM term alone
  with exponent ``gamma`` = 1/T (no KD term; per-pair ``gamma`` and ``beta`` from the paper)."""
  name = "wttm" if weighted else "ttm"
  return dict(name=name, ce_weight=1.0, terms={name: dict(weight=beta, gamma=gamma)})


def dkd_preset(
  *, beta: float, alpha: float = 1.0, temperature: float = 4.0, warmup_epochs: int = 20
):
  """DKD (mdistiller ``DKD``): CE 1, ``alpha`` TCKD + ``beta`` NCKD at T = 4, warm-up 20."""
  return dict(
    name="dkd",
    ce_weight=1.0,
    terms=dict(
      dkd=dict(
        weight=1.0, alpha=alpha, beta=beta, temperature=temperature, warmup_epochs=warmup_epochs
      )
    ),
  )


def dist_preset(
  *,
  ce_weight: float = 1.0,
  weight: float = 2.0,
  beta: float = 1.0,
  gamma: float = 1.0,
  temperature: float = 4.0,
):
  """DIST (Huang et al. 2022): CE + ``weight`` · (β inter + γ intra) at T = 4."""
  return dict(
    name="dist",
    ce_weight=ce_weight,
    terms=dict(dist=dict(weight=weight, beta=beta, gamma=gamma, temperature=temperature)),
  )


PRESETS = {
  "kd": kd_preset,
  "ttm": ttm_preset,
  "wttm": lambda **kw: ttm_preset(weighted=True, **kw),
  "dkd": dkd_preset,
  "dist": dist_preset,
}
