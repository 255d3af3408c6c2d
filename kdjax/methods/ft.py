"""Factor transfer (Kim et al., NeurIPS 2018; RepDistiller ``FactorTransfer(p1=2, p2=1)``).

``ft(layer='last')``: ``|φ(Translator(f_s)) − φ(Paraphraser(f_t))|`` on the last common stage.
RepDistiller first PRE-TRAINS the paraphraser for 30 epochs (MSE reconstruction of the teacher's
last stage, ``helper/pretrain.py``) and freezes it for the 240-epoch main stage: the init stage
runs the term ``ft_paraphraser`` under the SAME key (it shares the :class:`FTConnector`), with
``method.init.trainable = 'connectors/<key>/paraphraser'``, and the main term
``paraphraser_recon_weight = 0`` with ``method.trainable = 'student+connectors/<key>/translator'``
(preset ``'ft'``). Without an init stage, Translator and Paraphraser train from the first step:
the FT term reaches the paraphraser only through ``paraphraser_recon_weight · MSE(reconstruction,
f_t)`` (default 0.005 = 1/b for RepDistiller's b = 200) while its factor is detached in the FT
distance (``detach_teacher_factor``); a joint stand-in, not RepDistiller's protocol.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax import checks, losses
from kdjax.errors import UserError
from kdjax.losses import connectors as conn_lib
from kdjax.methods.core import stage_layer
from kdjax.methods.registry import register_term


def _one_shape(x):
  return (1,) + tuple(int(v) for v in x.shape[1:])


class FTConnector(nn.Module):
  """The student's ``Translator`` and the teacher's ``Paraphraser`` (RepDistiller
  ``Translator(s_shape, t_shape, k)``, ``Paraphraser(t_shape, k)``), parameters under
  ``translator/`` and ``paraphraser/``. ``__call__((f_s,), (f_t,), train)`` -> ``(factor_s,
  factor_t, reconstruction_t)``; with no student tap (``((), (f_t,))``, FT's init stage) the
  paraphraser alone: ``(None, factor_t, reconstruction_t)``."""

  k: float = 0.5

  @nn.compact
  def __call__(self, s_taps, t_taps, train: bool = False):
    (f_t,) = t_taps
    ts = _one_shape(f_t)
    if len(ts) != 4:
      raise UserError(f"term ft: the teacher tap must be an NHWC map, got {ts}.")
    if int(ts[3] * self.k) < 1:
      raise UserError(f"term ft: int(teacher channels {ts[3]} * k={self.k}) must be >= 1.")
    factor_s = None
    if s_taps:
      (f_s,) = s_taps
      ss = _one_shape(f_s)
      if len(ss) != 4 or (ss[1] - ts[1]) * (ss[2] - ts[2]) < 0:
        raise UserError(
          f"term ft: cannot match the student map {ss[1:]} to the teacher's {ts[1:]} (NHWC)."
        )
      factor_s = conn_lib.Translator(ss, ts, self.k, name="translator")(f_s, train)
    factor_t, recon = conn_lib.Paraphraser(ts, self.k, name="paraphraser")(f_t, train)
    return factor_s, factor_t, recon


def _connector(*, k=0.5, **_):
  checks.positive("term ft: k", k)
  return FTConnector(float(k))


def _taps(s_shapes, t_shapes, *, layer="last", **_):
  key = stage_layer("ft", layer, s_shapes, t_shapes)
  return (key,), (key,)


def _paraphraser_taps(s_shapes, t_shapes, *, layer="last", **_):
  return (), (stage_layer("ft_paraphraser", layer, s_shapes, t_shapes),)


@register_term("ft", taps=_taps, connector=_connector)
def ft_term(
  s,
  t,
  batch,
  *,
  connector=None,
  layer="last",
  k: float = 0.5,
  p1: float = 2,
  p2: float = 1,
  paraphraser_recon_weight: float = 0.005,
  detach_teacher_factor: bool = True,
):
  """Factor transfer on the stage tap ``layer`` ('last' = ``feat[-2]``); see the module doc."""
  del batch, k, layer
  (f_s,), (f_t,) = s.taps.values(), t.taps.values()
  factor_s, factor_t, recon = connector((f_s,), (f_t,), train=True)
  if detach_teacher_factor:
    factor_t = jax.lax.stop_gradient(factor_t)
  v = losses.ft(factor_s, factor_t, p1=p1, p2=p2)
  if paraphraser_recon_weight:
    v = v + paraphraser_recon_weight * jnp.mean(jnp.square(recon - f_t), axis=(1, 2, 3))
  return v


@register_term("ft_paraphraser", taps=_paraphraser_taps, connector=_connector)
def ft_paraphraser_term(s, t, batch, *, connector=None, layer="last", k: float = 0.5):
  """FT's init stage (RepDistiller ``helper/pretrain.py``: ``nn.MSELoss()(Paraphraser(f_t)[1],
  f_t)``): per-example MSE reconstruction of the teacher's stage tap ``layer`` by the
  paraphraser of the FT term's :class:`FTConnector` (same key: one shared module). Reads no
  student tap."""
  del s, batch, k, layer
  (f_t,) = t.taps.values()
  _, _, recon = connector((), (f_t,), train=True)
  return jnp.mean(jnp.square(recon - f_t), axis=(1, 2, 3))


# pretrain.py: lr 0.01 for the factor (FT) init stage with these students, else the main lr.
INIT_LR_001_STUDENTS = (
  "resnet8",
  "resnet14",
  "resnet20",
  "resnet32",
  "resnet44",
  "resnet56",
  "resnet110",
  "resnet8x4",
  "resnet32x4",
  "wrn_16_1",
  "wrn_16_2",
  "wrn_40_1",
  "wrn_40_2",
)

PRESETS = {
  # RepDistiller: -r 1 -a 0 -b 200; helper/pretrain.py: 30 epochs of paraphraser
  # reconstruction (lr 0.01 for INIT_LR_001_STUDENTS, else the main lr), then the paraphraser
  # frozen.
  "ft": dict(
    ce_weight=1.0,
    terms=dict(ft=dict(weight=200.0, k=0.5, p1=2, p2=1, paraphraser_recon_weight=0.0)),
    trainable="student+connectors/ft/translator",
    init=dict(
      epochs=30,
      ce_weight=0.0,
      terms=dict(ft=dict(loss="ft_paraphraser", weight=1.0, k=0.5)),
      trainable="connectors/ft/paraphraser",
    ),
  ),
}
