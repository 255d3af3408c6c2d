r"""Rank-correlation terms ``spearman`` and ``kendall`` (:mod:`kdjax.losses.ranking_corr`).

CANDIDATES for the calibration paper's ranking loss (Fan et al., ICML 2024; candidate 5 of the
ranking slot, cf. RKKD, ICML 2025), beside ``listmle`` / ``pairwise_ranking`` / ``pld``
(:mod:`kdjax.methods.logit`): **not verified as the paper's loss**. Used by
``configs/cifar100/calibration_kd.py``-style configs (``configs/cifar100/calibration_population.py``).
"""

from __future__ import annotations

from kdjax import checks
from kdjax.losses import ranking_corr
from kdjax.methods.registry import register_term


@register_term("spearman")
def spearman_term(s, t, batch, *, temperature: float = 0.1):
  """CANDIDATE: ``1 − ρ_Spearman(soft_rank(z_s; τ), rank(z_t))`` per example."""
  del batch
  checks.positive("term spearman: temperature", temperature)
  return ranking_corr.spearman_loss(s.logits, t.logits, temperature=temperature)


@register_term("kendall")
def kendall_term(s, t, batch, *, temperature: float = 0.1):
  """CANDIDATE: ``1 − τ_Kendall`` with the student's signs relaxed by ``tanh(Δz_s/τ)``."""
  del batch
  checks.positive("term kendall: temperature", temperature)
  return ranking_corr.kendall_loss(s.logits, t.logits, temperature=temperature)
