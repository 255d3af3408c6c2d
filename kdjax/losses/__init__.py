"""kdjax losses: pure functions returning per-example values; the train step reduces the batch."""

from kdjax.losses.logits import (
  cross_entropy,
  dist,
  dkd,
  dkd_warmup_factor,
  kd,
  kl_per_example,
  listmle,
  pairwise_ranking,
  pld,
  ttm,
  wttm,
)

__all__ = [
  "cross_entropy",
  "kl_per_example",
  "kd",
  "ttm",
  "wttm",
  "dkd",
  "dkd_warmup_factor",
  "dist",
  "listmle",
  "pairwise_ranking",
  "pld",
]

# Feature / relational losses and their trainable connectors (kdjax.losses.features,
# kdjax.losses.relational, kdjax.losses.connectors).
from kdjax.losses import connectors  # noqa: E402
from kdjax.losses.features import (  # noqa: E402
  ab,
  adaptive_avg_pool,
  at,
  fitnet,
  fsp,
  ft,
  nst,
  oh,
  overhaul_margin,
  vid,
)
from kdjax.losses.relational import cc, cc_gaussian, pkt, rkd, sp  # noqa: E402

__all__ += [
  "fitnet",
  "at",
  "sp",
  "cc",
  "cc_gaussian",
  "vid",
  "rkd",
  "pkt",
  "ab",
  "ft",
  "fsp",
  "nst",
  "oh",
  "overhaul_margin",
  "adaptive_avg_pool",
]

# Contrastive representation distillation (kdjax.losses.contrastive): memory-bank NCE + queue.
from kdjax.losses.contrastive import (  # noqa: E402
  crd,
  crd_enqueue,
  crd_init_memory,
  crd_nce,
  crd_queue,
  crd_sample_negatives,
  crd_scores,
  crd_update_memory,
)

__all__ += [
  "crd",
  "crd_scores",
  "crd_nce",
  "crd_update_memory",
  "crd_init_memory",
  "crd_sample_negatives",
  "crd_queue",
  "crd_enqueue",
]

# ITRD (kdjax.losses.itrd): correlation + mutual-information batch losses.
from kdjax.losses.itrd import itrd, itrd_correlation, itrd_mutual_information  # noqa: E402

__all__ += ["itrd", "itrd_correlation", "itrd_mutual_information"]

# Logit standardisation (kdjax.losses.standardize): Z-score pre-process for KD / DKD.
from kdjax.losses.standardize import lsdkd, lskd, standardize_logits  # noqa: E402

__all__ += ["standardize_logits", "lskd", "lsdkd"]

# ReviewKD's hierarchical context loss (kdjax.losses.review).
from kdjax.losses.review import hcl  # noqa: E402

__all__ += ["hcl"]

# NKD, normalized KD (kdjax.losses.nkd).
from kdjax.losses.nkd import nkd  # noqa: E402

__all__ += ["nkd"]

# CTKD, curriculum (learned, gradient-reversed) temperature (kdjax.losses.ctkd).
from kdjax.losses.ctkd import ctkd, ctkd_lambda, ctkd_temperature, gradient_reversal  # noqa: E402

__all__ += ["ctkd", "ctkd_lambda", "ctkd_temperature", "gradient_reversal"]

# MLKD, multi-level logit distillation (kdjax.losses.mlkd); KDSVD (kdjax.losses.kdsvd).
from kdjax.losses.kdsvd import kdsvd  # noqa: E402
from kdjax.losses.mlkd import mlkd_batch, mlkd_class, mlkd_instance  # noqa: E402

__all__ += ["kdsvd", "mlkd_instance", "mlkd_batch", "mlkd_class"]
