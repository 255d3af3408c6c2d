"""One process of tests/test_multihost_loop.py: ``kdjax.train.train_and_evaluate`` on a few real
Fashion-MNIST images under ``jax.distributed`` (one CPU device per process).

  python tests/multihost_loop_worker.py WORKDIR NUM_PROCESSES PROCESS_ID PORT MAX_STEPS FMNIST_DIR

Each process writes ``WORKDIR/../out-<basename>-P<n>-<pid>.npz`` with the final student
parameters and the summary's step, and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def config(fmnist_dir: str, max_steps: int):
  from kdjax.config import base_config

  c = base_config()
  c.model = "tiny_cnn"
  c.dataset.name = "fashion_mnist"
  c.dataset.idx_dir = fmnist_dir
  c.dataset.train_limit, c.dataset.eval_limit = 64, 48
  c.batch_size, c.eval_batch_size = 8, 16
  c.num_epochs = 2
  c.optim.lr = 0.05
  c.optim.reference_batch_size = 8
  c.optim.milestones = (1,)
  c.log_every_steps = 2
  c.checkpoint_every_steps = 3
  c.max_steps = max_steps
  c.progress = False
  c.tensorboard = False
  c.async_checkpoint = False
  return c


def main(workdir, nproc, pid, port, max_steps, fmnist_dir):
  import jax

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from kdjax import distributed
  from kdjax.train import train_and_evaluate

  distributed.initialize(
    coordinator=f"localhost:{port}" if nproc > 1 else None,
    num_processes=nproc if nproc > 1 else None,
    process_id=pid if nproc > 1 else None,
    initialization_timeout=60,
  )
  assert jax.process_count() == nproc and jax.process_index() == pid
  s = train_and_evaluate(config(fmnist_dir, max_steps), workdir)
  leaves = jax.tree_util.tree_leaves(s["state"].params["student"])
  host = {f"p{i}": np.asarray(x) for i, x in enumerate(leaves)}  # replicated: a local copy
  out = os.path.join(os.path.dirname(workdir), f"out-{os.path.basename(workdir)}-P{nproc}-{pid}")
  np.savez(
    out + ".npz", step=np.int64(s["step"]), last_top1=np.float64(s["last_top1"] or -1), **host
  )
  print(json.dumps({"done": workdir, "pid": pid, "step": s["step"]}))
  if nproc > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  os.environ["JAX_PLATFORMS"] = "cpu"
  wd, n, p, port, ms, fm = sys.argv[1:7]
  main(wd, int(n), int(p), int(port), int(ms), fm)
