"""The training state pytree: everything needed to resume bit-for-bit."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """Trainable parameters, BN statistics, optimiser state, step and RNG.

  ``params`` is ``{'student': ..., 'connectors': ...}``: exactly what is optimised. The teacher is
  never part of the state (it is loaded from its own checkpoint and never modified).
  ``batch_stats`` mirrors it for BatchNorm running statistics. ``rng`` is the run's base key; the
  per-step key is ``fold_in(rng, step)``, so the data position and the randomness both follow from
  ``step`` on resume.
  """
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jnp.ndarray
  method_state: Any = None


def create(params, batch_stats, tx, rng, method_state=None) -> TrainState:
  """``params``/``batch_stats``: ``{'student': ..., 'connectors': {term key: ...}}``."""
  params = {"connectors": {}, **params}
  batch_stats = {"connectors": {}, **batch_stats}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), rng=rng,
                    method_state={} if method_state is None else method_state)
