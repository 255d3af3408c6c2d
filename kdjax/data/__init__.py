"""kdjax.data: datasets as in-memory arrays or host streams, and on-device
augmentation. TensorFlow is never needed to read data."""

from kdjax.data import augment, domains
from kdjax.data.arrays import ArraySplit, load_arrays
from kdjax.data.augment import eval_transform, normalize, random_crop_flip, train_transform
from kdjax.data.batching import batch_indices
from kdjax.data.holdout import holdout_positions, split_holdout
from kdjax.data.idx import IdxFormatError, read_idx
from kdjax.data.registry import KNOWN_DATASETS, DatasetInfo, DatasetNotFoundError, info
from kdjax.data.stream import HostStream

__all__ = [
  'ArraySplit',
  'DatasetInfo',
  'DatasetNotFoundError',
  'HostStream',
  'IdxFormatError',
  'KNOWN_DATASETS',
  'augment',
  'domains',
  'batch_indices',
  'eval_transform',
  'holdout_positions',
  'info',
  'load_arrays',
  'normalize',
  'random_crop_flip',
  'read_idx',
  'split_holdout',
  'train_transform',
]
