"""Information-theoretic representation distillation (Miles et al., BMVC 2022; zkxufo/TTM
``ITLoss``): ``λ_corr·L_corr + λ_mutual·L_mi`` on the ``pooled`` features, the student mapped to
the teacher's width by a trainable linear embedding (the connector :class:`ITRDConnector`).
zkxufo/TTM runs it on ``preact=True`` features; ``pooled`` is the same tensor for every kdjax
model (pooling happens after the last ReLU).
"""

from __future__ import annotations

import flax.linen as nn

from kdjax import checks, losses
from kdjax.losses import connectors as conn_lib
from kdjax.methods.registry import register_term


class ITRDConnector(nn.Module):
  """RepDistiller's ``LinearEmbed`` from the student's ``pooled`` width to the teacher's
  (parameters ``linear/{kernel, bias}``); ``__call__((f_s,), (f_t,), train)`` -> ``(B, D_t)``."""

  @nn.compact
  def __call__(self, s_taps, t_taps, train: bool = False):
    del train
    (f_s,), (f_t,) = s_taps, t_taps
    x = f_s.reshape(f_s.shape[0], -1)
    return nn.Dense(
      int(f_t.shape[-1]),
      kernel_init=conn_lib.torch_default_kernel,
      bias_init=conn_lib.torch_default_bias(x.shape[-1]),
      name="linear",
    )(x)


def _connector(*, corr_weight=2.0, mi_weight=1.0, alpha=1.5, **_):
  checks.positive("term itrd: alpha", alpha)
  checks.nonnegative("term itrd: corr_weight", corr_weight)
  checks.nonnegative("term itrd: mi_weight", mi_weight)
  return ITRDConnector()


@register_term("itrd", student_taps=("pooled",), teacher_taps=("pooled",), connector=_connector)
def itrd_term(
  s,
  t,
  batch,
  *,
  connector=None,
  corr_weight: float = 2.0,
  mi_weight: float = 1.0,
  alpha: float = 1.5,
):
  """ITRD on the ``pooled`` features (see the module doc)."""
  del batch
  f_s, f_t = s.taps["pooled"], t.taps["pooled"]
  return losses.itrd(
    f_s, connector((f_s,), (f_t,)), f_t, corr_weight=corr_weight, mi_weight=mi_weight, alpha=alpha
  )


def itrd_preset(
  *, mi_weight: float = 1.0, alpha: float = 1.5, corr_weight: float = 2.0, weight: float = 1.0
):
  """ITRD alone (zkxufo/TTM ``-r 1 -a 0 -b 1``, ``--lambda_corr 2``); ``mi_weight`` and
  ``alpha`` are per pair (paper Appendix A.5)."""
  return dict(
    ce_weight=1.0,
    terms=dict(itrd=dict(weight=weight, corr_weight=corr_weight, mi_weight=mi_weight, alpha=alpha)),
  )


PRESETS = {"itrd": itrd_preset}
