"""Grain input pipeline for datasets that do not fit on the device (ImageNet, Tiny-ImageNet).

Reads a prepared TFDS copy (ArrayRecord files, through ``tfds.data_source``; no TensorFlow) with
Grain worker processes, applies the ImageNet transforms of :mod:`kdjax.data.stream` (train:
RandomResizedCrop(224, scale (0.08, 1), ratio (3/4, 4/3)) + horizontal flip; eval: Resize(256) +
CenterCrop(224)) and copies the batches to the devices ahead of the step.

Determinism and resume: the order of epoch ``e`` is ``kdjax.data.batch_indices(n, B, seed, e)``
(the permutation of :class:`~kdjax.data.stream.HostStream`), and every random draw of an example
comes from ``epoch_rng(seed, e, index)``. A batch is therefore a function of ``(seed, epoch,
step)`` alone -- not of the number of workers, of the process count or of where the epoch was
resumed -- and equals HostStream's batch bit for bit. ``epoch(e, offset)`` starts at batch
``offset`` without reading the batches before it.

Multi-process: process ``p`` of ``P`` reads only rows ``[p B/P, (p+1) B/P)`` of every global
batch (those its devices hold) and the global ``jax.Array`` is assembled with
``jax.make_array_from_process_local_data``.

Grain reads its settings from absl flags: if the program has not parsed absl flags, this module
marks them parsed (defaults) so that Grain's worker processes can start.
"""

from __future__ import annotations

import collections
from typing import Iterator, Optional

import numpy as np

from kdjax import checks, distributed
from kdjax.data import arrays as arrays_lib
from kdjax.data import stream as stream_lib
from kdjax.data.batching import batch_indices, epoch_rng, num_batches
from kdjax.data.registry import DatasetNotFoundError, missing_dataset_message
from kdjax.data.registry import info as get_info
from kdjax.errors import UserError


def _grain():
  try:
    import grain  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("The Grain input pipeline needs grain: pip install 'grain>=0.2.18'.") from None
  from absl import flags  # pylint: disable=g-import-not-at-top

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return grain


class _LoadTransform:
  """position -> {image uint8 (S, S, 3), label int32, index int32}; runs in Grain's workers
  (picklable: holds the data source, which reopens its files in the worker)."""

  def __init__(
    self, source, index, *, epoch, seed, train, image_size, eval_resize, scale, ratio, flip
  ):
    self.source, self.index = source, index
    self.epoch, self.seed, self.train = int(epoch), int(seed), bool(train)
    self.image_size, self.eval_resize = int(image_size), int(eval_resize)
    self.scale, self.ratio, self.flip = tuple(scale), tuple(ratio), bool(flip)

  def __call__(self, pos):
    pos = int(pos)
    rec = self.source[pos]
    idx = int(self.index[pos])
    if self.train:
      img = stream_lib.train_image_transform(
        rec["image"],
        epoch_rng(self.seed, self.epoch, idx),
        size=self.image_size,
        scale=self.scale,
        ratio=self.ratio,
        flip=self.flip,
      )
    else:
      img = stream_lib.eval_image_transform(
        rec["image"], resize=self.eval_resize, size=self.image_size
      )
    return {
      "image": np.ascontiguousarray(img, np.uint8),
      "label": np.int32(rec["label"]),
      "index": np.int32(idx),
    }


