"""Built-in method terms: thin adapters from (student, teacher, batch) to ``kdjax.losses``.

Each adapter's keyword-only arguments are the term's hyper-parameters (validated by name at
config time). Adding a method = one loss in ``kdjax.losses`` + one adapter here + configs.
"""
from __future__ import annotations

from kdjax import losses
from kdjax.methods.base import register_term


@register_term("kd")
def kd_term(s, t, batch, *, temperature: float = 4.0, t2_scale: bool = True):
  """Hinton KD, ``T^2 KL(p_t^T || p_s^T)`` per example (RepDistiller ``DistillKL``)."""
  del batch
  return losses.kd(s.logits, t.logits, temperature=temperature, t2_scale=t2_scale)
