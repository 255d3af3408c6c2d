"""Declarative distillation methods: ``build_method(config.method)`` (:mod:`~kdjax.methods.core`).

A method family is one module of this package (``logit``, ``fitnet``, ``at``, ``nst_sp_fsp``,
``vid``, ``ab``, ``ft``, ``oh``, ``cc_rkd_pkt``, ``crd``, ``itrd``, ``sskd``, ``sftn``, ...): its term
adapters (registered with :func:`~kdjax.methods.registry.register_term`), connector modules,
defaults and ``PRESETS`` (named recipes, :func:`preset`). Importing this package imports every
family module found here, so a new method is one new file.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from kdjax.methods.core import (
  Batch,
  Method,
  Outputs,
  Stage,
  Term,
  build_method,
  common_stages,
  connector_calls,
)
from kdjax.methods.presets import (
  apply_preset,
  preset,
  preset_names,  # noqa: F401
  register_preset,
)
from kdjax.methods.registry import (
  BuildContext,
  TermSpec,
  ViewSpec,
  get_term,
  register_term,
  term_names,
)

_NOT_FAMILIES = ("core", "presets", "registry")
FAMILIES = tuple(
  m.name
  for m in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name)
  if m.name not in _NOT_FAMILIES and not m.name.startswith("_")
)
for _name in FAMILIES:
  _mod = _importlib.import_module(f"{__name__}.{_name}")
  for _k, _v in getattr(_mod, "PRESETS", {}).items():
    register_preset(_k, _v)

__all__ = [
  "Batch",
  "BuildContext",
  "FAMILIES",
  "Method",
  "Outputs",
  "Stage",
  "Term",
  "TermSpec",
  "ViewSpec",
  "apply_preset",
  "build_method",
  "common_stages",
  "connector_calls",
  "get_term",
  "preset",
  "preset_names",
  "register_preset",
  "register_term",
  "term_names",
]
