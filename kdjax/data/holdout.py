"""A validation split held out of the training split (``config.dataset.val_examples``).

Post-hoc calibration (temperature scaling, Guo et al. 2017; the calibration control of Fan et
al., ICML 2024, methods.md §2.3 step 6) is fitted by NLL on data the model has **not** trained
on. ``dataset.val_examples = N > 0`` removes ``N`` examples from the (loaded) training split: the
run trains on the rest, and anyone who reads the run's ``config.json`` can rebuild the very same
held-out examples with :func:`split_holdout` (``kdjax.calibration.study`` does).

The rule (a design decision; deterministic, a function of the labels, ``N`` and
``dataset.val_seed`` only, independent of ``config.seed`` so that a population of teachers with
different seeds shares one validation split):

1. the loaded training split (after ``dataset.train_limit``) is permuted with
   ``numpy.random.default_rng(val_seed).permutation(n)``;
2. every example gets ``key = (r + 0.5) / n_c``, ``r`` its rank among the examples of its class
   ``c`` in the permuted order and ``n_c`` the class's size;
3. the ``N`` examples with the smallest key (ties: permuted order) are held out.

So the split is **stratified**: a class of ``n_c`` examples gives ``N · n_c / n`` of them, up to
rounding (one example). That matters for a training split stored class by class (the
tiny-imagenet-200 directory), where "the last N" would be a handful of whole classes.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from kdjax import checks
from kdjax.errors import UserError

__all__ = ["holdout_positions", "split_holdout"]


def holdout_positions(labels, num_val: int, seed: int = 0) -> np.ndarray:
  """Sorted positions (into ``labels``) of the ``num_val`` held-out examples (module docstring)."""
  labels = np.asarray(labels)
  n = int(labels.shape[0])
  num_val = checks.integer("dataset.val_examples", num_val, minimum=0)
  seed = checks.integer("dataset.val_seed", seed, minimum=0)
  if num_val == 0:
    return np.zeros((0,), np.int64)
  if num_val >= n:
    raise UserError(
      f"dataset.val_examples={num_val} leaves no training examples out of {n}: hold out "
      f"fewer than {n} (or raise dataset.train_limit)."
    )
  perm = np.random.default_rng(seed).permutation(n)
  lp = labels[perm]
  _, inv, counts = np.unique(lp, return_inverse=True, return_counts=True)
  # rank of each permuted example within its class: position among equal labels (stable sort)
  order = np.argsort(inv, kind="stable")
  rank = np.empty(n, np.int64)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  rank[order] = np.arange(n) - np.repeat(starts, counts)
  key = (rank + 0.5) / counts[inv]
  chosen = np.lexsort((np.arange(n), key))[:num_val]  # by key, ties by permuted order
  return np.sort(perm[chosen])


def split_holdout(split, num_val: int, seed: int = 0) -> Tuple[object, object]:
  """``(train, val)`` ArraySplits of an in-memory ``split``: ``val`` holds the
  :func:`holdout_positions` examples, ``train`` the rest, both in their original order and with
  their original ``index`` values. ``num_val == 0``: ``(split, None)``."""
  pos = holdout_positions(split.labels, num_val, seed)
  if len(pos) == 0:
    return split, None
  keep = np.ones(len(split.labels), bool)
  keep[pos] = False
  return split.subset(keep), split.subset(pos)
