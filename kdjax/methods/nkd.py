"""NKD term (normalized KD; Yang et al., ICCV 2023; yzd-v/cls_KD ``NKDLoss``).

``nkd(temperature, gamma)``: ``−p_y log q_y − γ T² Σ_{k≠y} p̂_k log q̂_k`` per example
(:func:`kdjax.losses.nkd`), added to the student's CE (weight 1) as the reference's distiller
does. Preset ``nkd``: the reference's CIFAR-100 setting T = 3, γ = 3.5
(``configs/distillers/cifar100/res34_distill_res18_cifar.py``); its ImageNet setting is
``preset('nkd', temperature=1.0, gamma=1.5)``.

No CIFAR-100 config: the reference's only CIFAR-100 pair is mmcls's ResNet-34 -> ResNet-18
(CIFAR variants kdjax's zoo lacks) and its README publishes ImageNet numbers only
(ResNet-34 -> ResNet-18 71.96, ResNet-50 -> MobileNet 72.58).
"""

from __future__ import annotations

from kdjax import losses
from kdjax.methods.registry import register_term


@register_term("nkd")
def nkd_term(s, t, batch, *, temperature: float = 1.0, gamma: float = 1.5):
  """Normalized KD: target part at T = 1 plus ``γ T²`` times the normalized non-target CE
  (yzd-v/cls_KD ``NKDLoss``; defaults T 1, γ 1.5)."""
  return losses.nkd(s.logits, t.logits, batch.labels, temperature=temperature, gamma=gamma)


def nkd_preset(*, temperature: float = 3.0, gamma: float = 3.5, ce_weight: float = 1.0):
  """CE + NKD at the reference's CIFAR-100 setting (T 3, γ 3.5)."""
  return dict(
    name="nkd",
    ce_weight=ce_weight,
    terms=dict(nkd=dict(weight=1.0, temperature=temperature, gamma=gamma)),
  )


PRESETS = {"nkd": nkd_preset}
