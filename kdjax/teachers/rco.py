"""RCO's anchor schedule (moved to :mod:`kdjax.train.rco`, where the loop reads it); this name
stays for callers of ``kdjax.teachers.rco``."""

from kdjax.train.rco import (  # noqa: F401
  STRATEGIES,
  Anchor,
  equal_epoch_anchor_epochs,
  rco_anchors,
  teacher_epoch_at,
)
