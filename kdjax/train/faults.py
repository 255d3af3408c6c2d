"""Environment-controlled crash points for fault-injection tests.

``KDJAX_CRASH_AT=<point>:<step>[,<point>:<step>...]`` SIGKILLs the process when the loop reaches
``<point>`` at ``<step>`` (no ``finally`` blocks, no flush: what a power cut or an OOM-kill does).
Points: ``step`` (before the step that follows ``<step>`` runs), ``eval`` (before an epoch-end
evaluation), ``best`` / ``kept`` (right after the best / kept model save was issued), ``state``
(right after the resume-state save was issued). Unset (always, outside tests) it costs one dict
lookup per step.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str, step: int) -> None:
  spec = os.environ.get("KDJAX_CRASH_AT")
  if spec and f"{name}:{int(step)}" in spec.split(","):
    os.kill(os.getpid(), signal.SIGKILL)
