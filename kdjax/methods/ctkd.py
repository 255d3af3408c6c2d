"""CTKD term: KD at a learned, gradient-reversed global temperature (Li et al., AAAI 2023;
zhengli97/CTKD, ``--have_mlp 1 --mlp_name global``).

``ctkd``: ``τ² KL(softmax(z_t/τ) ‖ softmax(z_s/τ))`` per example with ``τ = t_start + t_end ·
sigmoid(GRL_λ(θ))`` (:mod:`kdjax.losses.ctkd`). The connector :class:`GlobalTemperature` holds
``θ`` (init 1; trained with the student by the same optimiser, weight decay included, as the
reference's ``trainable_list``); ``λ`` follows the cosine curriculum of the epoch (0 -> −1 over
``lambda_epochs`` = 10). ``standardize=True`` Z-scores both logits first (CTKD + logit
standardisation, sunshangquan/logit-standardization-KD ``CTKD/``).

Presets: ``ctkd`` (the reference's ``-r 0.1 -a 0.9 -b 0``) and ``ctkd_ls`` (logit-standardization-KD's
``-r 0.1 -a 9``, standardised). Per-pair configs and published numbers: ``configs/cifar100/ctkd.py``.
"""

from __future__ import annotations

import flax.linen as nn

from kdjax import checks, losses
from kdjax.errors import UserError
from kdjax.methods.registry import register_term

T_START, T_END, THETA_INIT = 1.0, 20.0, 1.0
LAMBDA_MAX, LAMBDA_MIN, LAMBDA_EPOCHS = 0.0, -1.0, 10


class GlobalTemperature(nn.Module):
  """CTKD's ``Global_T``: one parameter ``global_t`` (shape ``(1,)``, init ``init_value``);
  ``__call__((), (), train, lam)`` -> the scalar temperature ``t_start + t_end · sigmoid(GRL_λ(θ))``."""

  t_start: float = T_START
  t_end: float = T_END
  init_value: float = THETA_INIT

  @nn.compact
  def __call__(self, s_taps=(), t_taps=(), train: bool = False, lam=0.0):
    del s_taps, t_taps, train
    theta = self.param("global_t", nn.initializers.constant(self.init_value), (1,))
    return losses.ctkd_temperature(theta, lam, t_start=self.t_start, t_end=self.t_end)


def _connector(
  *, t_start: float = T_START, t_end: float = T_END, init_value: float = THETA_INIT, **_
):
  t_start = checks.nonnegative("term ctkd: t_start", t_start)
  t_end = checks.nonnegative("term ctkd: t_end", t_end)
  checks.positive("term ctkd: t_start + t_end (the temperature's upper bound)", t_start + t_end)
  return GlobalTemperature(t_start, t_end, checks.finite("term ctkd: init_value", init_value))


@register_term("ctkd", connector=_connector)
def ctkd_term(
  s,
  t,
  batch,
  *,
  connector=None,
  t_start: float = T_START,
  t_end: float = T_END,
  init_value: float = THETA_INIT,
  lambda_max: float = LAMBDA_MAX,
  lambda_min: float = LAMBDA_MIN,
  lambda_epochs: float = LAMBDA_EPOCHS,
  standardize: bool = False,
):
  """CTKD: KD at the learned temperature ``t_start + t_end · sigmoid(GRL_λ(θ))``, ``λ`` the cosine
  curriculum ``lambda_max -> lambda_min`` over ``lambda_epochs`` (zhengli97/CTKD defaults 1, 20,
  0 -> −1 over 10 epochs); ``standardize`` Z-scores the logits (CTKD + LS)."""
  del t_start, t_end, init_value
  if not isinstance(standardize, bool):
    raise UserError(f"term ctkd: standardize must be a bool, got {standardize!r}.")
  lam = losses.ctkd_lambda(
    batch.epoch, max_value=lambda_max, min_value=lambda_min, num_loops=lambda_epochs
  )
  temperature = connector((), (), train=True, lam=lam)
  return losses.ctkd(s.logits, t.logits, temperature, standardize=standardize)


def ctkd_preset(*, ce_weight: float = 0.1, weight: float = 0.9, standardize: bool = False):
  """zhengli97/CTKD ``scripts/run_cifar_distill.sh``: ``-r 0.1 -a 0.9 -b 0``, global temperature,
  ``t_start 1 t_end 20``, cosine curriculum ``0 -> -1`` over 10 epochs."""
  return dict(
    name="ctkd", ce_weight=ce_weight, terms=dict(ctkd=dict(weight=weight, standardize=standardize))
  )


def ctkd_ls_preset(*, ce_weight: float = 0.1, weight: float = 9.0):
  """logit-standardization-KD ``CTKD/scripts/run_cifar_distill.sh``: ``-r 0.1 -a 9``, Z-scored
  logits (its ``train_student.py`` standardises unless ``--logit_stand`` is given)."""
  out = ctkd_preset(ce_weight=ce_weight, weight=weight, standardize=True)
  out["name"] = "ctkd_ls"
  return out


PRESETS = {"ctkd": ctkd_preset, "ctkd_ls": ctkd_ls_preset}
