"""Named method recipes: ``preset(name, **kwargs)`` -> a ``config.method`` block (a dict).

The recipes live in the family modules (``PRESETS`` in :mod:`kdjax.methods.logit`,
:mod:`~kdjax.methods.at`, ...; the package registers them on import): a dict for a fixed recipe, a function for one with per-pair
hyper-parameters (``preset('ttm', gamma=0.1, beta=45.0)``). The RepDistiller benchmark's 13
methods (``REPDISTILLER``: ``-r/-a/-b`` of ``scripts/run_cifar_distill.sh``, with AB / FT / FSP's
30-epoch init stages of ``helper/pretrain.py``), SSKD, TTM/WTTM, DKD, DIST, ITRD and CRD are
here, used by ``configs/`` and ``bench/`` alike::

  config.method = preset('crd')                      # or: apply_preset(config.method, 'crd')
"""

from __future__ import annotations

import copy
import difflib
from typing import Callable, Dict, Union

from kdjax.errors import UserError

# Filled by kdjax/methods/__init__.py with every family module's PRESETS (register_preset).
PRESETS: Dict[str, Union[dict, Callable[..., dict]]] = {}

# RepDistiller's CIFAR-100 benchmark, in its README's order.
REPDISTILLER = (
  "kd",
  "fitnet",
  "at",
  "sp",
  "cc",
  "vid",
  "rkd",
  "pkt",
  "ab",
  "ft",
  "fsp",
  "nst",
  "crd",
)


def register_preset(name: str, recipe: Union[dict, Callable[..., dict]]):
  """Adds a named recipe (a ``config.method`` dict, or a function of keyword arguments
  returning one)."""
  if name in PRESETS:
    raise UserError(f"method preset {name!r} registered twice")
  PRESETS[name] = recipe


def preset_names():
  return sorted(PRESETS)


def preset(name: str, **kwargs) -> dict:
  """A fresh ``config.method`` block for the named recipe (``name`` defaults to the preset's)."""
  if name not in PRESETS:
    close = difflib.get_close_matches(name, list(PRESETS), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UserError(f"unknown method preset {name!r}.{hint} Known: {preset_names()}.")
  recipe = PRESETS[name]
  if callable(recipe):
    out = recipe(**kwargs)
  else:
    if kwargs:
      raise UserError(f"method preset {name!r} takes no arguments, got {sorted(kwargs)}.")
    out = copy.deepcopy(recipe)
  out.setdefault("name", name)
  return out


def apply_preset(method_cfg, name: str, **kwargs):
  """Fills a ``config.method`` ConfigDict in place with :func:`preset` (the init block key by
  key, so its defaults stay); returns it."""
  recipe = preset(name, **kwargs)
  for key, value in recipe.items():
    if key == "init":
      for k, v in value.items():
        if k == "terms":
          for tk, tv in v.items():
            method_cfg.init.terms[tk] = dict(tv)
        else:
          method_cfg.init[k] = v
    elif key == "terms":
      for tk, tv in value.items():
        method_cfg.terms[tk] = dict(tv)
    else:
      method_cfg[key] = value
  return method_cfg
