"""Activation boundaries (Heo et al., AAAI 2019; RepDistiller ``ABLoss`` + ``Connector``).

``ab(layers='all')`` on the pre-activation taps ``preact_stage1..N``. RepDistiller uses AB only
in a 30-epoch init stage (connector + the student's feature layers, ``helper/pretrain.py``, β not
applied) and then trains 240 epochs with CE alone: preset ``'ab'``. In ``method.terms`` the term
trains jointly with CE (not RepDistiller's protocol).
"""

from __future__ import annotations

import flax.linen as nn

from kdjax import losses
from kdjax.errors import UserError
from kdjax.losses import connectors as conn_lib
from kdjax.methods.core import stage_layers
from kdjax.methods.registry import register_term


def _one_shape(x):
  return (1,) + tuple(int(v) for v in x.shape[1:])


class ABConnector(nn.Module):
  """RepDistiller's AB ``Connector`` list: one :class:`~kdjax.losses.connectors.ABConnector` per
  pre-activation stage (``ab1..abN``; identity when channels and height match, else conv + BN).
  When every stage is the identity the module holds one unused zero scalar
  ``identity_placeholder`` (it gets no gradient and stays 0)."""

  @nn.compact
  def __call__(self, s_taps, t_taps, train: bool = False):
    mods = []
    for i, (x, y) in enumerate(zip(s_taps, t_taps)):
      a, b = _one_shape(x), _one_shape(y)
      if len(a) != 4 or len(b) != 4:
        raise UserError(f"term ab: the taps must be NHWC maps, got {a} and {b}.")
      if not (a[3] == b[3] and a[1] == b[1]):
        try:
          conn_lib.conv_reg_kind(a, b)
        except ValueError as e:
          raise UserError(
            f"term ab: the AB connector cannot bridge student preact_stage{i + 1} "
            f"{a[1:]} to teacher {b[1:]}: {e}"
          ) from None
      mods.append(conn_lib.ABConnector(a, b, name=f"ab{i + 1}"))
    if all(m.is_identity for m in mods):
      self.param("identity_placeholder", nn.initializers.zeros, ())
    return tuple(m(x, train) for m, x in zip(mods, s_taps))


def _taps(s_shapes, t_shapes, *, layers="all", **_):
  keys = stage_layers("ab", layers, s_shapes, t_shapes, prefix="preact_stage")
  return keys, keys


@register_term("ab", taps=_taps, connector=lambda **hp: ABConnector())
def ab_term(s, t, batch, *, connector=None, layers="all", margin: float = 1.0):
  """Activation-boundary hinge on the pre-activation taps ``layers`` ('all' =
  ``preact_stage1..N``) through the AB connector."""
  del batch, layers
  f_s, f_t = tuple(s.taps.values()), tuple(t.taps.values())
  return losses.ab(list(connector(f_s, f_t, train=True)), list(f_t), margin=margin)


PRESETS = {
  # RepDistiller helper/pretrain.py: 30 epochs of the AB hinge (weight 1: beta not applied) on
  # the AB connectors + the student's feature modules; then 240 epochs of CE alone.
  "ab": dict(
    ce_weight=1.0,
    terms={},
    trainable="student",
    init=dict(
      epochs=30,
      ce_weight=0.0,
      terms=dict(ab=dict(weight=1.0, margin=1.0)),
      trainable="student_features+connectors",
    ),
  ),
}
