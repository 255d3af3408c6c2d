"""Whole splits of small datasets as in-memory numpy arrays.

Sources, in order:
  1. a prepared TFDS copy (array_record) read with `tfds.data_source(...,
     download=False)`; TensorFlow is not needed for this;
  2. for 'mnist' / 'fashion_mnist' only: the original IDX files;
  3. otherwise `DatasetNotFoundError` saying how to get the data.
Built datasets bypass TFDS: 'tiny_imagenet' (its original directory), Ojha et al.'s digit
domains 'mnist_rgb' / 'mnist_color' / 'mnist_m' / 'mnist_domains' (built from MNIST's IDX files
or TFDS copy by kdjax.data.domains.load_digit_domain) and the leave-one-domain-out sets 'pacs' /
'vlcs' (a directory tree, kdjax.data.domains.load_lodo).
The TFDS downloader is never reached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Any

import numpy as np

from kdjax.data import domains as domains_lib
from kdjax.data import idx as idx_lib
from kdjax.data import tiny_imagenet
from kdjax.data.registry import (
  DIGIT_DOMAIN_NAMES,
  LODO_DOMAINS,
  DatasetInfo,
  DatasetNotFoundError,
  IDX_DEFAULT_DIRS,
  IDX_ENV_VARS,
  missing_dataset_message,
)
from kdjax.data.registry import info as get_info
from kdjax.errors import UserError

log = logging.getLogger(__name__)

_CHUNK = 1024  # records fetched per data_source.__getitems__ call


@dataclasses.dataclass(frozen=True)
class ArraySplit:
  """A split held in memory.

  images: uint8 (N, H, W, C); labels: int32 (N,); index: int32 (N,) the
  example's position within its base split (for 'train[90%:]' of a 50k split
  the indices are 45000..49999), stable across runs and across `subset`.
  """

  images: np.ndarray
  labels: np.ndarray
  index: np.ndarray
  info: DatasetInfo
  split: str

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  def subset(self, n_or_indices) -> 'ArraySplit':
    """First `n` examples (an int), or the examples at the given positions
    (positions in this ArraySplit, not `index` values). `index` keeps the
    original values."""
    if isinstance(n_or_indices, (int, np.integer)):
      sel = slice(0, int(n_or_indices))
    else:
      sel = np.asarray(n_or_indices)
      if sel.dtype == bool:
        sel = np.flatnonzero(sel)
      elif not np.issubdtype(sel.dtype, np.integer):
        raise TypeError(f'subset() takes an int or integer indices, got dtype {sel.dtype}.')
    return dataclasses.replace(
      self, images=self.images[sel], labels=self.labels[sel], index=self.index[sel]
    )


# --------------------------------------------------------------------------
# Split specs ('train', 'train[:90%]', 'train[10:20]+test', ...)
# --------------------------------------------------------------------------


class _N:  # stands in for tfds.core.SplitInfo: only num_examples is read
  def __init__(self, n):
    self.num_examples = int(n)


def _absolute_instructions(split: str, sizes: dict[str, int]):
  """[(base_split, start, stop)] for a TFDS split spec, using TFDS's parser."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    instrs = tfds.core.ReadInstruction.from_spec(split).to_absolute(
      {k: _N(v) for k, v in sizes.items()}
    )
  except (ValueError, KeyError, AssertionError) as e:
    raise UserError(f'Bad split {split!r}: {e}') from None
  out = []
  for ins in instrs:
    n = sizes[ins.splitname]
    start = 0 if ins.from_ is None else ins.from_
    stop = n if ins.to is None else ins.to
    out.append((ins.splitname, start, max(start, stop)))
  return out


def _plain_split(split: str) -> bool:
  return split.isidentifier()


# --------------------------------------------------------------------------
# 1. TFDS
# --------------------------------------------------------------------------


_NOT_PREPARED = 'no prepared TFDS copy'


class _Unavailable(Exception):
  """TFDS has no usable copy; args[0] says why (for the final message)."""


class _DropVariantWarnings(logging.Filter):
  """TFDS warns 'Variant folder ... has no dataset_info.json' for every half-prepared or
  foreign version folder it scans; nothing a kdjax user can act on (kdjax says what it uses)."""

  def filter(self, record):
    return 'has no dataset_info.json' not in record.getMessage()


_VARIANT_FILTER = _DropVariantWarnings()


def _quiet_tfds_variants():
  """Installs (once) the filter on absl's logger, through which TFDS logs."""
  lg = logging.getLogger('absl')
  if _VARIANT_FILTER not in lg.filters:
    lg.addFilter(_VARIANT_FILTER)
  return contextlib.nullcontext()


