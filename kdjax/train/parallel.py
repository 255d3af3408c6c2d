"""Data parallelism over all local devices.

kdjax uses ``jax.jit`` over a 1-D ``Mesh(devices, ('data',))``: the batch (or the batch of dataset
indices) is sharded along ``data``, everything else (train state, teacher, on-device dataset) is
replicated. The step is written in the *global* view, so XLA's SPMD partitioner inserts the
gradient all-reduce, and BatchNorm statistics and batch-level losses are computed over the global
batch -- exactly what a single-device run computes. That is why the same code runs on 1 or N
devices and why the N-device step equals the 1-device step (tested on 8 fake CPU devices).
``jax.pmap`` is, since jax 0.8, a thin wrapper over jit + shard_map; writing per-device code with
explicit ``pmean`` would make every batch-level loss (SP, RKD, CRD, DIST...) all-gather by hand.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax.errors import UserError


def make_mesh(devices=None) -> Mesh:
  devices = jax.local_devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def check_batch(batch_size: int, mesh: Mesh, what: str = "config.batch_size"):
  n = mesh.devices.size
  if batch_size % n:
    raise UserError(
      f"{what}={batch_size} is not divisible by the {n} local devices. Use a multiple of {n} "
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


def put_batch(x, mesh: Mesh):
  """Shards ``x`` along its first axis when divisible by the device count, else replicates it
  (the remainder batch of an epoch: computed redundantly, still correct)."""
  n = mesh.devices.size
  shard = batch_sharded(mesh) if x.shape[0] % n == 0 else replicated(mesh)
  return jax.device_put(x, shard)


def put_replicated(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))
