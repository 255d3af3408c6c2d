"""Data parallelism over all devices (of one process, or of every process under jax.distributed).

kdjax uses ``jax.jit`` over a 1-D ``Mesh(devices, ('data',))``: the batch (or the batch of dataset
indices) is sharded along ``data``, everything else (train state, teacher, on-device dataset) is
replicated. The step is written in the *global* view, so XLA's SPMD partitioner inserts the
gradient all-reduce, and BatchNorm statistics and batch-level losses are computed over the global
batch -- exactly what a single-device run computes. That is why the same code runs on 1 or N
devices and why the N-device step equals the 1-device step (tested on 8 fake CPU devices).
``jax.pmap`` is, since jax 0.8, a thin wrapper over jit + shard_map; writing per-device code with
explicit ``pmean`` would make every batch-level loss (SP, RKD, CRD, DIST...) all-gather by hand.

Several processes (``jax.distributed``, docs/multihost.md): the mesh spans every process's
devices (:func:`make_mesh`), and every placement here builds a *global* ``jax.Array`` of which
each process copies only the shards its own devices hold (``jax.make_array_from_callback``):
:func:`put_replicated` and :func:`put_batch` take a host value that every process holds
identically (the state, the teacher, the in-memory dataset, the index vector of a batch). One
process: plain ``jax.device_put``, as before.
"""

from __future__ import annotations

import zlib

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax import distributed
from kdjax.errors import UserError


def is_multiprocess() -> bool:
  """True when this run spans several JAX processes (``jax.distributed``)."""
  return jax.process_count() > 1


def make_mesh(devices=None) -> Mesh:
  """A 1-D ``('data',)`` mesh over ``devices``; by default the local devices of a single process,
  or every device of every process (ordered by process, :func:`kdjax.distributed.global_mesh`)
  under ``jax.distributed``."""
  if devices is None:
    if is_multiprocess():
      return distributed.global_mesh("data")
    devices = jax.local_devices()
  return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def check_batch(batch_size: int, mesh: Mesh, what: str = "config.batch_size"):
  n = mesh.devices.size
  where = (
    f"devices of the {jax.process_count()} processes" if _spans_processes(mesh) else "local devices"
  )
  if batch_size % n:
    raise UserError(
      f"{what}={batch_size} is not divisible by the {n} {where}. Use a multiple of {n} "
      f"(e.g. {max(n, batch_size - batch_size % n)}) or restrict devices with "
      f"CUDA_VISIBLE_DEVICES / XLA_FLAGS."
    )


def _spans_processes(mesh: Mesh) -> bool:
  return any(d.process_index != jax.process_index() for d in mesh.devices.flat)


def _global_from_host(x, sharding: NamedSharding):
  """The global array of ``sharding`` from a host value every process holds identically: each
  process copies only the slices its own devices hold."""
  x = np.asarray(x)
  x = x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)  # as jax.device_put
  return jax.make_array_from_callback(x.shape, sharding, lambda index: np.asarray(x[index]))


def _host_leaf(x, sharding: NamedSharding):
  """``x`` itself if it already is a global array (kept or resharded on device), else its host
  value (a process-local ``jax.Array`` cannot be copied across processes: jax 0.12 on CPU says
  "does not support cross-host device transfers")."""
  if isinstance(x, jax.Array):
    if not x.is_fully_addressable:
      return x if x.sharding.is_equivalent_to(sharding, x.ndim) else jax.device_put(x, sharding)
    return np.asarray(x)
  return np.asarray(x)


def _crc(leaves) -> int:
  crc = 0
  for a in leaves:
    if isinstance(a, np.ndarray):
      a = np.ascontiguousarray(a)
      crc = zlib.crc32(f"{a.dtype}:{a.shape}".encode(), crc)
      crc = zlib.crc32(a.reshape(-1).view(np.uint8), crc)
  return crc


def put_batch(x, mesh: Mesh):
  """Shards ``x`` along its first axis when divisible by the device count, else replicates it
  (the remainder batch of an epoch: computed redundantly, still correct).

  On a mesh spanning several processes ``x`` is the *global* batch, the same numpy value on
  every process (e.g. the index vector of an in-memory dataset): each process places only the
  rows its devices hold. A process that read only its own rows uses
  :func:`kdjax.distributed.put_process_local` instead."""
  n = mesh.devices.size
  shard = batch_sharded(mesh) if x.shape[0] % n == 0 else replicated(mesh)
  if _spans_processes(mesh):
    return _global_from_host(x, shard)
  return jax.device_put(x, shard)


def put_replicated(tree, mesh: Mesh, *, check_equal: bool = True):
  """Every leaf of ``tree`` replicated on every device of ``mesh``.

  On a mesh spanning several processes every process must pass the same value (the state from
  the same seed or checkpoint, the same teacher, the same dataset): each copies it to its own
  devices. With ``check_equal`` (default) a CRC-32 of the host values is compared across the
  processes first (one small all-gather) and a difference is a ``UserError``: replicas that
  differ would silently train on different weights. Leaves that already are global arrays are
  kept (resharded on device if needed)."""
  sharding = replicated(mesh)
  if not _spans_processes(mesh):
    return jax.device_put(tree, sharding)
  host = jax.tree_util.tree_map(lambda x: _host_leaf(x, sharding), tree)
  if check_equal:
    crc = _crc(jax.tree_util.tree_leaves(host))
    if not distributed.all_processes_equal(crc):
      raise UserError(
        f"put_replicated: process {jax.process_index()} of {jax.process_count()} holds a "
        "different value than the others (CRC-32 of the host values differ), so the replicas "
        "would differ. Every process must compute the same state/teacher/dataset: the same "
        "config, seed, data files and checkpoint."
      )
  return jax.tree_util.tree_map(
    lambda x: x if isinstance(x, jax.Array) else _global_from_host(x, sharding), host
  )
