"""Flat model registry: name -> constructor.

Every registered constructor returns a Flax linen module following the kdjax model protocol:

* ``module(x, train=False) -> (logits, taps)`` where ``taps`` is a dict with the keys
  ``stem``, ``stage1..stageN``, ``preact_stage1..preact_stageN`` and ``pooled``
  (RepDistiller's f0, f1..fN, preact feats and the pooled vector; see the family docstrings).
* Block-by-block application (SFTN and friends):
  ``apply_stem(x, train) -> (h, taps)``, ``apply_stage(h, i, train) -> (h, taps)`` for
  ``i in 1..num_stages`` and ``apply_head(h, train) -> (logits, taps)``; ``__call__`` is exactly
  their composition. Call them through ``module.apply(variables, ..., method='apply_stage')``.
* ``num_stages`` is a class attribute.

Names are used verbatim in configs, checkpoint metadata and result tables.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict

from kdjax import checks
from kdjax.errors import UserError

_REGISTRY: Dict[str, Callable] = {}


def register(name: str):
  """Decorator registering ``fn(num_classes=..., **kwargs) -> nn.Module`` under ``name``."""

  def deco(fn):
    if name in _REGISTRY:
      raise ValueError(f"model {name!r} registered twice")
    _REGISTRY[name] = fn
    return fn

  return deco


def names():
  """Sorted list of registered model names."""
  _ensure_loaded()
  return sorted(_REGISTRY)


def get(name: str, *, num_classes: int, **kwargs):
  """Builds the registered model ``name`` with ``num_classes`` outputs.

  Raises:
    ValueError: unknown name (the message lists the closest registered names) or a bad
      ``num_classes``.
  """
  _ensure_loaded()
  if name not in _REGISTRY:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UserError(
      f"Unknown model {name!r}.{hint} Registered models: {', '.join(sorted(_REGISTRY))}."
    )
  checks.integer(f"model {name!r}: num_classes", num_classes, minimum=1, strict=True)
  return _REGISTRY[name](num_classes=num_classes, **kwargs)


def count_params(params) -> int:
  """Number of trainable scalars (conv/linear weights and biases, BN scale/bias)."""
  import jax

  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def _ensure_loaded():
  # Importing the families registers them.
  from kdjax.models import cifar, imagenet, sftn, tiny  # noqa: F401  (sftn: 'sftn')
