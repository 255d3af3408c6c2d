"""Deterministic epoch orderings."""

from __future__ import annotations

import numpy as np

from kdjax import checks


def epoch_rng(seed: int, epoch: int, *extra: int) -> np.random.Generator:
  """numpy Generator determined by (seed, epoch, *extra) alone."""
  return np.random.default_rng([int(seed), int(epoch), *map(int, extra)])


def batch_indices(
  num_examples: int,
  batch_size: int,
  *,
  seed: int,
  epoch: int,
  shuffle: bool = True,
  drop_remainder: bool = False,
) -> list[np.ndarray]:
  """Positions 0..num_examples-1 in a per-(seed, epoch) order, cut into batches.

  The order is a permutation drawn from `np.random.default_rng([seed, epoch])`
  (identity order if not `shuffle`). The last, partial batch is kept unless
  `drop_remainder`. Returns a list of int64 arrays.
  """
  num_examples = checks.integer('num_examples', num_examples, minimum=0)
  batch_size = checks.integer('batch_size', batch_size, minimum=1)
  if shuffle:
    order = epoch_rng(seed, epoch).permutation(num_examples)
  else:
    order = np.arange(num_examples)
  stop = (num_examples // batch_size) * batch_size if drop_remainder else (num_examples)
  return [order[i : min(i + batch_size, stop)] for i in range(0, stop, batch_size)]


def num_batches(num_examples: int, batch_size: int, *, drop_remainder: bool = False) -> int:
  if drop_remainder:
    return num_examples // batch_size
  return -(-num_examples // batch_size)
