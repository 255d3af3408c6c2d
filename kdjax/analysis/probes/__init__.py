"""The what-gets-distilled probes: one module each, resolved by ``type=`` (see :mod:`.base`).

Every module of this folder is imported here, so that a new probe module registers itself:
adding a probe touches that one file.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from kdjax.analysis.probes.base import Context, Probe, Run, get, names, register

for _m in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
  if _m.name != "base":
    _importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["Probe", "Context", "Run", "register", "get", "names"]
