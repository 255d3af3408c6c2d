"""Shared set-up for the KD-step benches (bench/vs_torch.py, bench/xla_ablation.py, bench/gpu.sh).

``make_kd_step(pair, batch, ...)`` builds kdjax's real KD train step (``make_steps`` of
``kdjax.train.step``, method ``0.1 CE + 0.9 T^2 KL(T=4)``, SGD 0.05 / momentum 0.9 / wd 5e-4) for
one of the pairs below, with random teacher weights and BN statistics made non-trivial (so that the
eval-mode teacher BN does real work), a fixed random batch already on the device and identity
transforms (the same work as the PyTorch reference). ``make_epoch_loop`` builds the same step on an
in-memory feed with the real augmentation and runs kdjax's epoch loop (``run_epoch_steps``).

Pairs:
  r32x4_r8x4   resnet32x4 -> resnet8x4, 32x32x3, 100 classes (RepDistiller's CIFAR-100 pair)
  r20_r8       resnet20 -> resnet8, 28x28x1, 10 classes (the quickstart's Fashion-MNIST pair)
  r56_r20      resnet56 -> resnet20, 32x32x3, 100 classes
  tiny         tiny_cnn -> tiny_cnn, 8x8x1 (smoke tests of the bench scripts)
"""

from __future__ import annotations

import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kdjax import models  # noqa: E402
from kdjax.config import base_config  # noqa: E402
from kdjax.methods import build_method  # noqa: E402
from kdjax.train import state as state_lib  # noqa: E402
from kdjax.train.optim import make_optimizer  # noqa: E402
from kdjax.train.step import make_steps  # noqa: E402

PAIRS = {
  "r32x4_r8x4": dict(teacher="resnet32x4", student="resnet8x4", hw=32, c=3, classes=100),
  "r20_r8": dict(teacher="resnet20", student="resnet8", hw=28, c=1, classes=10),
  "r56_r20": dict(teacher="resnet56", student="resnet20", hw=32, c=3, classes=100),
  # smoke tests only (torch_worker's "tiny" is resnet8 -> resnet8 at 8x8x1, not the same models)
  "tiny": dict(
    teacher="tiny_cnn",
    student="tiny_cnn",
    hw=8,
    c=1,
    classes=10,
    teacher_kw={"width": 8},
    student_kw={"width": 4},
  ),
}


def kd_method():
  return build_method(
    dict(name="kd", ce_weight=0.1, terms=dict(kd=dict(weight=0.9, temperature=4.0)))
  )


def _perturb_stats(variables, seed=3):
  """Non-trivial BN running statistics (random init has mean 0 / var 1)."""
  rs = np.random.RandomState(seed)

  def f(path, a):
    name = getattr(path[-1], "key", "")
    if name == "mean":
      return jnp.asarray(0.1 * rs.randn(*a.shape), a.dtype)
    if name == "var":
      return jnp.asarray(rs.uniform(0.5, 1.5, a.shape), a.dtype)
    return a

  return dict(variables, batch_stats=jax.tree_util.tree_map_with_path(f, variables["batch_stats"]))


def make_models(pair, *, student_kw=None, teacher_kw=None):
  p = PAIRS[pair]
  t_mod = models.get(
    p["teacher"], num_classes=p["classes"], **{**p.get("teacher_kw", {}), **(teacher_kw or {})}
  )
  s_mod = models.get(
    p["student"], num_classes=p["classes"], **{**p.get("student_kw", {}), **(student_kw or {})}
  )
  x0 = jnp.zeros((1, p["hw"], p["hw"], p["c"]))
  tv = _perturb_stats(t_mod.init(jax.random.PRNGKey(1), x0))
  sv = s_mod.init(jax.random.PRNGKey(0), x0)
  return p, t_mod, tv, s_mod, sv


