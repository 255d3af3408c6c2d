"""Tiny-ImageNet (Le & Yang, CS231n 2015): 200 classes, 64x64 RGB, from its original directory.

TFDS has no Tiny-ImageNet builder, so kdjax reads the standard layout of
``tiny-imagenet-200.zip`` (http://cs231n.stanford.edu/tiny-imagenet-200.zip)::

  tiny-imagenet-200/wnids.txt                         200 WordNet ids
  tiny-imagenet-200/train/<wnid>/images/*.JPEG        500 per class (100,000)
  tiny-imagenet-200/val/images/*.JPEG                 10,000
  tiny-imagenet-200/val/val_annotations.txt           <file>\\t<wnid>\\t<box...>
  (tiny-imagenet-200/test/ has no labels and is not used)

Splits: ``train`` and ``validation`` (the labelled ``val/`` folder, what mdistiller, CheckpointKD
and the calibration paper report on), with TFDS slicing (``train[:90%]``, ``train[90%:]``, ...).
Labels are the positions of the wnids in **sorted** order, i.e. torchvision ``ImageFolder``'s class
indices as used by mdistiller (``mdistiller/dataset/tiny_imagenet.py``), not the order of
``wnids.txt``. Training examples are ordered class by class, file names sorted within a class;
validation examples by file name. ``index`` is the position in that base split. Greyscale JPEGs
are converted to RGB (as ``ImageFolder``'s PIL loader does).

Where it is looked for: ``data_dir`` (the ``tiny-imagenet-200`` folder itself or the folder that
holds it), then ``$KDJAX_TINY_IMAGENET_DIR`` (same rule). Decoding the 110,000 JPEGs takes a minute
or two; a full base split is cached as ``<root>/kdjax_cache_<split>.npz`` when the folder is
writable (delete it to re-read the JPEGs).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from kdjax.errors import UserError

NAME = "tiny_imagenet"
ENV_VAR = "KDJAX_TINY_IMAGENET_DIR"
FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
NUM_CLASSES = 200
IMAGE_SIZE = 64
SIZES = {"train": 100_000, "validation": 10_000}
CACHE_VERSION = 1


class TinyImageNetNotFoundError(UserError, FileNotFoundError):
  """No Tiny-ImageNet directory was found; the message says how to get one."""


def _is_root(path: str) -> bool:
  return (
    os.path.isfile(os.path.join(path, "wnids.txt"))
    and os.path.isdir(os.path.join(path, "train"))
    and os.path.isdir(os.path.join(path, "val"))
  )


def candidate_dirs(data_dir: str | None) -> list[str]:
  """Where :func:`find_root` looks, in order."""
  out = []
  for base in (data_dir, os.environ.get(ENV_VAR)):
    if base:
      base = os.path.expanduser(base)
      out += [base, os.path.join(base, FOLDER)]
  return out


def missing_message(data_dir: str | None) -> str:
  where = ", ".join(repr(d) for d in candidate_dirs(data_dir)) or "nowhere"
  env = "set" if os.environ.get(ENV_VAR) else "not set"
  return (
    f"Tiny-ImageNet was not found (looked in {where}; ${ENV_VAR} is {env}): download "
    f"{URL}, unzip it and pass --config.dataset.data_dir=DIR (DIR/{FOLDER}/wnids.txt "
    f"must exist) or set {ENV_VAR}=DIR."
  )


def find_root(data_dir: str | None = None) -> str:
  """The ``tiny-imagenet-200`` directory, or :class:`TinyImageNetNotFoundError`."""
  for d in candidate_dirs(data_dir):
    if _is_root(d):
      return d
  raise TinyImageNetNotFoundError(missing_message(data_dir))


def read_wnids(root: str) -> list[str]:
  """The sorted wnids (label i = ``read_wnids(root)[i]``); checks there are 200 of them."""
  with open(os.path.join(root, "wnids.txt")) as fh:
    wnids = sorted({w.strip() for w in fh if w.strip()})
  if len(wnids) != NUM_CLASSES:
    raise UserError(
      f"{root}/wnids.txt lists {len(wnids)} distinct wnids, Tiny-ImageNet has "
      f"{NUM_CLASSES}: point dataset.data_dir at an unmodified {FOLDER} folder."
    )
  return wnids


def list_split(root: str, split: str) -> tuple[list[str], np.ndarray]:
  """(image paths, int32 labels) of the base split ``train`` or ``validation``, in order."""
  wnids = read_wnids(root)
  label_of = {w: i for i, w in enumerate(wnids)}
  paths, labels = [], []
  if split == "train":
    for w in wnids:
      d = os.path.join(root, "train", w, "images")
      if not os.path.isdir(d):
        raise UserError(f"Tiny-ImageNet: {d} is missing: unzip {FOLDER}.zip again.")
      files = sorted(f for f in os.listdir(d) if f.lower().endswith((".jpeg", ".jpg", ".png")))
      paths += [os.path.join(d, f) for f in files]
      labels += [label_of[w]] * len(files)
  elif split == "validation":
    ann = os.path.join(root, "val", "val_annotations.txt")
    if not os.path.isfile(ann):
      raise UserError(
        f"Tiny-ImageNet: {ann} is missing: unzip {FOLDER}.zip again (the val/ "
        "folder must keep its original layout)."
      )
    rows = []
    with open(ann) as fh:
      for line in fh:
        parts = line.strip().split("\t")
        if len(parts) < 2:
          continue
        if parts[1] not in label_of:
          raise UserError(
            f"Tiny-ImageNet: {ann} names wnid {parts[1]!r}, which is not in wnids.txt."
          )
        rows.append((parts[0], label_of[parts[1]]))
    rows.sort()
    paths = [os.path.join(root, "val", "images", f) for f, _ in rows]
    labels = [y for _, y in rows]
  else:
    raise UserError(
      f"Tiny-ImageNet has the splits 'train' and 'validation' (its test/ folder has "
      f"no labels), got {split!r}."
    )
  return paths, np.asarray(labels, np.int32)


def _decode(path: str) -> np.ndarray:
  with Image.open(path) as im:
    img = np.asarray(im.convert("RGB"), np.uint8)
  if img.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
    raise UserError(
      f"Tiny-ImageNet image {path} is {img.shape[1]}x{img.shape[0]}, expected "
      f"{IMAGE_SIZE}x{IMAGE_SIZE}: use the original {FOLDER} files."
    )
  return img


def _decode_all(paths) -> np.ndarray:
  out = np.zeros((len(paths), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  for i, p in enumerate(paths):
    out[i] = _decode(p)
  return out


def _cached(root: str, split: str, paths, labels) -> np.ndarray:
  """All images of a base split: from ``<root>/kdjax_cache_<split>.npz`` when it matches the
  listing, else decoded (and cached if ``root`` is writable)."""
  cache = os.path.join(root, f"kdjax_cache_{split}.npz")
  if os.path.isfile(cache):
    with np.load(cache) as f:
      if (
        int(f["version"]) == CACHE_VERSION
        and f["labels"].shape == labels.shape
        and np.array_equal(f["labels"], labels)
      ):
        return f["images"]
  images = _decode_all(paths)
  if os.access(root, os.W_OK):
    tmp = cache + ".tmp.npz"
    np.savez(tmp, images=images, labels=labels, version=np.array(CACHE_VERSION))
    os.replace(tmp, cache)
  return images


def _instructions(split: str, sizes: dict) -> list[tuple[str, int, int]]:
  """[(base_split, start, stop)] of a TFDS split spec (TFDS's own parser)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class _N:  # stands in for tfds.core.SplitInfo: only num_examples is read
    def __init__(self, n):
      self.num_examples = int(n)

  try:
    instrs = tfds.core.ReadInstruction.from_spec(split).to_absolute(
      {k: _N(v) for k, v in sizes.items()}
    )
  except (ValueError, KeyError, AssertionError) as e:
    raise UserError(
      f"Tiny-ImageNet: bad split {split!r} ({e}); the splits are 'train' and "
      "'validation', with TFDS slicing such as 'train[:90%]'."
    ) from None
  out = []
  for ins in instrs:
    start = 0 if ins.from_ is None else ins.from_
    stop = sizes[ins.splitname] if ins.to is None else ins.to
    out.append((ins.splitname, start, max(start, stop)))
  return out


def load(
  split: str = "train", *, data_dir: str | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(images, labels, index)`` of a Tiny-ImageNet split spec over ``train`` / ``validation``:
  uint8 (N, 64, 64, 3), int32 (N,) labels, int32 (N,) positions in the base split; ``limit``
  keeps the first N. (``kdjax.data.load_arrays('tiny_imagenet', ...)`` wraps this.)"""
  if not isinstance(split, str) or not split:
    raise UserError(f"split must be a non-empty string, got {split!r}.")
  root = find_root(data_dir)
  listed = {k: list_split(root, k) for k in SIZES}
  sizes = {k: len(v[1]) for k, v in listed.items()}
  left = None if limit is None else max(0, int(limit))
  imgs, labs, idxs = [], [], []
  for base, start, stop in _instructions(split, sizes):
    if left is not None:
      stop = min(stop, start + left)
      left -= stop - start
    paths, labels = listed[base]
    if stop - start > sizes[base] // 2:  # most of a base split: decode once, then cached
      images = _cached(root, base, paths, labels)[start:stop]
    else:
      images = _decode_all(paths[start:stop])
    imgs.append(images)
    labs.append(labels[start:stop])
    idxs.append(np.arange(start, stop, dtype=np.int32))
  empty = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  return (
    np.concatenate(imgs) if imgs else empty,
    np.concatenate(labs) if labs else np.zeros(0, np.int32),
    np.concatenate(idxs) if idxs else np.zeros(0, np.int32),
  )
