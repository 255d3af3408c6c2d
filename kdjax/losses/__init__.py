"""kdjax losses: pure functions returning per-example values; the train step reduces the batch."""
from kdjax.losses.logits import (
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
