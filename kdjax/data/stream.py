"""Host-side streaming input for datasets too large for memory (ImageNet).

`HostStream` reads a prepared TFDS copy through `tfds.data_source` (no
TensorFlow) and applies the torchvision-style ImageNet transforms with
numpy/PIL on the host:
  train: RandomResizedCrop(224, scale=(0.08, 1), ratio=(3/4, 4/3)) + flip
  eval:  Resize(256) (shorter side) + CenterCrop(224)
Everything random is drawn from a numpy Generator seeded by (seed, epoch,
example index), so a batch's content depends only on (seed, epoch) and not
on threading or batch composition.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
from PIL import Image

from kdjax.data import arrays as arrays_lib
from kdjax.data.batching import batch_indices, epoch_rng, num_batches
from kdjax.data.registry import DatasetNotFoundError, missing_dataset_message
from kdjax.data.registry import info as get_info

_BILINEAR = Image.Resampling.BILINEAR


def _as_rgb(img: np.ndarray) -> np.ndarray:
  img = np.asarray(img)
  if img.ndim == 2:
    img = img[..., None]
  if img.shape[-1] == 1:
    img = np.repeat(img, 3, axis=-1)
  elif img.shape[-1] == 4:
    img = img[..., :3]
  return np.ascontiguousarray(img, dtype=np.uint8)


def random_resized_crop_box(
  height: int, width: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
):
  """(top, left, h, w) as torchvision's RandomResizedCrop.get_params."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  # Fallback: central crop with the aspect ratio clamped into `ratio`.
  in_ratio = width / height
  if in_ratio < min(ratio):
    w = width
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    h = height
    w = int(round(h * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
  img: np.ndarray,
  rng: np.random.Generator,
  *,
  size: int = 224,
  scale=(0.08, 1.0),
  ratio=(3 / 4, 4 / 3),
) -> np.ndarray:
  """uint8 (size, size, 3): random crop resized bilinearly (PIL)."""
  img = _as_rgb(img)
  top, left, h, w = random_resized_crop_box(img.shape[0], img.shape[1], rng, scale, ratio)
  out = Image.fromarray(img).resize((size, size), _BILINEAR, box=(left, top, left + w, top + h))
  return np.asarray(out)


def resize_shorter_center_crop(
  img: np.ndarray, *, resize: int = 256, size: int = 224
) -> np.ndarray:
  """uint8 (size, size, 3): torchvision Resize(resize) + CenterCrop(size)."""
  img = _as_rgb(img)
  h, w = img.shape[:2]
  if h <= w:
    nh, nw = resize, int(resize * w / h)
  else:
    nh, nw = int(resize * h / w), resize
  out = np.asarray(Image.fromarray(img).resize((nw, nh), _BILINEAR))
  if nh < size or nw < size:  # only when resize < size
    padded = np.zeros((max(nh, size), max(nw, size), 3), np.uint8)
    padded[:nh, :nw] = out
    out, nh, nw = padded, max(nh, size), max(nw, size)
  top = int(round((nh - size) / 2.0))
  left = int(round((nw - size) / 2.0))
  return out[top : top + size, left : left + size]


def train_image_transform(
  img,
  rng: np.random.Generator,
  *,
  size: int = 224,
  scale=(0.08, 1.0),
  ratio=(3 / 4, 4 / 3),
  flip: bool = True,
) -> np.ndarray:
  out = random_resized_crop(img, rng, size=size, scale=scale, ratio=ratio)
  if flip and rng.random() < 0.5:
    out = out[:, ::-1]
  return out


def eval_image_transform(img, *, resize: int = 256, size: int = 224) -> np.ndarray:
  return resize_shorter_center_crop(img, resize=resize, size=size)


class HostStream:
  """Batches {image: uint8 (B, size, size, 3), label: int32, index: int32}.

  Iterating yields one epoch, starting at `epoch` (default 0) and advancing
  it; `iter_epoch(e)` yields epoch `e` (same batches every time for the same
  seed). Train streams shuffle and drop the last partial batch by default;
  eval streams keep the order and the last partial batch.
  """

  def __init__(
    self,
    name: str,
    split: str,
    *,
    batch_size: int,
    seed: int = 0,
    train: bool,
    data_dir: str | None = None,
    image_size: int = 224,
    eval_resize: int = 256,
    scale=(0.08, 1.0),
    ratio=(3 / 4, 4 / 3),
    flip: bool = True,
    shuffle: bool | None = None,
    drop_remainder: bool | None = None,
    num_threads: int = 0,
    limit: int | None = None,
    epoch: int = 0,
    source=None,
  ):
    self.info = get_info(name)
    self.name, self.split = name, split
    self.batch_size, self.seed, self.train = int(batch_size), int(seed), train
    self.image_size, self.eval_resize = image_size, eval_resize
    self.scale, self.ratio, self.flip = tuple(scale), tuple(ratio), flip
    self.shuffle = train if shuffle is None else shuffle
    self.drop_remainder = train if drop_remainder is None else drop_remainder
    self.num_threads = int(num_threads)
    self.epoch = int(epoch)
    if source is None:
      try:
        source = arrays_lib.open_tfds_source(name, split, data_dir)
      except arrays_lib._Unavailable as e:  # pylint: disable=protected-access
        details = (
          []
          if e.args[0] == arrays_lib._NOT_PREPARED  # pylint: disable=protected-access
          else [f'TFDS: {e.args[0]}.']
        )
        raise DatasetNotFoundError(
          missing_dataset_message(name, split, data_dir, details)
        ) from None
    self.source = source
    self.num_examples = len(source) if limit is None else min(len(source), int(limit))
    self._index = arrays_lib.source_indices(source, split)

  def __len__(self) -> int:
    return num_batches(self.num_examples, self.batch_size, drop_remainder=self.drop_remainder)

  def _one(self, rec, pos: int, epoch: int) -> np.ndarray:
    if self.train:
      rng = epoch_rng(self.seed, epoch, int(self._index[pos]))
      return train_image_transform(
        rec['image'], rng, size=self.image_size, scale=self.scale, ratio=self.ratio, flip=self.flip
      )
    return eval_image_transform(rec['image'], resize=self.eval_resize, size=self.image_size)

  def iter_epoch(self, epoch: int) -> Iterator[dict]:
    batches = batch_indices(
      self.num_examples,
      self.batch_size,
      seed=self.seed,
      epoch=epoch,
      shuffle=self.shuffle,
      drop_remainder=self.drop_remainder,
    )
    pool = ThreadPoolExecutor(self.num_threads) if self.num_threads > 1 else None
    try:
      for positions in batches:
        pos = [int(p) for p in positions]
        recs = arrays_lib.fetch_records(self.source, pos)
        args = list(zip(recs, pos))
        if pool is not None:
          imgs = list(pool.map(lambda a: self._one(a[0], a[1], epoch), args))
        else:
          imgs = [self._one(r, p, epoch) for r, p in args]
        yield {
          'image': np.stack(imgs),
          'label': np.asarray([r['label'] for r in recs], np.int32),
          'index': self._index[np.asarray(pos, np.int64)].astype(np.int32),
        }
    finally:
      if pool is not None:
        pool.shutdown()

  def __iter__(self) -> Iterator[dict]:
    epoch = self.epoch
    self.epoch += 1
    return self.iter_epoch(epoch)
