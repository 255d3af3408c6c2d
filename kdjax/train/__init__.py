"""Training: jitted data-parallel steps, the shared loop, Orbax checkpoints."""

from kdjax.train.checkpoint import CheckpointError, kept_checkpoints, load_model
from kdjax.train.loop import (
  NonFiniteLossError,
  evaluate,
  run,
  train_and_evaluate,
  train_members,
  train_online,
)

__all__ = [
  "CheckpointError",
  "NonFiniteLossError",
  "evaluate",
  "kept_checkpoints",
  "load_model",
  "train_and_evaluate",
  "train_members",
  "train_online",
  "run",
]