def make_kd_step(
  pair="r32x4_r8x4",
  batch=64,
  *,
  donate=True,
  fold_bn=False,
  fast_variance=False,
  student_dtype=None,
  teacher_dtype=None,
  teacher=True,
):
  """Returns a dict with ``step(state, batch, tvars) -> (state, metrics)`` (not yet compiled),
  ``state``, ``batch``, ``tvars`` and a description. ``teacher=False``: the student alone (CE).
  ``fast_variance`` patches the ResNets' BatchNorm globally (linen builds submodules at trace
  time): compile the step, then call ``_patch_fast_variance(False)``."""
  if fast_variance:
    _patch_fast_variance()
  skw = {"dtype": student_dtype} if student_dtype is not None else {}
  tkw = {"dtype": teacher_dtype} if teacher_dtype is not None else {}
  p, t_mod, tv, s_mod, sv = make_models(pair, student_kw=skw, teacher_kw=tkw)
  if fold_bn:
    from kdjax.models.fold_bn import fold_bn as fold  # pylint: disable=import-outside-toplevel

    t_mod, tv = fold(t_mod, tv, jnp.zeros((1, p["hw"], p["hw"], p["c"])))
  cfg = base_config()
  tx, _ = make_optimizer(cfg.optim, steps_per_epoch=782)
  method = (
    kd_method() if teacher else build_method(dict(name="supervised", ce_weight=1.0, terms={}))
  )
  state = state_lib.create(
    {"student": sv["params"], "connectors": {}},
    {"student": sv["batch_stats"]},
    tx,
    jax.random.PRNGKey(2),
  )
  fns = make_steps(
    student=s_mod,
    method=method,
    tx=tx,
    teacher=t_mod if teacher else None,
    train_transform=lambda im, r: im,
    eval_transform=lambda im: im,
    emit_norms=False,
  )
  step = fns.train_batch
  if not donate:
    step = jax.jit(fns.train_batch.__wrapped__)
  rs = np.random.RandomState(0)
  b = {
    "image": jnp.asarray(rs.randn(batch, p["hw"], p["hw"], p["c"]).astype(np.float32)),
    "label": jnp.asarray(rs.randint(0, p["classes"], batch).astype(np.int32)),
    "index": jnp.arange(batch, dtype=jnp.int32),
  }
  return {
    "step": step,
    "state": state,
    "batch": b,
    "tvars": tv if teacher else {},
    "pair": pair,
    "batch_size": batch,
    "fns": fns,
  }


