"""One process of tests/test_distributed.py: a few data-parallel SGD steps of a small MLP with
BatchNorm (statistics over the global batch) on a fixed synthetic batch stream, each process
feeding only its rows of the global batch. Writes the final parameters (process 0) to an .npz.

  python tests/distributed_worker.py OUT.npz NUM_PROCESSES PROCESS_ID PORT
"""

from __future__ import annotations

import os
import sys

import numpy as np

GLOBAL_BATCH, STEPS, NUM_CLASSES, LR, IN_DIM, HIDDEN = 8, 4, 4, 0.1, 6, 16


def _init(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {
    "w1": rng.normal(0, 0.3, (IN_DIM, HIDDEN)).astype(np.float32),
    "gamma": np.ones((HIDDEN,), np.float32),
    "beta": np.zeros((HIDDEN,), np.float32),
    "w2": rng.normal(0, 0.3, (HIDDEN, NUM_CLASSES)).astype(np.float32),
    "b2": np.zeros((NUM_CLASSES,), np.float32),
  }


def train(mesh, process_id: int = 0) -> dict:
  """STEPS steps of SGD with momentum on a 2-layer MLP with BatchNorm (statistics over the
  global batch, kept as a running mean) on ``mesh``; returns {'losses', 'params/..',
  'stats/..'}. Pure jax (no flax/optax) so that each worker starts in about a second."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top

  from kdjax import distributed  # pylint: disable=g-import-not-at-top

  repl = NamedSharding(mesh, P())
  params = jax.device_put(_init(), repl)
  mom = jax.device_put(jax.tree_util.tree_map(np.zeros_like, _init()), repl)
  stats = jax.device_put({"mean": np.zeros((HIDDEN,), np.float32)}, repl)

  def loss_fn(p, x, y):
    h = x @ p["w1"]
    mean, var = h.mean(0), h.var(0)  # over the global batch: a cross-process reduction
    h = jax.nn.relu((h - mean) / jnp.sqrt(var + 1e-5) * p["gamma"] + p["beta"])
    logits = h @ p["w2"] + p["b2"]
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, y[:, None], axis=1).mean(), mean

  @jax.jit
  def step(params, mom, stats, x, y):
    (loss, mean), g = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
    mom = jax.tree_util.tree_map(lambda m, g: 0.9 * m + g, mom, g)
    params = jax.tree_util.tree_map(lambda p, m: p - LR * m, params, mom)
    stats = {"mean": 0.9 * stats["mean"] + 0.1 * mean}
    return params, mom, stats, loss

  rng = np.random.default_rng(123)  # the same global stream on every process
  losses = []
  for i in range(STEPS):
    x = rng.normal(size=(GLOBAL_BATCH, IN_DIM)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, GLOBAL_BATCH).astype(np.int32)
    if i % 2 == 0:  # every process computes the global batch and keeps its rows
      gx, gy = distributed.process_batch_slice((x, y), mesh)
    else:  # each process reads only its rows (as a sharded input pipeline does)
      rows = distributed.process_rows(GLOBAL_BATCH, mesh)
      gx, gy = distributed.put_process_local((x[rows], y[rows]), mesh, GLOBAL_BATCH)
    assert gx.shape == (GLOBAL_BATCH, IN_DIM)
    assert len(gx.addressable_shards) == len(mesh.local_devices)
    params, mom, stats, loss = step(params, mom, stats, gx, gy)
    losses.append(float(loss))
  # Replicated outputs: every process holds the full value.
  out = {f"params/{k}": np.asarray(v.addressable_data(0)) for k, v in params.items()}
  out["stats/mean"] = np.asarray(stats["mean"].addressable_data(0))
  return dict(out, losses=np.asarray(losses))


def main(out: str, num_processes: int, process_id: int, port: int) -> None:
  from kdjax import distributed  # pylint: disable=g-import-not-at-top

  if os.environ.get("KDJAX_COORDINATOR"):  # the layout from the environment
    spec = distributed.initialize(initialization_timeout=60)
    assert spec.source == "env", spec
  else:  # from explicit flags
    spec = distributed.initialize(
      coordinator=f"localhost:{port}" if num_processes > 1 else None,
      num_processes=num_processes,
      process_id=process_id,
      initialization_timeout=60,
    )
  import jax  # pylint: disable=g-import-not-at-top

  assert jax.process_count() == num_processes and jax.process_index() == process_id, spec
  assert jax.local_device_count() == 1
  mesh = distributed.global_mesh()
  assert mesh.devices.size == num_processes
  result = train(mesh, process_id)
  if process_id == 0:
    np.savez(out, **result)
  if num_processes > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.pop("XLA_FLAGS", None)  # one CPU device per process
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
