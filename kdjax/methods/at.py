"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017; RepDistiller ``Attention(p=2)``).

``at(layers='all')`` sums the AT loss over RepDistiller's ``feat[1:-1]``: ``stage1..N`` with N the
pair's common stage count (or the given stage numbers).
"""

from __future__ import annotations

from kdjax import losses
from kdjax.methods.core import stage_layers
from kdjax.methods.registry import register_term


def _taps(s_shapes, t_shapes, *, layers="all", **_):
  keys = stage_layers("at", layers, s_shapes, t_shapes)
  return keys, keys


@register_term("at", taps=_taps)
def at_term(s, t, batch, *, layers="all", p: float = 2.0):
  """Attention transfer, summed over the stage taps ``layers`` ('all' = ``stage1..N``)."""
  del batch, layers
  return losses.at(list(s.taps.values()), list(t.taps.values()), p=p)


PRESETS = {
  # RepDistiller: -r 1 -a 0 -b 1000
  "at": dict(ce_weight=1.0, terms=dict(at=dict(weight=1000.0, p=2.0))),
}
