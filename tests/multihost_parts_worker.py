"""One process of tests/test_multihost_parts.py: the training loop's building blocks (feeds,
evaluate, checkpoints, metric writer) under ``jax.distributed`` with one CPU device per process.

  python tests/multihost_parts_worker.py MODE WORKDIR NUM_PROCESSES PROCESS_ID PORT

MODE ``train``: 2 epochs of a jitted data-parallel SGD step (a 2-layer MLP with BatchNorm over
the global batch) over an :class:`InMemoryFeed`, ``evaluate`` on a test split, metrics through
``MetricWriter`` into WORKDIR, and one epoch of a ``StreamFeed`` over a fake image source.
MODE ``save``: 2 steps, a resume checkpoint after each, a kept model and ``config.json``.
MODE ``restore``: restores the latest resume checkpoint and the kept model; with 2 processes,
then restores again while process 1 alone fails to verify the newest step (both must fall back).
Each process writes ``WORKDIR/out-MODE-P<num_processes>-<process_id>.npz``.
"""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np

N_TRAIN, N_TEST, BATCH, EVAL_BATCH, CLASSES, HIDDEN, LR = 21, 13, 8, 3, 5, 8, 0.1
IMG = (4, 4, 1)


def _data():
  rng = np.random.default_rng(7)
  images = rng.integers(0, 256, (N_TRAIN + N_TEST,) + IMG).astype(np.uint8)
  labels = rng.integers(0, CLASSES, N_TRAIN + N_TEST).astype(np.int32)
  return images, labels


def _init():
  rng = np.random.default_rng(0)
  d = int(np.prod(IMG))
  return {
    "params": {
      "w1": rng.normal(0, 0.3, (d, HIDDEN)).astype(np.float32),
      "gamma": np.ones((HIDDEN,), np.float32),
      "beta": np.zeros((HIDDEN,), np.float32),
      "w2": rng.normal(0, 0.3, (HIDDEN, CLASSES)).astype(np.float32),
    },
    "mom": {
      "w1": np.zeros((d, HIDDEN), np.float32),
      "gamma": np.zeros((HIDDEN,), np.float32),
      "beta": np.zeros((HIDDEN,), np.float32),
      "w2": np.zeros((HIDDEN, CLASSES), np.float32),
    },
    "stats": {"mean": np.zeros((HIDDEN,), np.float32)},
    "step": np.zeros((), np.int32),
  }


def _steps():
  """An object with the two step functions the feeds and evaluate() call."""
  import jax
  import jax.numpy as jnp

  def forward(p, x, stats=None):
    x = x.reshape(x.shape[0], -1).astype(jnp.float32) / 255.0
    h = x @ p["w1"]
    mean = h.mean(0) if stats is None else stats["mean"]  # global batch statistics
    var = h.var(0) if stats is None else jnp.ones_like(mean)
    h = jax.nn.relu((h - mean) / jnp.sqrt(var + 1e-5) * p["gamma"] + p["beta"])
    return h @ p["w2"], mean

  def loss_fn(p, x, y):
    logits, mean = forward(p, x)
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, y[:, None], axis=1).mean(), mean

  @jax.jit
  def train_indexed(state, images, labels, index, idx, t_vars):
    del index, t_vars
    x, y = images[idx], labels[idx]  # the gather inside the jit, as kdjax's step
    (loss, mean), g = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], x, y)
    mom = jax.tree_util.tree_map(lambda m, g: 0.9 * m + g, state["mom"], g)
    params = jax.tree_util.tree_map(lambda p, m: p - LR * m, state["params"], mom)
    stats = {"mean": 0.9 * state["stats"]["mean"] + 0.1 * mean}
    new = {"params": params, "mom": mom, "stats": stats, "step": state["step"] + 1}
    return new, {"loss": loss, "n": jnp.float32(idx.shape[0])}

  @jax.jit
  def eval_batch(variables, images, labels, mask, tp):
    logits, _ = forward(variables["params"], images, variables["stats"])
    pred = jnp.argmax(logits, -1).astype(jnp.int32)
    top5 = jax.lax.top_k(logits, 5)[1]
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, labels[:, None], axis=1)[:, 0]
    out = {
      "count": mask.sum(),
      "correct1": ((pred == labels) * mask).sum(),
      "correct5": ((top5 == labels[:, None]).any(-1) * mask).sum(),
      "loss_sum": (nll * mask).sum(),
      "agree_sum": ((pred == tp) * mask).sum(),
    }
    return out, pred

  return types.SimpleNamespace(train_indexed=train_indexed, eval_batch=eval_batch)