def open_tfds_source(name: str, split: str, data_dir: str | None):
  """`tfds.data_source(..., download=False)`, or `_Unavailable(reason)`.

  Errors from a dataset that *is* prepared (e.g. a bad split name) become a
  ValueError with TFDS's message; nothing deep from TFDS propagates.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise _Unavailable(f'tensorflow_datasets cannot be imported ({e})') from None
  try:
    with _quiet_tfds_variants():
      return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # pylint: disable=broad-except
    err = f'{type(e).__name__}: {e}'.strip().splitlines()[0]
  # Classify: is there a prepared copy at all, and in a readable format?
  try:
    with _quiet_tfds_variants():
      builder = tfds.builder(name, data_dir=data_dir)
    prepared = builder.is_prepared()
    where = os.fspath(builder.data_dir)
  except Exception:  # pylint: disable=broad-except
    prepared, where = False, None
  if not prepared:
    raise _Unavailable(_NOT_PREPARED) from None
  try:
    from tensorflow_datasets.core import file_adapters  # pylint: disable=g-import-not-at-top

    formats = set(builder.info.available_file_formats())
    random_access = set(file_adapters.FileFormat.with_random_access())
    readable = bool(formats & random_access)
  except Exception:  # pylint: disable=broad-except
    readable, formats = True, set()
  if not readable:
    raise _Unavailable(
      f'a TFDS copy exists at {where} but in format(s) '
      f'{sorted(f.value for f in formats)}, which tfds.data_source cannot '
      f'read: delete it and prepare again with python -m kdjax.data.prepare '
      f'(which writes array_record)'
    ) from None
  raise UserError(f'TFDS could not open {name!r} split {split!r} from {where}: {err}') from None


def _split_sizes(source) -> dict[str, int] | None:
  try:
    splits = source.dataset_info.splits
    sizes = {k: int(v.num_examples) for k, v in splits.items()}
    return sizes or None
  except Exception:  # pylint: disable=broad-except
    return None


def source_indices(source, split: str) -> np.ndarray:
  """Index within the base split of each record of a TFDS data source."""
  n = len(source)
  if not _plain_split(split):
    sizes = _split_sizes(source)
    if sizes:
      try:
        parts = [np.arange(a, b) for _, a, b in _absolute_instructions(split, sizes)]
        idx = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if len(idx) == n:
          return idx.astype(np.int32)
      except ValueError:
        pass
    log.warning(
      'Could not map split %r to base-split indices; using positions 0..%d.', split, n - 1
    )
  return np.arange(n, dtype=np.int32)


def fetch_records(source, positions) -> list:
  """source records at `positions`, with one batched `__getitems__` call.

  Falls back to one `source[i]` per record when the source has no working
  `__getitems__` (e.g. `tfds.testing.mock_data`'s mock, whose `__getitems__`
  is not bound and raises TypeError).
  """
  positions = [int(p) for p in positions]
  if not getattr(source, '_kdjax_no_getitems', False):
    getitems = getattr(source, '__getitems__', None)
    if getitems is not None:
      try:
        return getitems(positions)
      except TypeError:
        try:
          source._kdjax_no_getitems = True  # pylint: disable=protected-access
        except AttributeError:
          pass
  return [source[p] for p in positions]


def source_to_arrays(
  source, *, limit: int | None = None, chunk: int = _CHUNK
) -> tuple[np.ndarray, np.ndarray]:
  """All records (or the first `limit`) of a TFDS data source as arrays.

  Records are fetched in chunks of `chunk` with `__getitems__` and written
  into preallocated arrays.
  """
  n = len(source)
  if limit is not None:
    n = min(n, max(0, int(limit)))
  if n == 0:
    return np.zeros((0, 0, 0, 0), np.uint8), np.zeros((0,), np.int32)
  images = labels = None
  for a in range(0, n, chunk):
    b = min(n, a + chunk)
    recs = fetch_records(source, range(a, b))
    if images is None:
      first = np.asarray(recs[0]['image'])
      images = np.empty((n,) + first.shape, np.uint8)
      labels = np.empty((n,), np.int32)
    for j, r in enumerate(recs):
      images[a + j] = r['image']  # raises if shapes differ
      labels[a + j] = r['label']
  return images, labels


def _fast_arrays(name: str, split: str, data_dir: str | None, source, n: int, chunk: int = 4096):
  """Faster equivalent of `source_to_arrays` for {image, label} datasets.

  Reads raw tf.Example records, parses them with TFDS's bundled protobuf
  classes and decodes images with PIL directly, skipping TFDS's generic
  per-feature decoding (about 2x faster for CIFAR). Returns None when it does
  not apply or its first records differ from TFDS's own decoding; the caller
  then uses `source_to_arrays`.
  """
  if n == 0:
    return None
  try:
    import io  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from PIL import Image  # pylint: disable=g-import-not-at-top
    from tensorflow_datasets.core import decode  # pylint: disable=g-import-not-at-top
    from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top

    feats = source.dataset_info.features
    if not (
      isinstance(feats['image'], tfds.features.Image)
      and isinstance(feats['label'], tfds.features.ClassLabel)
      and np.dtype(feats['image'].np_dtype) == np.uint8
      and None not in tuple(feats['image'].shape)
    ):
      return None
    shape = tuple(feats['image'].shape)
    raw = tfds.data_source(
      name,
      split=split,
      data_dir=data_dir,
      download=False,
      deserialize_method=decode.DeserializeMethod.RAW_BYTES,
    )
    if len(raw) != len(source):
      return None
    parse = tf_example_pb2.Example.FromString
    images = np.empty((n,) + shape, np.uint8)
    labels = np.empty((n,), np.int32)
    for a in range(0, n, chunk):
      b = min(n, a + chunk)
      recs = raw.__getitems__(list(range(a, b)))
      for j, rec in enumerate(recs):
        f = parse(bytes(rec)).features.feature
        with Image.open(io.BytesIO(f['image'].bytes_list.value[0])) as im:
          images[a + j] = np.asarray(im).reshape(shape)
        labels[a + j] = f['label'].int64_list.value[0]
      if a == 0:  # check against TFDS's own decoding
        k = min(4, b)
        ref = fetch_records(source, range(k))
        if not all(
          np.array_equal(np.asarray(r['image']), images[i]) and int(r['label']) == labels[i]
          for i, r in enumerate(ref)
        ):
          log.warning(
            'kdjax fast TFDS decoding disagrees with TFDS for %s; using TFDS decoding.', name
          )
          return None
    return images, labels
  except Exception:  # pylint: disable=broad-except
    log.debug('fast TFDS decoding not applicable', exc_info=True)
    return None


# --------------------------------------------------------------------------
# 2. IDX files
# --------------------------------------------------------------------------

_IDX_PREFIX = {'train': 'train', 'test': 't10k'}


def _idx_file(directory: str, prefix: str, kind: str) -> str | None:
  # kind: 'images-idx3' / 'labels-idx1'
  what, dims = kind.split('-')
  for stem in (f'{prefix}-{what}-{dims}-ubyte', f'{prefix}-{what}.{dims}-ubyte'):
    for ext in ('.gz', ''):
      p = os.path.join(directory, stem + ext)
      if os.path.isfile(p):
        return p
  return None


def idx_dirs(name: str, idx_dir: str | None) -> list[str]:
  """Candidate directories for the IDX files, in order."""
  if idx_dir is not None:
    return [os.fspath(idx_dir)]
  dirs = []
  env = os.environ.get(IDX_ENV_VARS[name])
  if env:
    dirs.append(env)
  dirs.extend(IDX_DEFAULT_DIRS.get(name, ()))
  return dirs


def _find_idx_dir(name: str, idx_dir: str | None) -> str | None:
  for d in idx_dirs(name, idx_dir):
    if all(
      _idx_file(d, p, k) for p in _IDX_PREFIX.values() for k in ('images-idx3', 'labels-idx1')
    ):
      return d
  return None


def load_idx_split(directory: str, base_split: str, *, max_items: int | None = None):
  """(images uint8 (N,H,W,1), labels int32 (N,)) of 'train' or 'test'."""
  prefix = _IDX_PREFIX[base_split]
  ipath = _idx_file(directory, prefix, 'images-idx3')
  lpath = _idx_file(directory, prefix, 'labels-idx1')
  if ipath is None or lpath is None:
    raise FileNotFoundError(f'IDX files for split {base_split!r} not found in {directory!r}.')
  images = idx_lib.read_idx(ipath, max_items=max_items)
  labels = idx_lib.read_idx(lpath, max_items=max_items)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise idx_lib.IdxFormatError(
      f'{ipath!r}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}.'
    )
  if labels.ndim != 1:
    raise idx_lib.IdxFormatError(f'{lpath!r}: expected labels of shape (N,), got {labels.shape}.')
  if len(images) != len(labels):
    raise idx_lib.IdxFormatError(
      f'{ipath!r} has {len(images)} images but {lpath!r} has {len(labels)} labels.'
    )
  return images[..., None], labels.astype(np.int32)


def _load_idx(name, split, directory, limit, info):
  sizes = {}
  for s, prefix in _IDX_PREFIX.items():
    _, dims = idx_lib.read_idx_header(_idx_file(directory, prefix, 'labels-idx1'))
    sizes[s] = dims[0]
  instrs = _absolute_instructions(split, sizes)
  remaining = None if limit is None else max(0, int(limit))
  imgs, labs, idxs = [], [], []
  for base, a, b in instrs:
    if remaining is not None:
      b = min(b, a + remaining)
      remaining -= b - a
    if b <= a:
      continue
    im, lb = load_idx_split(directory, base, max_items=b)
    imgs.append(im[a:b])
    labs.append(lb[a:b])
    idxs.append(np.arange(a, b, dtype=np.int32))
  if not imgs:
    h, w, c = info.image_shape
    return (np.zeros((0, h, w, c), np.uint8), np.zeros((0,), np.int32), np.zeros((0,), np.int32))
  if len(imgs) == 1:
    return imgs[0], labs[0], idxs[0]
  return np.concatenate(imgs), np.concatenate(labs), np.concatenate(idxs)


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def load_arrays(
  name: str,
  split: str,
  *,
  data_dir: str | None = None,
  idx_dir: str | None = None,
  limit: int | None = None,
) -> ArraySplit:
  """Loads a whole split (or its first `limit` examples) into memory.

  `split` is a TFDS split spec: 'train', 'test', 'train[:90%]',
  'train[45000:]', ... `index` holds each example's position in its base split.
  Raises ValueError for an unknown dataset or bad split, DatasetNotFoundError
  (a FileNotFoundError) when no source has the data.
  """
  info = get_info(name)
  if not info.in_memory:
    raise UserError(
      f'{name!r} is too large to hold in memory; use '
      f'kdjax.data.stream.HostStream({name!r}, {split!r}, ...) instead.'
    )
  if not isinstance(split, str) or not split:
    raise UserError(f'split must be a non-empty string, got {split!r}.')
  if name == tiny_imagenet.NAME:  # no TFDS builder: the original tiny-imagenet-200 directory
    images, labels, index = tiny_imagenet.load(split, data_dir=data_dir, limit=limit)
    return _checked(
      ArraySplit(images, labels, index, info, split), 'the tiny-imagenet-200 directory'
    )
  if name in DIGIT_DOMAIN_NAMES:  # built from MNIST (idx_dir / data_dir name MNIST's copy)
    s = domains_lib.load_digit_domain(name, split, idx_dir=idx_dir, data_dir=data_dir, limit=limit)
    return _checked(s, 'MNIST')
  if name in LODO_DOMAINS:  # data_dir = the <root>/<domain>/<class>/ tree
    return _checked(domains_lib.load_lodo(name, split, data_dir=data_dir, limit=limit), 'its tree')
  details = []
  # 1. Prepared TFDS data.
  try:
    source = open_tfds_source(name, split, data_dir)
  except _Unavailable as e:
    if e.args[0] != _NOT_PREPARED:
      details.append(f'TFDS: {e.args[0]}.')
  else:
    n = len(source) if limit is None else min(len(source), max(0, int(limit)))
    fast = _fast_arrays(name, split, data_dir, source, n)
    images, labels = fast if fast is not None else source_to_arrays(source, limit=limit)
    index = source_indices(source, split)[: len(labels)]
    if len(labels) == 0:
      images = np.zeros((0,) + tuple(info.image_shape), np.uint8)
    return _checked(ArraySplit(images, labels, index, info, split), 'TFDS')
  # 2. IDX files.
  if name in IDX_ENV_VARS:
    directory = _find_idx_dir(name, idx_dir)
    if directory is not None:
      images, labels, index = _load_idx(name, split, directory, limit, info)
      return _checked(ArraySplit(images, labels, index, info, split), f'IDX files in {directory}')
    details.append(
      'IDX: no train-/t10k- images-idx3/labels-idx1 files in '
      + ', '.join(repr(d) for d in idx_dirs(name, idx_dir))
      + (
        ''
        if idx_dir is not None
        else f' (${IDX_ENV_VARS[name]} is '
        + ('not set' if not os.environ.get(IDX_ENV_VARS[name]) else 'set')
        + ')'
      )
      + '.'
    )
  # 3. Nothing.
  raise DatasetNotFoundError(missing_dataset_message(name, split, data_dir, details)) from None


def _checked(s: ArraySplit, source: str) -> ArraySplit:
  if len(s.labels) and s.images.shape[1:] != tuple(s.info.image_shape):
    raise UserError(
      f'{s.info.name} from {source}: images have shape {s.images.shape[1:]}, '
      f'expected {tuple(s.info.image_shape)}.'
    )
  if len(s.labels) and (s.labels.min() < 0 or s.labels.max() >= s.info.num_classes):
    raise UserError(f'{s.info.name} from {source}: labels outside 0..{s.info.num_classes - 1}.')
  return s
