"""Deterministic weights of the parity fixtures (pure numpy; shared by the generator and the test).

Storing float32 state dicts of all 26 fixture models would take ~650 MB, so a fixture stores the
*recipe* instead: for every state-dict key its kind, shape and seed, plus a CRC32 of the tensor's
bytes. ``state_dict(fixture)`` rebuilds the exact float32 tensors the PyTorch reference ran with
(``PCG64(seed).random()`` is a bit-exact stream across NumPy versions and platforms; the checksums
catch it if that ever changes).

Value ranges: BN weight U(0.5, 1.5), bias U(-0.2, 0.2); conv weights He-uniform
U(+-sqrt(6 / fan_in)); linear weights U(+-1 / sqrt(fan_in)); conv/linear biases U(-0.1, 0.1);
``num_batches_tracked`` = 0 (int64). BN running statistics (kind ``stored``) are not drawn from a
recipe: the generator calibrates them with train-mode forward passes on random inputs (so eval-mode
BN is a non-trivial affine map that keeps deep nets' activations O(1)) and the fixture stores them
verbatim as ``sd_value/<key>``; they are small.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

KINDS = ("conv", "linear", "bias", "bn_weight", "bn_bias", "count", "stored")


def seed_for(arch: str, key: str) -> int:
  return zlib.crc32(f"{arch}/{key}".encode())


def make_tensor(kind: str, shape, seed: int) -> np.ndarray:
  shape = tuple(int(s) for s in shape)
  if kind == "count":
    return np.zeros(shape, np.int64)
  n = int(np.prod(shape)) if shape else 1
  if kind == "conv":
    b = math.sqrt(6.0 / (shape[1] * shape[2] * shape[3]))
    lo, hi = -b, b
  elif kind == "linear":
    b = 1.0 / math.sqrt(shape[1])
    lo, hi = -b, b
  else:
    lo, hi = {"bias": (-0.1, 0.1), "bn_weight": (0.5, 1.5), "bn_bias": (-0.2, 0.2)}[kind]
  u = np.random.Generator(np.random.PCG64(seed)).random(n)  # float64 in [0, 1)
  return (lo + (hi - lo) * u).astype(np.float32).reshape(shape)


def state_dict(fixture) -> dict:
  """Rebuilds ``{torch key: array}`` from a fixture's ``sd_*`` arrays and checks the checksums."""
  keys = [str(k) for k in fixture["sd_keys"]]
  kinds = [str(k) for k in fixture["sd_kinds"]]
  ndims = fixture["sd_ndims"]
  dims = list(fixture["sd_dims"])
  out = {}
  for key, kind, nd, seed, chk in zip(
    keys, kinds, ndims, fixture["sd_seeds"], fixture["sd_checksums"]
  ):
    shape, dims = dims[:nd], dims[nd:]
    if kind == "stored":
      t = np.asarray(fixture[f"sd_value/{key}"])
    else:
      t = make_tensor(kind, shape, int(seed))
    if zlib.crc32(t.tobytes()) != int(chk):
      raise AssertionError(
        f"recipe drift for {key}: its values differ from the generator's "
        "(NumPy changed PCG64.random?); regenerate the fixtures."
      )
    out[key] = t
  return out


def recipe_arrays(arch: str, entries, stored=None) -> dict:
  """``entries``: [(key, kind, shape)] -> the ``sd_*`` arrays stored in a fixture.

  ``stored`` maps the keys of kind ``stored`` to their float32 values.
  """
  stored = stored or {}
  keys, kinds, ndims, dims, seeds, sums = [], [], [], [], [], []
  out = {}
  for key, kind, shape in entries:
    seed = seed_for(arch, key)
    if kind == "stored":
      t = np.asarray(stored[key], np.float32)
      assert t.shape == tuple(shape), key
      out[f"sd_value/{key}"] = t
    else:
      t = make_tensor(kind, shape, seed)
    keys.append(key)
    kinds.append(kind)
    ndims.append(len(shape))
    dims.extend(int(s) for s in shape)
    seeds.append(seed)
    sums.append(zlib.crc32(t.tobytes()))
  return {
    **out,
    "sd_keys": np.array(keys),
    "sd_kinds": np.array(kinds),
    "sd_ndims": np.array(ndims, np.int64),
    "sd_dims": np.array(dims, np.int64),
    "sd_seeds": np.array(seeds, np.int64),
    "sd_checksums": np.array(sums, np.int64),
  }
