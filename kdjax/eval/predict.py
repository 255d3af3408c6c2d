"""``predict_logits``: eval-mode outputs of a model over a whole array of images.

The one path every site that needs "the logits (or taps) of a stored model" uses: images are cut
into batches of a fixed size (the last one zero-padded and trimmed), so one compiled function
serves the whole set; with a mesh the batch is sharded along ``'data'``. Imports nothing from
``kdjax`` (it sits under ``train/``, ``teachers/`` and ``analysis/``).
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def _cache_key(preprocess):
  """A ``functools.partial`` compares by identity, so a fresh ``partial(eval_transform, info)``
  per call would miss the cache and recompile: key it by (function, args, keywords) instead."""
  if isinstance(preprocess, functools.partial):
    return ("partial", preprocess.func, preprocess.args, tuple(sorted(preprocess.keywords.items())))
  return preprocess


@functools.lru_cache(maxsize=64)
def _jitted_by_key(model, key, taps: tuple):
  preprocess = key
  if isinstance(key, tuple) and key and key[0] == "partial":
    preprocess = functools.partial(key[1], *key[2], **dict(key[3]))

  def fn(variables, x):
    if preprocess is not None:
      x = preprocess(x)
    logits, all_taps = model.apply(variables, x, train=False)
    return logits, {k: all_taps[k] for k in taps}

  return jax.jit(fn)


def _jitted(model, preprocess, taps: tuple):
  return _jitted_by_key(model, _cache_key(preprocess), taps)


def predict_logits(
  model,
  variables,
  images,
  *,
  batch_size: int = 500,
  preprocess: Optional[Callable] = None,
  mesh=None,
  taps: Sequence[str] = (),
  fixed_batch: bool = False,
):
  """Eval-mode logits of ``model`` (a Flax module returning ``(logits, taps)``) on ``images``.

  Args:
    model: the module; hashable (Flax modules are), so the compiled function is cached.
    variables: its variables (``params``, ``batch_stats``).
    images: ``(N, ...)`` numpy array (raw dataset pixels when ``preprocess`` normalises them).
    batch_size: rows per compiled call; rounded up to a multiple of the mesh's device count.
    preprocess: a hashable function applied inside the jit (e.g. the eval transform).
    mesh: optional ``Mesh`` with a ``'data'`` axis; batches are sharded along it.
    taps: names of taps to return as well.
    fixed_batch: always pad to ``batch_size`` rows, so inputs of any length share one compiled
      shape (otherwise a set shorter than ``batch_size`` is run at its own, rounded-up size).

  Returns:
    ``(N, C)`` float32 numpy logits, or ``(logits, {tap: (N, ...)})`` when ``taps`` is given.
  """
  taps = tuple(taps)
  fn = _jitted(model, preprocess, taps)
  n = int(images.shape[0])
  n_dev = 1 if mesh is None else int(mesh.devices.size)
  rows = batch_size if fixed_batch else min(batch_size, max(n, 1))
  bs = max(n_dev, -(-rows // n_dev) * n_dev)
  shard = None if mesh is None else NamedSharding(mesh, P("data"))
  outs, tap_outs = [], {k: [] for k in taps}
  for start in range(0, n, bs):
    chunk = np.asarray(images[start : start + bs])
    k = chunk.shape[0]
    if k < bs:
      chunk = np.concatenate([chunk, np.zeros((bs - k,) + chunk.shape[1:], chunk.dtype)])
    x = jax.device_put(chunk, shard) if shard is not None else chunk
    logits, t = fn(variables, x)
    outs.append(np.asarray(logits, np.float32)[:k])
    for name in taps:
      tap_outs[name].append(np.asarray(t[name])[:k])
  num_classes = outs[0].shape[-1] if outs else 0
  logits = np.concatenate(outs) if outs else np.zeros((0, num_classes), np.float32)
  if not taps:
    return logits
  return logits, {k: np.concatenate(v) for k, v in tap_outs.items()}
