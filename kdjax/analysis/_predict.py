"""Predicted classes of a kdjax module or of a plain ``x -> logits`` callable, through the one
prediction path :func:`kdjax.eval.predict_logits` (fixed-size padded batches, one compile)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from kdjax.eval import predict_logits


class _CallableModel:
  """Presents ``fn: x -> logits | (logits, ...)`` as a module for ``predict_logits``; hashed by
  the function's identity, so one compiled function per callable."""

  def __init__(self, fn: Callable):
    self.fn = fn

  def apply(self, variables, x, train=False):
    del variables, train
    out = self.fn(x)
    return (out[0] if isinstance(out, (tuple, list)) else out), {}

  def __hash__(self):
    return hash(self.fn)

  def __eq__(self, other):
    return isinstance(other, _CallableModel) and other.fn is self.fn


def predict_classes(
  model, variables, x, *, batch_size: Optional[int] = None, preprocess: Optional[Callable] = None
) -> np.ndarray:
  """``argmax`` of the eval-mode logits; ``variables=None`` means ``model`` is a callable."""
  if variables is None:
    model = _CallableModel(model)
  n = int(np.shape(x)[0])
  bs = max(1, n if batch_size is None else int(batch_size))
  return predict_logits(model, variables, x, batch_size=bs, preprocess=preprocess).argmax(-1)
