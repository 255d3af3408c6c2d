"""Connector-free feature terms: NST, SP and FSP (RepDistiller ``NSTLoss``, ``Similarity``,
``FSP``).

* ``nst(layers='all')``: neuron selectivity transfer (polynomial kernel) summed over ``stage1..N``;
* ``sp(layer='last')``: similarity-preserving KD on the last common stage (``feat[-2]``), a
  batch-relational loss split row-wise;
* ``fsp(layers='all')``: FSP matrices over consecutive taps ``stem, stage1..N``; needs equal
  channel counts at every tap. RepDistiller uses FSP only in a 30-epoch init stage that trains
  the student's feature layers, followed by CE alone (preset ``'fsp'``).
"""

from __future__ import annotations

from kdjax import losses
from kdjax.methods.core import stage_layer, stage_layers
from kdjax.methods.registry import register_term


def _nst_taps(s_shapes, t_shapes, *, layers="all", **_):
  keys = stage_layers("nst", layers, s_shapes, t_shapes)
  return keys, keys


def _sp_taps(s_shapes, t_shapes, *, layer="last", **_):
  key = stage_layer("sp", layer, s_shapes, t_shapes)
  return (key,), (key,)


def _fsp_taps(s_shapes, t_shapes, *, layers="all", **_):
  keys = ("stem",) + stage_layers("fsp", layers, s_shapes, t_shapes)
  return keys, keys


@register_term("nst", taps=_nst_taps)
def nst_term(s, t, batch, *, layers="all"):
  """Neuron selectivity transfer (polynomial kernel), summed over the stage taps ``layers``."""
  del batch, layers
  return losses.nst(list(s.taps.values()), list(t.taps.values()))


@register_term("sp", taps=_sp_taps)
def sp_term(s, t, batch, *, layer="last"):
  """Similarity-preserving KD on the stage tap ``layer`` ('last' = ``feat[-2]``)."""
  del batch, layer
  (f_s,), (f_t,) = s.taps.values(), t.taps.values()
  return losses.sp(f_s, f_t)


@register_term("fsp", taps=_fsp_taps)
def fsp_term(s, t, batch, *, layers="all"):
  """FSP matrices over the consecutive taps ``stem`` + stage taps ``layers``. RepDistiller's
  protocol puts this term in ``method.init.terms`` (preset ``'fsp'``); in ``method.terms`` it
  trains jointly with CE."""
  del batch, layers
  return losses.fsp(list(s.taps.values()), list(t.taps.values()))


PRESETS = {
  # RepDistiller: -r 1 -a 0 -b 50 / 3000
  "nst": dict(ce_weight=1.0, terms=dict(nst=dict(weight=50.0))),
  "sp": dict(ce_weight=1.0, terms=dict(sp=dict(weight=3000.0))),
  # RepDistiller helper/pretrain.py: 30 epochs of FSP on the student's feature modules, then
  # 240 epochs of CE alone (b unused).
  "fsp": dict(
    ce_weight=1.0,
    terms={},
    trainable="student",
    init=dict(
      epochs=30, ce_weight=0.0, terms=dict(fsp=dict(weight=1.0)), trainable="student_features"
    ),
  ),
}
