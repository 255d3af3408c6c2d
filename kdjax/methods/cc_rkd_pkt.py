"""Terms on the pooled features: correlation congruence (CC), relational KD (RKD) and
probabilistic knowledge transfer (PKT) (RepDistiller ``Correlation``, ``RKDLoss``, ``PKT``).
"""

from __future__ import annotations

import flax.linen as nn

from kdjax import checks, losses
from kdjax.losses import connectors as conn_lib
from kdjax.methods.registry import register_term


class PairEmbed(nn.Module):
  """Two trainable embeddings ``(embed_s(f_s), embed_t(f_t))``: RepDistiller's ``Embed`` (Linear
  + L2 norm; CRD) if ``normalize`` else ``LinearEmbed`` (CC). ``__call__((f_s,), (f_t,), train)``."""

  dim_out: int = 128
  normalize: bool = True

  @nn.compact
  def __call__(self, s_taps, t_taps, train: bool = False):
    del train
    (f_s,), (f_t,) = s_taps, t_taps
    cls = conn_lib.Embed if self.normalize else conn_lib.LinearEmbed
    return cls(self.dim_out, name="embed_s")(f_s), cls(self.dim_out, name="embed_t")(f_t)


def _cc_connector(*, feat_dim=128, **_):
  feat_dim = checks.integer("term cc: feat_dim", feat_dim, minimum=1)
  return PairEmbed(feat_dim, normalize=False)


@register_term("cc", student_taps=("pooled",), teacher_taps=("pooled",), connector=_cc_connector)
def cc_term(s, t, batch, *, connector=None, feat_dim: int = 128):
  """Correlation congruence on two trainable ``LinearEmbed`` projections (student and teacher
  ``pooled`` -> ``feat_dim`` = 128), the term's connector."""
  del batch, feat_dim
  e_s, e_t = connector((s.taps["pooled"],), (t.taps["pooled"],))
  return losses.cc(e_s, e_t)


@register_term("rkd", student_taps=("pooled",), teacher_taps=("pooled",))
def rkd_term(s, t, batch, *, w_dist: float = 25.0, w_angle: float = 50.0):
  """Relational KD (RepDistiller ``RKDLoss(25, 50)``) on the ``pooled`` features."""
  del batch
  return losses.rkd(s.taps["pooled"], t.taps["pooled"], w_dist=w_dist, w_angle=w_angle)


@register_term("pkt", student_taps=("pooled",), teacher_taps=("pooled",))
def pkt_term(s, t, batch, *, eps: float = 1e-7):
  """Probabilistic knowledge transfer (RepDistiller ``PKT``) on the ``pooled`` features."""
  del batch
  return losses.pkt(s.taps["pooled"], t.taps["pooled"], eps=eps)


PRESETS = {
  # RepDistiller: -r 1 -a 0 -b 0.02 / 1 / 30000
  "cc": dict(ce_weight=1.0, terms=dict(cc=dict(weight=0.02, feat_dim=128))),
  "rkd": dict(ce_weight=1.0, terms=dict(rkd=dict(weight=1.0, w_dist=25.0, w_angle=50.0))),
  "pkt": dict(ce_weight=1.0, terms=dict(pkt=dict(weight=30000.0))),
}
