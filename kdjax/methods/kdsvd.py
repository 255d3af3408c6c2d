r"""KDSVD term: truncated-SVD knowledge of consecutive stage taps (Lee, Kim, Song, ECCV 2018).

``kdsvd(layers='all', k=1, extra=3)`` reads the stage taps ``layers`` of both networks
(``'all'`` = ``stage1..N``, N the pair's common stage count: RepDistiller's ``feat[1:-1]``,
mdistiller's ``feats[1:]``; or a sequence of at least two stage numbers, compared consecutively
in the order given) and applies :func:`kdjax.losses.kdsvd.kdsvd` (formula, sign and gradient
conventions there). ``k`` is mdistiller's ``KDSVD.K`` (teacher singular vectors), ``extra`` how
many more student vectors the alignment chooses from (RepDistiller / mdistiller: 3). The student
and teacher must have equal channel counts at every tap read (checked when the method is bound).

Preset ``kdsvd``: mdistiller's ``CFG.KDSVD`` (``K = 1``, CE weight 1, feature weight 1). Per-pair
configs and the (absent) published numbers: ``configs/cifar100/kdsvd.py``.
"""

from __future__ import annotations

from kdjax import checks
from kdjax.errors import UserError
from kdjax.losses.kdsvd import DEFAULT_EXTRA, kdsvd
from kdjax.methods.core import stage_layers
from kdjax.methods.registry import register_term


def _kdsvd_taps(s_shapes, t_shapes, *, layers="all", k=1, extra=DEFAULT_EXTRA, **_):
  checks.integer("term kdsvd: k", k, minimum=1)
  checks.integer("term kdsvd: extra", extra, minimum=0)
  keys = stage_layers("kdsvd", layers, s_shapes, t_shapes)
  if len(keys) < 2:
    raise UserError(
      f"term kdsvd compares consecutive taps: layers must name at least two stages, got "
      f"{layers!r} ({list(keys)})."
    )
  bad = [
    f"{key}: student {tuple(s_shapes[key])}, teacher {tuple(t_shapes[key])}"
    for key in keys
    if tuple(s_shapes[key])[-1] != tuple(t_shapes[key])[-1]
  ]
  if bad:
    raise UserError(
      "term kdsvd compares singular vectors in channel space and needs equal student and "
      f"teacher channel counts at every tap it reads; they differ at {'; '.join(bad)}. Choose "
      "layers whose widths match, or a pair of the same widths (resnet32x4 -> resnet8x4, "
      "wrn_40_2 -> wrn_16_2, vgg13 -> vgg8, ...)."
    )
  return keys, keys


@register_term("kdsvd", taps=_kdsvd_taps)
def kdsvd_term(s, t, batch, *, layers="all", k: int = 1, extra: int = DEFAULT_EXTRA):
  """KDSVD over the consecutive stage taps ``layers`` (RBF of the teacher-aligned top singular
  vectors; ``k`` teacher vectors, ``k + extra`` student candidates), per example."""
  del batch, layers
  return kdsvd(list(s.taps.values()), list(t.taps.values()), k=k, extra=extra)


PRESETS = {
  # mdistiller mdistiller/engine/cfg.py CFG.KDSVD: K 1, LOSS.CE_WEIGHT 1.0, LOSS.FEAT_WEIGHT 1.0
  "kdsvd": dict(ce_weight=1.0, terms=dict(kdsvd=dict(weight=1.0, k=1))),
}
