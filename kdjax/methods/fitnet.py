"""FitNet hints (Romero et al., ICLR 2015; RepDistiller ``HintLoss`` + ``ConvReg``).

``fitnet(hint_layer=2)``: per-example MSE between ``ConvReg(student tap)`` and the teacher's tap,
the tap being ``stem`` for ``hint_layer = 0`` and ``stage<k>`` otherwise (RepDistiller
``--hint_layer``, default 2). The regressor (conv + BN + ReLU) is the term's connector, trained
with the student in one stage as RepDistiller does.
"""

from __future__ import annotations

import flax.linen as nn

from kdjax import checks, losses
from kdjax.errors import UserError
from kdjax.losses import connectors as conn_lib
from kdjax.methods.core import stage_layers
from kdjax.methods.registry import register_term

DEFAULT_HINT_LAYER = 2


def _one_shape(x):
  return (1,) + tuple(int(v) for v in x.shape[1:])


class FitNetConnector(nn.Module):
  """``ConvReg`` from the student's hint tap to the teacher's (parameters under ``reg/``);
  ``__call__((f_s,), (f_t,), train)`` -> the regressed student map (``f_t`` gives the shape)."""

  @nn.compact
  def __call__(self, s_taps, t_taps, train: bool = False):
    (x,), (y,) = s_taps, t_taps
    ss, ts = _one_shape(x), _one_shape(y)
    if len(ss) != 4 or len(ts) != 4:
      raise UserError(f"term fitnet: the hint taps must be NHWC maps, got {ss} and {ts}.")
    try:
      conn_lib.conv_reg_kind(ss, ts)
    except ValueError as e:
      raise UserError(
        f"term fitnet: ConvReg cannot bridge student {ss[1:]} to teacher {ts[1:]} (NHWC): {e}"
      ) from None
    return conn_lib.ConvReg(ss, ts, name="reg")(x, train)


def _hint_tap(s_shapes, t_shapes, hint_layer):
  hint_layer = checks.integer(
    "term fitnet: hint_layer (0 = stem, k = stage k)", hint_layer, minimum=0, strict=True
  )
  if hint_layer == 0:
    return "stem"
  return stage_layers("fitnet", (hint_layer,), s_shapes, t_shapes)[0]


def _taps(s_shapes, t_shapes, *, hint_layer=DEFAULT_HINT_LAYER, **_):
  key = _hint_tap(s_shapes, t_shapes, hint_layer)
  return (key,), (key,)


@register_term("fitnet", taps=_taps, connector=lambda **hp: FitNetConnector())
def fitnet_term(s, t, batch, *, connector=None, hint_layer: int = DEFAULT_HINT_LAYER):
  """FitNet hint: ``MSE(ConvReg(f_s), f_t)`` per example at ``hint_layer`` (0 = ``stem``, k =
  ``stage<k>``; RepDistiller ``--hint_layer``, default 2)."""
  del batch, hint_layer
  (f_s,), (f_t,) = s.taps.values(), t.taps.values()
  return losses.fitnet(connector((f_s,), (f_t,), train=True), f_t)


PRESETS = {
  # RepDistiller: -r 1 -a 0 -b 100 --hint_layer 2
  "fitnet": dict(ce_weight=1.0, terms=dict(fitnet=dict(weight=100.0, hint_layer=2))),
}
