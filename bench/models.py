"""Throughput table of the CIFAR zoo: params, GFLOPs/image, forward and forward+backward images/s.

Batch 64 (``--batch``), 32x32x3 inputs, 100 classes, float32, on the default JAX backend.

* GFLOP/img: XLA's ``cost_analysis()['flops']`` of the compiled eval-mode forward / batch. XLA
  counts a multiply-add as 2 FLOPs (papers that quote MACs report about half).
* fwd img/s: jitted eval-mode forward (``train=False``).
* fwd+bwd img/s: jitted train-mode forward (BN batch statistics, ``mutable=['batch_stats']``) +
  cross-entropy + ``value_and_grad`` w.r.t. the parameters; no optimiser update.

Each timing is the median of ``--repeats`` runs after one warm-up run; slow models get fewer
repeats (``--budget_s`` seconds of timing per model and mode, at least 2 runs), and a model whose
first (already compiled) run takes longer than ``--budget_s`` reports that single run. The
``runs`` column gives the number of timed runs (forward/forward+backward).

  .venv/bin/python bench/models.py [--batch 64] [--models resnet8,vgg8] [--repeats 5]
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kdjax import models  # noqa: E402

CIFAR = [
  "resnet8",
  "resnet14",
  "resnet20",
  "resnet32",
  "resnet44",
  "resnet56",
  "resnet110",
  "resnet8x4",
  "resnet32x4",
  "ResNet50",
  "wrn_16_1",
  "wrn_16_2",
  "wrn_40_1",
  "wrn_40_2",
  "vgg8",
  "vgg11",
  "vgg13",
  "vgg16",
  "vgg19",
  "MobileNetV2",
  "ShuffleV1",
  "ShuffleV2",
]


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def _time(fn, args, repeats: int, budget_s: float):
  """Median seconds per call. The first call is a warm-up unless it alone exceeds ``budget_s``
  (then it is the only, reported, run: the executable is already compiled)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  if first > budget_s:
    return first, 1
  times = []
  while True:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
    if len(times) >= repeats or (len(times) >= 2 and sum(times) > budget_s):
      break
  return statistics.median(times), len(times)


def _init(model, x):
  """He-normal kernels, BN 1/0, running stats 0/1 (numpy; skips compiling the initialisers)."""
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = getattr(path[-1], "key", "")
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape), leaf.dtype)
    return jnp.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(model.init, jax.random.key(0), x))


def bench(name: str, batch: int, repeats: int, budget_s: float) -> dict:
  model = models.get(name, num_classes=100)
  rs = np.random.RandomState(0)
  x = jnp.asarray(rs.randn(batch, 32, 32, 3).astype(np.float32))
  y = jnp.asarray(rs.randint(0, 100, batch).astype(np.int32))
  variables = _init(model, x[:1])
  params, batch_stats = variables["params"], variables["batch_stats"]

  t0 = time.perf_counter()
  fwd = jax.jit(lambda v, x: model.apply(v, x, train=False)[0]).lower(variables, x).compile()
  compile_fwd = time.perf_counter() - t0

  def loss_fn(p, bs, x, y):
    (logits, _), new = model.apply(
      {"params": p, "batch_stats": bs}, x, train=True, mutable=["batch_stats"]
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

  t0 = time.perf_counter()
  step = (
    jax.jit(jax.value_and_grad(loss_fn, has_aux=True)).lower(params, batch_stats, x, y).compile()
  )
  compile_train = time.perf_counter() - t0

  t_fwd, n_fwd = _time(fwd, (variables, x), repeats, budget_s)
  t_train, n_train = _time(step, (params, batch_stats, x, y), repeats, budget_s)
  return {
    "model": name,
    "params": models.count_params(params),
    "gflops": _flops(fwd) / batch / 1e9,
    "fwd": batch / t_fwd,
    "train": batch / t_train,
    "compile": compile_fwd + compile_train,
    "runs": f"{n_fwd}/{n_train}",
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--models", default=",".join(CIFAR))
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--budget_s", type=float, default=3.0)
  a = p.parse_args()
  dev = jax.devices()[0]
  print(
    f"# kdjax CIFAR zoo, batch {a.batch}, 32x32x3, 100 classes, float32, "
    f"{dev.platform} ({dev.device_kind}), {os.cpu_count()} host cores, jax {jax.__version__}"
  )
  header = (
    "| model | params | GFLOP/img | fwd img/s | fwd+bwd img/s | compile s | runs |\n"
    "|---|---:|---:|---:|---:|---:|---:|"
  )
  print(header, flush=True)
  t_start = time.perf_counter()
  for name in a.models.split(","):
    r = bench(name, a.batch, a.repeats, a.budget_s)
    print(
      f"| {r['model']} | {r['params']:,} | {r['gflops']:.3f} | {r['fwd']:,.0f} | "
      f"{r['train']:,.0f} | {r['compile']:.1f} | {r['runs']} |",
      flush=True,
    )
  print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
  main()