def _split(images, labels, lo, hi):
  from kdjax import data as kdata

  info = kdata.info("cifar10")
  return kdata.ArraySplit(
    images[lo:hi], labels[lo:hi], np.arange(hi - lo, dtype=np.int32), info, "train"
  )


def _host(tree):
  import jax

  return jax.tree_util.tree_map(lambda a: np.asarray(a), tree)


def _flat(tree, prefix):
  import jax

  return {
    prefix + jax.tree_util.keystr(p): np.asarray(v)
    for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


class _FakeSource(list):
  """A list of ``{'image', 'label'}`` records of various sizes: what HostStream reads."""


def _stream_check(mesh, nproc):
  """One epoch of a StreamFeed over a fake source: the global batches (gathered) must equal the
  1-process HostStream's batches; counts the images this process decoded."""
  from kdjax import data as kdata
  from kdjax import distributed
  from kdjax.train import runner

  rng = np.random.default_rng(3)
  src = _FakeSource(
    {
      "image": rng.integers(0, 256, (int(rng.integers(20, 40)), int(rng.integers(20, 40)), 3)),
      "label": int(rng.integers(0, 10)),
    }
    for _ in range(11)
  )
  for r in src:
    r["image"] = r["image"].astype(np.uint8)
  stream = kdata.HostStream(
    "imagenet2012",
    "train",
    batch_size=4,
    seed=3,
    train=True,
    image_size=8,
    source=src,
    drop_remainder=False,
  )
  decoded = [0]
  orig = stream._one  # pylint: disable=protected-access

  def counting(rec, pos, epoch):
    decoded[0] += 1
    return orig(rec, pos, epoch)

  stream._one = counting  # pylint: disable=protected-access
  feed = runner.StreamFeed(stream, mesh)
  got = [{k: distributed.gather_rows(v) for k, v in b.items()} for b in feed.epoch(1, 0)]
  n_decoded = decoded[0]
  want = list(stream.iter_epoch(1))
  ok = len(got) == len(want) == 3 and all(
    np.array_equal(g[k], w[k]) for g, w in zip(got, want) for k in w
  )
  return ok, n_decoded


def train(mesh, workdir, nproc):
  import jax

  from kdjax import distributed
  from kdjax.train import parallel, runner
  from kdjax.train.logging import MetricWriter

  images, labels = _data()
  cfg = types.SimpleNamespace(batch_size=BATCH, seed=5, drop_remainder=False)
  feed = runner.InMemoryFeed(_split(images, labels, 0, N_TRAIN), cfg, mesh)
  test = _split(images, labels, N_TRAIN, N_TRAIN + N_TEST)
  steps = _steps()
  # A process-local jax.Array leaf too: put_replicated must take it through the host.
  init = _init()
  init["stats"]["mean"] = jax.device_put(init["stats"]["mean"], jax.local_devices()[0])
  state = parallel.put_replicated(init, mesh)
  # Worst case for a writer that is not process-0-only: process 1 opens (and would truncate and
  # replace) metrics.jsonl after process 0 did, so its lines would be the ones left in the file.
  writer = MetricWriter(workdir, tensorboard=True) if jax.process_index() == 0 else None
  distributed.sync("worker:writer0")
  writer = writer or MetricWriter(workdir, tensorboard=True)
  losses, batch_sizes = [], []
  for epoch in range(2):
    for idx in feed.epoch(epoch, 0):
      batch_sizes.append(idx.shape[0])
      assert not idx.is_fully_addressable or nproc == 1
      state, m = feed.run(steps, state, idx, {})
      losses.append(float(m["loss"]))  # replicated: readable on every process
      # The writer's pid column tells which process wrote a line (the metrics are the same).
      writer.write(int(state["step"]), dict(m, pid=jax.process_index()), prefix="train/")
  teacher_pred = (np.arange(N_TEST) % CLASSES).astype(np.int32)
  metrics, preds = runner.evaluate(
    steps,
    {"params": state["params"], "stats": state["stats"]},
    test,
    mesh,
    EVAL_BATCH,
    teacher_pred,
  )
  writer.write(int(state["step"]), dict(metrics, pid=jax.process_index()), prefix="test/")
  writer.close()
  stream_ok, n_decoded = _stream_check(mesh, nproc)
  # Replicas that differ between processes are refused (on every process), not placed.
  from kdjax.errors import UserError

  try:
    parallel.put_replicated({"w": np.float32([1.0, 2.0 + jax.process_index()])}, mesh)
    differ_refused = False
  except UserError:
    differ_refused = True
  distributed.sync("worker:train_done")
  out = _flat(_host(state), "state")
  out.update({f"eval/{k}": np.float64(v) for k, v in metrics.items()})
  out.update(
    preds=preds,
    losses=np.asarray(losses),
    batch_sizes=np.asarray(batch_sizes),
    stream_ok=np.bool_(stream_ok),
    stream_decoded=np.int64(n_decoded),
    writer_active=np.bool_(writer.active),
    differ_refused=np.bool_(differ_refused),
  )
  return out


def save(mesh, workdir, nproc):
  from kdjax.train import checkpoint as ckpt_lib
  from kdjax.train import parallel, runner

  images, labels = _data()
  cfg = types.SimpleNamespace(batch_size=BATCH, seed=5, drop_remainder=False)
  feed = runner.InMemoryFeed(_split(images, labels, 0, N_TRAIN), cfg, mesh)
  steps = _steps()
  state = parallel.put_replicated(_init(), mesh)
  ckpts = ckpt_lib.RunCheckpoints(workdir, async_save=True)
  ckpt_lib.write_json(os.path.join(workdir, "config.json"), {"nproc": nproc})
  out = {}
  for i, idx in enumerate(feed.epoch(0, 0)):
    if i == 2:
      break
    state, _ = feed.run(steps, state, idx, {})
    ckpts.save_state(i + 1, state, {"epoch": 0, "note": f"step {i + 1}"})
    out.update(_flat(_host(state), f"step{i + 1}"))
  model = {"params": state["params"], "batch_stats": state["stats"]}
  ckpts.save_model("kept", 2, model, {"arch": "mlp", "epoch": 1, "step": 2, "final": True})
  ckpts.save_model("kept", 2, model, {"arch": "mlp", "epoch": 1, "step": 2, "final": True})
  ckpts.close()
  return out


def restore(mesh, workdir, nproc):
  import jax

  from kdjax import distributed
  from kdjax.train import checkpoint as ckpt_lib
  from kdjax.train import parallel

  template = _init()
  abstract = jax.tree_util.tree_map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(mesh)), template
  )
  ckpts = ckpt_lib.RunCheckpoints(workdir, async_save=False)
  state, meta = ckpts.restore_state(abstract)
  assert all(not a.is_fully_addressable for a in jax.tree_util.tree_leaves(state)) or nproc == 1
  ckpts.close()
  variables, mmeta = ckpt_lib.load_model(workdir, "final")
  out = _flat(_host(state), "restored")
  out.update(_flat(variables, "model"))
  out.update(step=np.int64(int(state["step"])), note=np.str_(meta["note"]))
  out["model_step"] = np.int64(mmeta["step"])
  if nproc > 1:
    # Process 1 alone fails to verify the newest step after reading it (as a checksum
    # mismatch of a bad read would): every process must reject it, fall back to step 1, and
    # process 0 alone moves it aside.
    real = ckpt_lib.RunCheckpoints._restore_verified  # pylint: disable=protected-access

    def flaky(self, s, abstract_state):
      out = real(self, s, abstract_state)  # Orbax's read (and its barrier) on every process
      if s == 2 and jax.process_index() == 1:
        raise ValueError("injected: checksum mismatch on process 1")
      return out

    ckpt_lib.RunCheckpoints._restore_verified = flaky  # pylint: disable=protected-access
    ckpts = ckpt_lib.RunCheckpoints(workdir, async_save=False)
    state, meta = ckpts.restore_state(abstract)
    out["fallback_step"] = np.int64(int(state["step"]))
    out["fallback_latest"] = np.int64(ckpts.latest_step())
    ckpts.close()
    distributed.sync("worker:fallback_done")
    out["corrupt_dirs"] = np.asarray(sorted(os.listdir(os.path.join(workdir, "corrupt"))))
  return out


def main(mode, workdir, nproc, pid, port):
  import jax

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from kdjax import distributed
  from kdjax.train import parallel

  distributed.initialize(
    coordinator=f"localhost:{port}" if nproc > 1 else None,
    num_processes=nproc if nproc > 1 else None,
    process_id=pid if nproc > 1 else None,
    initialization_timeout=60,
  )
  assert jax.process_count() == nproc and jax.process_index() == pid
  assert parallel.is_multiprocess() == (nproc > 1)
  mesh = parallel.make_mesh()
  assert mesh.devices.size == nproc and jax.local_device_count() == 1
  out = {"train": train, "save": save, "restore": restore}[mode](mesh, workdir, nproc)
  np.savez(os.path.join(workdir, f"out-{mode}-P{nproc}-{pid}.npz"), **out)
  print(json.dumps({"done": mode, "pid": pid}))
  if nproc > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ.pop("XLA_FLAGS", None)  # one CPU device per process
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
