r"""Logit standardisation terms: KD + LS (``lskd``) and DKD + LS (``lsdkd``).

Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024
(sunshangquan/logit-standardization-KD). The Z-score pre-process ``Z(z) = (z − mean) /
(1e-7 + std)`` is applied to teacher and student logits before the unchanged KD / DKD loss
(:mod:`kdjax.losses.standardize`); ``temperature`` is the paper's *base* temperature.

Presets (``kdjax.methods.preset``) with the reference's ``tools/train.py`` defaults
(``--base-temp 2 --kd-weight 9``):

* ``lskd``: ``0.1 · CE + 9 · lskd(τ = 2)`` (the repo's KD CE weight 0.1);
* ``lsdkd``: ``1.0 · CE + lsdkd(α = 9, β = 72, τ = 2, warm-up 20)`` (mdistiller's DKD α 1, β 8
  multiplied by the kd weight 9).

Per-pair settings and published numbers: ``configs/cifar100/lskd.py``.
"""

from __future__ import annotations

import jax.numpy as jnp

from kdjax import checks, losses
from kdjax.methods.registry import register_term

DEFAULT_BASE_TEMPERATURE = 2.0


@register_term("lskd")
def lskd_term(s, t, batch, *, temperature: float = DEFAULT_BASE_TEMPERATURE, t2_scale: bool = True):
  """KD on Z-scored logits: ``τ² KL(softmax(Z(z_t)/τ) ‖ softmax(Z(z_s)/τ))`` per example
  (logit-standardization-KD ``kd_loss(..., logit_stand=True)``; base temperature τ = 2)."""
  del batch
  return losses.lskd(s.logits, t.logits, temperature=temperature, t2_scale=t2_scale)


@register_term("lsdkd")
def lsdkd_term(
  s,
  t,
  batch,
  *,
  alpha: float = 9.0,
  beta: float = 72.0,
  temperature: float = DEFAULT_BASE_TEMPERATURE,
  warmup_epochs: int = 20,
):
  """DKD on Z-scored logits, scaled by ``min(epoch / warmup_epochs, 1)`` (logit-standardization-KD
  ``dkd_loss(..., logit_stand=True)``; defaults α 9, β 72, τ 2, warm-up 20; 0 = no warm-up)."""
  checks.nonnegative("term lsdkd: warmup_epochs", warmup_epochs)
  loss = losses.lsdkd(
    s.logits, t.logits, batch.labels, alpha=alpha, beta=beta, temperature=temperature
  )
  if warmup_epochs:
    loss = loss * losses.dkd_warmup_factor(jnp.asarray(batch.epoch, jnp.float32), warmup_epochs)
  return loss


def lskd_preset(*, base_temp: float = 2.0, kd_weight: float = 9.0, ce_weight: float = 0.1):
  """KD + LS as ``tools/train.py --logit-stand --base-temp τ --kd-weight w`` sets it on the repo's
  KD config: ``ce_weight · CE + w · lskd(τ)`` (the repo's KD CE weight 0.1)."""
  return dict(
    name="lskd", ce_weight=ce_weight, terms=dict(lskd=dict(weight=kd_weight, temperature=base_temp))
  )


def lsdkd_preset(
  *,
  base_temp: float = 2.0,
  kd_weight: float = 9.0,
  beta: float = 8.0,
  alpha: float = 1.0,
  warmup_epochs: int = 20,
  ce_weight: float = 1.0,
):
  """DKD + LS as ``tools/train.py --logit-stand --base-temp τ --kd-weight w`` sets it on
  mdistiller's DKD config (α₀ = ``alpha``, β₀ = ``beta``): ``ce_weight · CE + min(epoch/20, 1) ·
  lsdkd(α = w·α₀, β = w·β₀, τ)``."""
  return dict(
    name="lsdkd",
    ce_weight=ce_weight,
    terms=dict(
      lsdkd=dict(
        weight=1.0,
        alpha=kd_weight * alpha,
        beta=kd_weight * beta,
        temperature=base_temp,
        warmup_epochs=warmup_epochs,
      )
    ),
  )


PRESETS = {"lskd": lskd_preset, "lsdkd": lsdkd_preset}
