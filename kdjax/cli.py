"""Shared plumbing of the ``launch/`` entry points: one clear line on bad input, never a trace.

The errors listed in :data:`USER_ERRORS` are caused by the user's config, data or checkpoints; they
are printed as ``kdjax: error: <message>`` with exit status 2. Anything else is a bug and keeps its
traceback. ``KDJAX_TRACEBACK=1`` shows tracebacks for user errors too.
"""
from __future__ import annotations

import os
import sys


def _user_errors():
  from kdjax.data import DatasetNotFoundError
  from kdjax.train import CheckpointError, NonFiniteLossError
  return (ValueError, KeyError, FileNotFoundError, DatasetNotFoundError, CheckpointError,
          NonFiniteLossError)


def guarded(fn, *args, **kwargs):
  """Calls ``fn``; user errors exit with status 2 and one message. Library INFO logs (Orbax's
  per-save lines) are silenced unless ``KDJAX_VERBOSE=1``."""
  if not os.environ.get("KDJAX_VERBOSE"):
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    return fn(*args, **kwargs)
  except _user_errors() as e:  # noqa: BLE001
    if os.environ.get("KDJAX_TRACEBACK"):
      raise
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    print(f"kdjax: error: {msg}", file=sys.stderr)
    sys.exit(2)


def require(value, flag: str):
  if not value:
    print(f"kdjax: error: --{flag} is required.", file=sys.stderr)
    sys.exit(2)
  return value
