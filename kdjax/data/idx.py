"""Reader for the IDX format of the original (Fashion-)MNIST files.

IDX: two zero bytes, a dtype code byte, a byte with the number of dimensions,
then one big-endian uint32 per dimension, then the data (big-endian, C order).
Files may be gzipped (detected by content, not by name).
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from kdjax.errors import UserError

_DTYPES = {
  0x08: np.dtype('u1'),
  0x09: np.dtype('i1'),
  0x0B: np.dtype('>i2'),
  0x0C: np.dtype('>i4'),
  0x0D: np.dtype('>f4'),
  0x0E: np.dtype('>f8'),
}
_GZIP_MAGIC = b'\x1f\x8b'


class IdxFormatError(UserError):
  """An IDX file is corrupt, truncated or not an IDX file."""


def _open(path):
  with open(path, 'rb') as f:
    head = f.read(2)
  return gzip.open(path, 'rb') if head == _GZIP_MAGIC else open(path, 'rb')


def _read_exact(f, n: int, path, what: str) -> bytearray:
  data = bytearray(n)  # writable, so the final array is writable too
  view = memoryview(data)
  got = 0
  try:
    while got < n:
      k = f.readinto(view[got:])
      if not k:
        break
      got += k
  except (EOFError, OSError, zlib.error) as e:  # truncated / corrupt gzip
    raise IdxFormatError(
      f'IDX file {os.fspath(path)!r} is corrupt or truncated (while reading {what}): {e}'
    ) from None
  if got != n:
    raise IdxFormatError(
      f'IDX file {os.fspath(path)!r} is truncated: expected {n} bytes of {what}, got {got}.'
    )
  return data


def _read_header(f, path) -> tuple[np.dtype, tuple[int, ...]]:
  magic = _read_exact(f, 4, path, 'magic number')
  if magic[0] != 0 or magic[1] != 0 or magic[2] not in _DTYPES or not (1 <= magic[3] <= 8):
    raise IdxFormatError(
      f'{os.fspath(path)!r} is not an IDX file (bad magic number 0x{magic.hex()}).'
    )
  ndim = magic[3]
  dims = tuple(
    int(x) for x in np.frombuffer(_read_exact(f, 4 * ndim, path, 'dimensions'), dtype='>u4')
  )
  return _DTYPES[magic[2]], dims


def read_idx_header(path) -> tuple[np.dtype, tuple[int, ...]]:
  """Returns (dtype, shape) of an IDX file without reading its data."""
  with _open(path) as f:
    return _read_header(f, path)


def read_idx(path, *, max_items: int | None = None) -> np.ndarray:
  """Reads an IDX file (gzipped or not) into a numpy array (native byte order).

  Args:
    path: the file.
    max_items: read only the first `max_items` entries along axis 0 (the rest
      of the file is then not checked).

  Raises:
    IdxFormatError (a ValueError) naming the file if it is corrupt, truncated
    or has trailing data.
  """
  with _open(path) as f:
    dtype, dims = _read_header(f, path)
    n = dims[0] if max_items is None else min(dims[0], max(0, int(max_items)))
    shape = (n,) + dims[1:]
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    data = _read_exact(f, nbytes, path, f'data (shape {dims})')
    if n == dims[0]:
      extra = _read_exact_or_less(f, path)
      if extra:
        raise IdxFormatError(
          f'IDX file {os.fspath(path)!r} has trailing data after the '
          f'{dims} array declared in its header.'
        )
  arr = np.frombuffer(data, dtype=dtype).reshape(shape)
  return arr.astype(dtype.newbyteorder('='), copy=False) if (dtype.itemsize > 1) else arr


def _read_exact_or_less(f, path) -> bytes:
  try:
    return f.read(1)
  except (EOFError, OSError, zlib.error) as e:
    raise IdxFormatError(f'IDX file {os.fspath(path)!r} is corrupt or truncated: {e}') from None
