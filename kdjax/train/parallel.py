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


def check_single_process():
  """kdjax trains on the local devices of one process; until multi-host training lands, several
  processes under ``jax.distributed`` would each train alone and write the same workdir."""
  if jax.process_count() > 1:
    raise UserError(
      f"This is process {jax.process_index()} of {jax.process_count()} under jax.distributed, "
      "but kdjax does not support multi-process (multi-host) training yet: every process would "
      "train on its own and write the same workdir. Run one process per run (it uses all the "
      "local devices)."
    )


def _spans_processes(mesh: Mesh) -> bool:
  return any(d.process_index != jax.process_index() for d in mesh.devices.flat)


def _global_from_host(x, sharding: NamedSharding):
  """The global array of ``sharding`` from a host value every process holds identically: each
  process copies only the slices its own devices hold."""
  x = np.asarray(x)
  x = x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)  # as jax.device_put
  return jax.make_array_from_callback(x.shape, sharding, lambda index: np.asarray(x[index]))


def _replicate_leaf(x, sharding: NamedSharding):
  if isinstance(x, jax.Array):
    if x.sharding == sharding or (
      not x.is_fully_addressable and x.sharding.is_equivalent_to(sharding, x.ndim)
    ):
      return x
    if not x.is_fully_addressable:  # a global array of another layout: reshard on device
      return jax.device_put(x, sharding)
    # A process-local array (cannot be copied across processes): through the host.
    x = np.asarray(x)
  return _global_from_host(x, sharding)


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


def put_replicated(tree, mesh: Mesh):
  """Every leaf of ``tree`` replicated on every device of ``mesh``. On a mesh spanning several
  processes every process must pass the same value (the state from the same seed or checkpoint,
  the same teacher, the same dataset); process-local ``jax.Array`` leaves go through the host."""
  sharding = replicated(mesh)
  if _spans_processes(mesh):
    return jax.tree_util.tree_map(lambda x: _replicate_leaf(x, sharding), tree)
  return jax.device_put(tree, sharding)
