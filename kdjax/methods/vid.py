"""Variational information distillation (Ahn et al., CVPR 2019; RepDistiller ``VIDLoss``).

``vid(layers='all')``: one ``VIDLoss(s_C, t_C, t_C)`` per stage ``stage1..N``, summed; the
regressors and per-channel variances are the term's connector :class:`VIDConnector`.
"""

from __future__ import annotations

import flax.linen as nn

from kdjax import checks, losses
from kdjax.errors import UserError
from kdjax.losses import connectors as conn_lib
from kdjax.methods.core import stage_layers
from kdjax.methods.registry import register_term


class VIDConnector(nn.Module):
  """One :class:`~kdjax.losses.connectors.VIDRegressor` per stage (``vid1..vidN``), sized by the
  teacher's maps; ``__call__(s_maps, t_maps, train)`` -> tuple of ``(mu, log_scale)``."""

  init_pred_var: float = 5.0
  eps: float = 1e-5

  @nn.compact
  def __call__(self, s_taps, t_taps, train: bool = False):
    del train
    out = []
    for i, (x, y) in enumerate(zip(s_taps, t_taps)):
      if x.ndim != 4 or y.ndim != 4:
        raise UserError(f"term vid: stage taps must be NHWC maps, got {x.shape} and {y.shape}.")
      if (x.shape[1] - y.shape[1]) * (x.shape[2] - y.shape[2]) < 0:
        raise UserError(
          f"term vid: cannot match the spatial sizes of student stage{i + 1} "
          f"{tuple(x.shape[1:])} and teacher {tuple(y.shape[1:])} (one is taller, "
          f"the other wider)."
        )
      c = int(y.shape[3])
      reg = conn_lib.VIDRegressor(c, c, self.init_pred_var, self.eps, name=f"vid{i + 1}")
      out.append(reg(x, target_hw=tuple(y.shape[1:3])))
    return tuple(out)


def _connector(*, init_pred_var=5.0, eps=1e-5, **_):
  eps = checks.positive("term vid: eps", eps)
  init_pred_var = checks.in_range("term vid: init_pred_var", init_pred_var, eps, open_lo=True)
  return VIDConnector(init_pred_var, eps)


def _taps(s_shapes, t_shapes, *, layers="all", **_):
  keys = stage_layers("vid", layers, s_shapes, t_shapes)
  return keys, keys


@register_term("vid", taps=_taps, connector=_connector)
def vid_term(
  s, t, batch, *, connector=None, layers="all", init_pred_var: float = 5.0, eps: float = 1e-5
):
  """VID summed over the stage taps ``layers`` ('all' = ``stage1..N``)."""
  del batch, layers, init_pred_var
  f_s, f_t = tuple(s.taps.values()), tuple(t.taps.values())
  total = 0.0
  for (mu, log_scale), y in zip(connector(f_s, f_t, train=True), f_t):
    total = total + losses.vid(mu, log_scale, y, eps=eps)
  return total


PRESETS = {
  # RepDistiller: -r 1 -a 0 -b 1
  "vid": dict(ce_weight=1.0, terms=dict(vid=dict(weight=1.0, init_pred_var=5.0, eps=1e-5))),
}