def _patch_fast_variance(on=True):
  """Ablation only: Flax's one-pass ``E[x^2] - E[x]^2`` batch variance in the CIFAR ResNets
  (``on=False`` restores kdjax's two-pass ``common.batch_norm``)."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from kdjax.models.cifar import common, resnet  # pylint: disable=import-outside-toplevel

  def bn(dtype=jnp.float32, name=None):
    return nn.BatchNorm(
      momentum=0.9,
      epsilon=1e-5,
      dtype=dtype,
      param_dtype=jnp.float32,
      use_fast_variance=True,
      name=name,
    )

  resnet.batch_norm = bn if on else common.batch_norm


def compile_step(setup, compiler_options=None):
  """Compiles the step (AOT) and returns the compile time (lowering + XLA compile).
  ``compiler_options``: XLA debug options for this compile only (e.g.
  ``{"xla_cpu_experimental_ynn_fusion_type": ""}``), so flag variants share one process."""
  t0 = time.perf_counter()
  low = setup["step"].lower(setup["state"], setup["batch"], setup["tvars"])
  setup["compiled"] = (
    low.compile(compiler_options=compiler_options) if compiler_options else low.compile()
  )
  return time.perf_counter() - t0


def run_steps(setup, n):
  """Runs ``n`` steps of the compiled step and blocks; returns seconds per step."""
  fn, b, tv = setup["compiled"], setup["batch"], setup["tvars"]
  state = setup["state"]
  t0 = time.perf_counter()
  for _ in range(n):
    state, m = fn(state, b, tv)
  jax.block_until_ready((state, m))
  setup["state"] = state
  return (time.perf_counter() - t0) / n


def time_step(setup, *, steps=5, repeats=3, warmup=2):
  """Compile, ``warmup`` steps (the first one timed as the cold first step), then ``repeats``
  timed runs of ``steps`` steps. Returns a dict of seconds."""
  compile_s = compile_step(setup)
  t0 = time.perf_counter()
  run_steps(setup, 1)
  first_s = time.perf_counter() - t0
  if warmup > 1:
    run_steps(setup, warmup - 1)
  times = [run_steps(setup, steps) for _ in range(repeats)]
  return {
    "step_s": statistics.median(times),
    "times": times,
    "compile_s": compile_s,
    "first_step_s": first_s,
    "batch": setup["batch_size"],
    "pair": setup["pair"],
  }


# ---- the real epoch loop on an in-memory feed -------------------------------------------------


class _Split:
  """Duck-types ``kdjax.data.ArraySplit`` for ``InMemoryFeed``."""

  def __init__(self, images, labels):
    self.images, self.labels = images, labels
    self.index = np.arange(len(labels), dtype=np.int32)


def make_epoch_loop(pair="r32x4_r8x4", batch=64, *, steps_per_epoch=8, **kw):
  """kdjax's epoch loop (``kdjax.train.loop.run_epoch_steps`` over an ``InMemoryFeed`` of uint8
  images, the real crop + flip + normalise inside the jit, metrics queued and fetched every
  ``log_every_steps``) next to the bare jitted ``train_indexed`` step on one fixed index batch.

  Returns a dict with ``loop(n_epochs)`` and ``bare(n_steps)`` timers (seconds per step)."""
  from kdjax.data import augment  # pylint: disable=import-outside-toplevel
  from kdjax.data.registry import DatasetInfo  # pylint: disable=import-outside-toplevel
  from kdjax.train import loop as loop_lib  # pylint: disable=import-outside-toplevel
  from kdjax.train import parallel  # pylint: disable=import-outside-toplevel

  p, t_mod, tv, s_mod, sv = make_models(pair)
  info = _info_like(DatasetInfo, p)
  n = batch * steps_per_epoch
  rs = np.random.RandomState(0)
  split = _Split(
    rs.randint(0, 256, (n, p["hw"], p["hw"], p["c"])).astype(np.uint8),
    rs.randint(0, p["classes"], n).astype(np.int32),
  )
  cfg = base_config()
  cfg.batch_size = batch
  cfg.progress = False
  cfg.log_every_steps = 50
  tx, _ = make_optimizer(cfg.optim, steps_per_epoch=steps_per_epoch)
  mesh = parallel.make_mesh()
  feed = loop_lib.InMemoryFeed(split, cfg, mesh)
  fns = make_steps(
    student=s_mod,
    method=kd_method(),
    tx=tx,
    teacher=t_mod,
    train_transform=lambda im, r: augment.train_transform(info, im, r),
    eval_transform=lambda im: augment.eval_transform(info, im),
    steps_per_epoch=steps_per_epoch,
  )
  state = state_lib.create(
    {"student": sv["params"], "connectors": {}},
    {"student": sv["batch_stats"]},
    tx,
    jax.random.PRNGKey(2),
  )
  state = parallel.put_replicated(state, mesh)
  tvars = parallel.put_replicated(tv, mesh)
  box = {"state": state, "step": 0, "epoch": 0}
  idx = parallel.put_batch(np.arange(batch, dtype=np.int32), mesh)

  def run(st, item):
    return feed.run(fns, st, item, tvars)

  def warm():
    t0 = time.perf_counter()
    box["state"], m = run(box["state"], idx)
    jax.block_until_ready(m)
    return time.perf_counter() - t0

  def bare(nsteps):
    st = box["state"]
    t0 = time.perf_counter()
    for _ in range(nsteps):
      st, m = run(st, idx)
    jax.block_until_ready((st, m))
    box["state"] = st
    return (time.perf_counter() - t0) / nsteps

  def loop(n_epochs=1):
    pending = []

    def check_and_log(step):
      if pending:
        jax.device_get(pending)  # the host fetch the loop's log line does
        pending.clear()

    t0 = time.perf_counter()
    steps_done = 0
    for _ in range(n_epochs):
      e = box["epoch"]
      box["state"], box["step"], _ = loop_lib.run_epoch_steps(
        feed,
        run,
        box["state"],
        epoch=e,
        step=e * steps_per_epoch,
        stop_step=(e + 1) * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        config=cfg,
        record=pending.append,
        check=check_and_log,
        log=check_and_log,
        save_state=lambda s, st: None,
      )
      box["epoch"] += 1
      steps_done += steps_per_epoch
    jax.block_until_ready(box["state"])
    return (time.perf_counter() - t0) / steps_done

  return {"warm": warm, "bare": bare, "loop": loop, "steps_per_epoch": steps_per_epoch}


def _info_like(DatasetInfo, p):  # noqa: N803
  import dataclasses  # pylint: disable=import-outside-toplevel

  fields = {f.name for f in dataclasses.fields(DatasetInfo)}
  kw = dict(
    name="synthetic",
    num_classes=p["classes"],
    image_shape=(p["hw"], p["hw"], p["c"]),
    mean=(0.5,) * p["c"],
    std=(0.25,) * p["c"],
    in_memory=True,
    train_split="train",
    eval_split="test",
    num_train=None,
    num_eval=None,
  )
  return DatasetInfo(**{k: v for k, v in kw.items() if k in fields})
