"""Shared plumbing of the ``launch/`` entry points: one clear line on bad input, never a trace.

User mistakes -- :class:`kdjax.errors.UserError` (the library raises it, or a subclass such as
``CheckpointError`` / ``NonFiniteError``, for anything the user's config, flags, data or
checkpoints cause) and command-line flag errors -- are printed as ``kdjax: error: <message>``
with exit status 2. Anything else is a bug: it keeps its traceback (exit status 1).
``KDJAX_TRACEBACK=1`` shows tracebacks for user errors too.
"""

from __future__ import annotations

import os
import re
import sys

from absl import flags

from kdjax import distributed
from kdjax.data.idx import IdxFormatError
from kdjax.data.registry import DatasetNotFoundError
from kdjax.errors import UserError

# The data errors predate UserError (a FileNotFoundError, a ValueError); caught explicitly.
USER_ERRORS = (UserError, DatasetNotFoundError, IdxFormatError)


def _fail(msg: str):
  print(f"kdjax: error: {msg}", file=sys.stderr)
  sys.exit(2)


def guarded(fn, *args, **kwargs):
  """Calls ``fn``; user errors exit with status 2 and one message. Library INFO logs (Orbax's
  per-save lines) are silenced unless ``KDJAX_VERBOSE=1``."""
  if not os.environ.get("KDJAX_VERBOSE"):
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    return fn(*args, **kwargs)
  except USER_ERRORS as e:
    if os.environ.get("KDJAX_TRACEBACK"):
      raise
    _fail(" ".join(str(e).split("\n")))


def parse_flags(argv):
  """``absl.app.run(main, flags_parser=cli.parse_flags)``: flag errors -- an unknown flag, a bad
  value, a ``--config.<key>`` override naming no key of the config, a config file that does not
  load -- are one line and exit status 2 instead of absl's traceback.

  First of all (before a config file can touch jax) it joins the run's processes when the
  environment describes several (``KDJAX_COORDINATOR`` / ``KDJAX_NUM_PROCESSES`` /
  ``KDJAX_PROCESS_ID``, SLURM, Open MPI: :func:`kdjax.distributed.initialize`, docs/multihost.md);
  a single process is left alone."""
  try:
    distributed.initialize()
  except USER_ERRORS as e:
    _fail(" ".join(str(e).split("\n")))
  try:
    return flags.FLAGS(argv)
  except (flags.Error, KeyError, AttributeError, ValueError) as e:
    if os.environ.get("KDJAX_TRACEBACK"):
      raise
    msg = e.args[0] if isinstance(e, (KeyError, AttributeError)) and e.args else str(e)
    msg = " ".join(str(msg).replace("\\n", " ").replace("\\'", "'").replace('"', "'").split())
    if isinstance(e, (KeyError, AttributeError)):
      words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", msg)
      key = words[0] if words else ""
      hint = re.search(r"Did you mean '?([A-Za-z0-9_]+)'?", msg)
      culprit = next(
        (
          a.split("=", 1)[0]
          for a in argv[1:]
          if a.startswith("--config.") and a.split("=", 1)[0].split(".")[-1] == key
        ),
        "a --config override",
      )
      _fail(
        f"{culprit}: the config has no key {key!r}"
        + (f"; did you mean {hint.group(1)!r}?" if hint else ".")
        + " The keys and their defaults are in kdjax/config.py:base_config."
      )
    raw = str(e)
    if "Traceback (most recent call last)" in raw:  # config_flags embeds the config's trace
      where = raw.split(": Error whilst", 1)[0] if ": Error whilst" in raw else "--config"
      last = [l for l in raw.strip().splitlines() if l.strip()][-1].strip()
      msg = f"{where}: the config file failed to load: {last}"
    _fail(msg)


def require(value, flag: str):
  """``value`` of ``--flag``, or one line and exit 2 when it is missing. A ``--config`` file
  that did not load (ml_collections defers that error to the first use) is reported here."""
  try:
    if value is not None and not isinstance(value, str):
      value.keys()
  except AttributeError:  # a plain flag value (list, number): nothing deferred to load
    pass
  except OSError as e:
    _fail(f"--{flag}: " + " ".join(str(e).replace("config_config", "").split()))
  if not value:
    _fail(f"--{flag} is required.")
  return value