class GrainStream:
  """Host batches ``{image: uint8 (b, S, S, 3), label: int32 (b,), index: int32 (b,)}`` of one
  process (``b = batch_size / process_count``), read by Grain.

  Same constructor and iteration as :class:`kdjax.data.stream.HostStream` (``num_threads`` ->
  ``num_workers``). Train streams shuffle and drop the last partial batch; eval streams keep the
  order and the last partial batch (one process only)."""

  def __init__(
    self,
    name: str,
    split: str,
    *,
    batch_size: int,
    seed: int = 0,
    train: bool,
    data_dir: Optional[str] = None,
    image_size: int = 224,
    eval_resize: int = 256,
    scale=(0.08, 1.0),
    ratio=(3 / 4, 4 / 3),
    flip: bool = True,
    shuffle: Optional[bool] = None,
    drop_remainder: Optional[bool] = None,
    num_workers: int = 0,
    worker_buffer_size: int = 2,
    limit: Optional[int] = None,
    source=None,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
    epoch: int = 0,
  ):
    self.info = get_info(name)
    self.name, self.split = name, split
    self.batch_size, self.seed, self.train = int(batch_size), int(seed), bool(train)
    self.image_size, self.eval_resize = int(image_size), int(eval_resize)
    self.scale, self.ratio, self.flip = tuple(scale), tuple(ratio), bool(flip)
    self.shuffle = self.train if shuffle is None else bool(shuffle)
    self.drop_remainder = self.train if drop_remainder is None else bool(drop_remainder)
    self.num_workers = checks.integer(
      "num_workers (0: decode in this process)", num_workers, minimum=0
    )
    self.worker_buffer_size = int(worker_buffer_size)
    self.epoch = int(epoch)
    if process_index is None or process_count is None:
      import jax  # pylint: disable=g-import-not-at-top

      process_index = jax.process_index() if process_index is None else process_index
      process_count = jax.process_count() if process_count is None else process_count
    self.process_index, self.process_count = int(process_index), int(process_count)
    self.local_batch_size = distributed.local_batch_size(self.batch_size, self.process_count)
    if self.process_count > 1 and not self.drop_remainder:
      raise UserError(
        "A stream split over several processes needs drop_remainder=True (every "
        "process must feed the same number of full batches)."
      )
    if source is None:
      try:
        source = arrays_lib.open_tfds_source(name, split, data_dir)
      except arrays_lib._Unavailable as e:  # pylint: disable=protected-access
        details = (
          []
          if e.args[0] == arrays_lib._NOT_PREPARED  # pylint: disable=protected-access
          else [f"TFDS: {e.args[0]}."]
        )
        raise DatasetNotFoundError(
          missing_dataset_message(name, split, data_dir, details)
        ) from None
    self.source = source
    self.num_examples = len(source) if limit is None else min(len(source), int(limit))
    self.index = arrays_lib.source_indices(source, split)
    self._index = self.index  # HostStream's name (kdjax.train.loop reads it)

  def __len__(self) -> int:
    return num_batches(self.num_examples, self.batch_size, drop_remainder=self.drop_remainder)

  def positions(self, epoch: int, offset: int = 0) -> np.ndarray:
    """Source positions this process reads for batches ``offset..`` of ``epoch``, in order."""
    batches = batch_indices(
      self.num_examples,
      self.batch_size,
      seed=self.seed,
      epoch=epoch,
      shuffle=self.shuffle,
      drop_remainder=self.drop_remainder,
    )[offset:]
    if not batches:
      return np.zeros((0,), np.int64)
    if self.process_count == 1:
      return np.concatenate(batches)
    lo = self.process_index * self.local_batch_size
    return np.concatenate([b[lo : lo + self.local_batch_size] for b in batches])

  def dataset(self, epoch: int, offset: int = 0):
    """The Grain pipeline of batches ``offset..`` of ``epoch`` (an ``IterDataset``)."""
    grain = _grain()
    load = _LoadTransform(
      self.source,
      self.index,
      epoch=epoch,
      seed=self.seed,
      train=self.train,
      image_size=self.image_size,
      eval_resize=self.eval_resize,
      scale=self.scale,
      ratio=self.ratio,
      flip=self.flip,
    )
    ds = grain.MapDataset.source(self.positions(epoch, offset)).map(load)
    # Batches are cut on the already batch-aligned positions; the tail (eval only) is partial.
    ds = ds.batch(self.local_batch_size, drop_remainder=False)
    ds = ds.to_iter_dataset()
    if self.num_workers > 0:
      ds = ds.mp_prefetch(
        grain.MultiprocessingOptions(
          num_workers=self.num_workers, per_worker_buffer_size=self.worker_buffer_size
        )
      )
    return ds

  def iter_epoch(self, epoch: int, offset: int = 0) -> Iterator[dict]:
    it = iter(self.dataset(epoch, offset))
    try:
      yield from it
    finally:
      close = getattr(it, "close", None)
      if close is not None:  # stops the worker processes
        close()

  def __iter__(self) -> Iterator[dict]:
    """One epoch, starting at ``epoch`` and advancing it (as HostStream)."""
    epoch = self.epoch
    self.epoch += 1
    return self.iter_epoch(epoch)


def _put(batch: dict, mesh, global_batch_size: int, process_count: int):
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top

  if process_count > 1:
    return distributed.put_process_local(batch, mesh, global_batch_size)
  n = mesh.devices.size
  out = {}
  for k, v in batch.items():
    spec = P(mesh.axis_names[0]) if v.shape[0] % n == 0 else P()  # partial eval tail
    out[k] = jax.device_put(v, NamedSharding(mesh, spec))
  return out


class GrainFeed:
  """The training loop's feed (the interface of ``kdjax.train.loop.StreamFeed``) over a
  :class:`GrainStream`: ``epoch(e, offset)`` yields device-sharded batches, ``prefetch`` of
  them copied ahead of the one the step is using."""

  def __init__(self, stream: GrainStream, mesh, *, prefetch: int = 2):
    self.stream, self.mesh, self.prefetch = stream, mesh, max(1, int(prefetch))
    if stream.process_count == 1 and stream.batch_size % mesh.devices.size:
      raise UserError(
        f"batch_size={stream.batch_size} is not divisible by the "
        f"{mesh.devices.size} devices: use a multiple of {mesh.devices.size}."
      )
    if stream.process_count > 1 and all(
      d.process_index == stream.process_index for d in mesh.devices.flat
    ):
      raise UserError(
        "With several processes the mesh must span every process's devices: "
        "build it with kdjax.distributed.global_mesh() (not jax.local_devices())."
      )
    self.index_space = int(np.max(stream.index)) + 1 if len(stream.index) else 0

  def steps_per_epoch(self) -> int:
    return len(self.stream)

  def epoch(self, epoch: int, offset: int = 0):
    s = self.stream
    queue = collections.deque()
    host = s.iter_epoch(epoch, offset)
    try:
      for b in host:
        queue.append(_put(b, self.mesh, s.batch_size, s.process_count))  # async copy
        if len(queue) > self.prefetch:
          yield queue.popleft()
      while queue:
        yield queue.popleft()
    finally:
      host.close()

  def run(self, steps, state, item, t_vars):
    return steps.train_batch(state, item, t_vars)


def eval_batches(stream: GrainStream):
  """``(images, labels)`` numpy batches of one pass (the loop's ``stream_batches``)."""
  for b in stream.iter_epoch(0):
    yield b["image"], b["label"]


__all__ = ["GrainStream", "GrainFeed", "eval_batches"]
