"""One process of tests/test_distributed.py: a few data-parallel SGD steps of kdjax's tiny_cnn
(BatchNorm over the global batch) on a fixed synthetic batch stream, each process feeding only
its rows of the global batch. Writes the final parameters (process 0) to an .npz.

  python tests/distributed_worker.py OUT.npz NUM_PROCESSES PROCESS_ID PORT
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.pop("XLA_FLAGS", None)   # one CPU device per process

import numpy as np  # noqa: E402

GLOBAL_BATCH, STEPS, NUM_CLASSES, LR = 8, 4, 4, 0.1


def train(mesh, process_id: int = 0) -> dict:
  """STEPS SGD steps of tiny_cnn on ``mesh``; returns {'losses', 'params/...', 'stats/...'}."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top

  from kdjax import distributed  # pylint: disable=g-import-not-at-top
  from kdjax import models  # pylint: disable=g-import-not-at-top
  model = models.get("tiny_cnn", num_classes=NUM_CLASSES, width=4)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), train=False)
  repl = NamedSharding(mesh, P())
  params = jax.device_put(variables["params"], repl)
  stats = jax.device_put(variables["batch_stats"], repl)
  tx = optax.sgd(LR, momentum=0.9)
  opt = jax.device_put(tx.init(variables["params"]), repl)

  @jax.jit
  def step(params, stats, opt, x, y):
    def loss_fn(p):
      (logits, _), new = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                     mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, new["batch_stats"]
    (loss, new_stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), new_stats, opt, loss

  rng = np.random.default_rng(123)     # the same global stream on every process
  losses = []
  for i in range(STEPS):
    x = rng.normal(size=(GLOBAL_BATCH, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, GLOBAL_BATCH).astype(np.int32)
    if i % 2 == 0:     # every process computes the global batch and keeps its rows
      gx, gy = distributed.process_batch_slice((x, y), mesh)
    else:              # each process reads only its rows (as a sharded input pipeline does)
      rows = distributed.process_rows(GLOBAL_BATCH, mesh)
      gx, gy = distributed.put_process_local((x[rows], y[rows]), mesh, GLOBAL_BATCH)
    assert gx.shape == (GLOBAL_BATCH, 8, 8, 3)
    assert len(gx.addressable_shards) == len(mesh.local_devices)
    params, stats, opt, loss = step(params, stats, opt, gx, gy)
    losses.append(float(loss))
  # Replicated outputs: every process holds the full value.
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v.addressable_data(0))
          for path, v in jax.tree_util.tree_leaves_with_path({"params": params,
                                                              "stats": stats})}
  return dict(flat, losses=np.asarray(losses))


def main(out: str, num_processes: int, process_id: int, port: int) -> None:
  from kdjax import distributed  # pylint: disable=g-import-not-at-top
  spec = distributed.initialize(
      coordinator=f"localhost:{port}" if num_processes > 1 else None,
      num_processes=num_processes, process_id=process_id, initialization_timeout=60)
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
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
