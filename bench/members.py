"""Throughput of N students in one jitted KD step (kdjax.train.members) vs N separate runs.

For each pair, implementation (``--impl``: ``vmap`` = ``jax.vmap`` over the member axis, ``unroll``
= the single step written out once per member inside one jit) and N in --members: the
jitted member step of ``kdjax.train.members`` (the normal KD step of
``kdjax.train.step.make_steps`` mapped over members; seed mode: every member has its
own batch, so the teacher forward is mapped too; ``--shared``: one batch for all members, one
teacher forward) against the single-run step. N separate runs on one device take N times the
single step's time, so the speed-up is ``N * t_single / t_N`` (> 1: the member step trains N
students faster than N runs one after another). The KD step: 0.1 CE + 0.9 T^2 KL (T = 4), SGD
0.05 / momentum 0.9 / wd 5e-4, crop + flip augmentation inside the step, batch 64 per member.

  .venv/bin/python bench/members.py [--pairs fmnist,cifar] [--members 1,2,4,8] [--steps 3]

Pairs: ``fmnist`` = resnet20 -> resnet8 at 28x28x1, 10 classes; ``cifar`` = resnet32x4 ->
resnet8x4 at 32x32x3, 100 classes. Prints one JSON line per (pair, N) and a Markdown table.
"""

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kdjax import models  # noqa: E402
from kdjax.config import base_config  # noqa: E402
from kdjax.data import augment, info as data_info  # noqa: E402
from kdjax.methods import build_method  # noqa: E402
from kdjax.train import state as state_lib  # noqa: E402
from kdjax.train.members import make_member_step, stack  # noqa: E402
from kdjax.train.optim import make_optimizer  # noqa: E402
from kdjax.train.step import make_steps  # noqa: E402

PAIRS = {
  "fmnist": ("resnet20", "resnet8", "fashion_mnist"),
  "cifar": ("resnet32x4", "resnet8x4", "cifar100"),
}


def _time(fn, state, args, steps, repeats):
  t0 = time.perf_counter()
  state, m = fn(state, *args)  # compile + first step
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      state, m = fn(state, *args)
    jax.block_until_ready(m)
    times.append((time.perf_counter() - t0) / steps)
  return statistics.median(times), compile_s


def bench_pair(pair, members, batch, steps, repeats, shared, impl):
  t_name, s_name, ds = PAIRS[pair]
  info = data_info(ds)
  k = info.num_classes
  t_mod, s_mod = models.get(t_name, num_classes=k), models.get(s_name, num_classes=k)
  x0 = jnp.zeros((1,) + tuple(info.image_shape))
  tv = t_mod.init(jax.random.PRNGKey(100), x0)
  cfg = base_config()
  tx, _ = make_optimizer(cfg.optim, steps_per_epoch=782)
  method = build_method(
    dict(name="kd", ce_weight=0.1, terms=dict(kd=dict(weight=0.9, temperature=4.0)))
  )
  fns = make_steps(
    student=s_mod,
    method=method,
    tx=tx,
    teacher=t_mod,
    train_transform=lambda im, r: augment.train_transform(info, im, r, crop_pad=4, flip=True),
    eval_transform=lambda im: augment.eval_transform(info, im),
    emit_norms=False,
  )
  rs = np.random.RandomState(0)
  n_img = 8 * batch
  images = jnp.asarray(rs.randint(0, 256, (n_img,) + tuple(info.image_shape)).astype(np.uint8))
  labels = jnp.asarray(rs.randint(0, k, n_img).astype(np.int32))
  ds_index = jnp.arange(n_img, dtype=jnp.int32)

  def init(seed):
    v = s_mod.init(jax.random.PRNGKey(seed), x0)
    return state_lib.create(
      {"student": v["params"], "connectors": {}},
      {"student": v["batch_stats"]},
      tx,
      jax.random.PRNGKey(seed + 1000),
    )

  idx1 = jnp.asarray(rs.permutation(n_img)[:batch].astype(np.int32))
  single = jax.jit(fns.train_indexed, donate_argnums=(0,))
  t1, c1 = _time(single, init(0), (images, labels, ds_index, idx1, tv), steps, repeats)
  rows = []
  for n in members:
    state = stack([init(s) for s in range(n)])
    idx = (
      idx1
      if shared
      else jnp.asarray(np.stack([rs.permutation(n_img)[:batch] for _ in range(n)]).astype(np.int32))
    )
    step = make_member_step(fns.train_indexed, n, shared_data=shared, impl=impl)
    tn, cn = _time(step, state, (images, labels, ds_index, idx, tv), steps, repeats)
    rows.append(
      {
        "pair": f"{t_name}->{s_name}",
        "members": n,
        "shared_data": shared,
        "impl": impl,
        "batch_per_member": batch,
        "single_step_s": t1,
        "member_step_s": tn,
        "single_img_s": batch / t1,
        "member_img_s": n * batch / tn,
        "speedup_vs_separate": n * t1 / tn,
        "compile_single_s": c1,
        "compile_member_s": cn,
        "device": jax.devices()[0].platform,
        "load": os.getloadavg()[0],
      }
    )
    print(json.dumps(rows[-1]), flush=True)
  return rows


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--pairs", default="fmnist,cifar")
  ap.add_argument("--members", default="1,2,4,8")
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--shared", action="store_true", help="one batch (and teacher forward) for all")
  ap.add_argument("--impl", default="vmap,unroll", help="member step implementations to time")
  a = ap.parse_args()
  rows = []
  for p in a.pairs.split(","):
    for impl in a.impl.split(","):
      rows += bench_pair(
        p, [int(x) for x in a.members.split(",")], a.batch, a.steps, a.repeats, a.shared, impl
      )
  print(
    "\n| pair | impl | N | single step | member step | img/s single | img/s members | "
    "speed-up vs N runs | compile single / member |"
  )
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    print(
      f"| {r['pair']} | {r['impl']} | {r['members']} | {r['single_step_s'] * 1e3:.0f} ms | "
      f"{r['member_step_s'] * 1e3:.0f} ms | {r['single_img_s']:.0f} | {r['member_img_s']:.0f}"
      f" | {r['speedup_vs_separate']:.2f}x | {r['compile_single_s']:.1f} / "
      f"{r['compile_member_s']:.1f} s |"
    )


if __name__ == "__main__":
  main()
