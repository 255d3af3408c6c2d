"""Why the quickstart's KD run costs more than the student-alone run: a decomposition.

The quickstart (configs/quickstart.py) trains resnet8 on Fashion-MNIST (28x28x1, 10 classes,
batch 128) alone and with KD from resnet20. Per training step the KD run adds the teacher's
inference forward; per run it adds fixed costs: compiling a bigger step, evaluating the teacher on
the test set once (its own compiled eval step) and loading the teacher. This script measures each
part on synthetic data, interleaved (student step, KD step, teacher forward, ... per round):

  * ``student`` step: CE only (``make_steps`` without a teacher);
  * ``kd`` step: the quickstart's 0.1 CE + 0.9 KD(T=4) step;
  * ``teacher_fwd``: the teacher's inference forward alone (jitted);
  * compile time of each, and the teacher's test-set evaluation (``eval_batch`` over ``--eval_n``
    images at the quickstart's eval batch).

  .venv/bin/python bench/kd_vs_student.py [--rounds 4] [--steps 3] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import kd_setup  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--pair", default="r20_r8")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--rounds", type=int, default=4)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--eval_n", type=int, default=10000)
  ap.add_argument("--eval_batch", type=int, default=0, help="0 = base_config's eval_batch_size")
  ap.add_argument("--out", default="")
  a = ap.parse_args()
  from kdjax.config import base_config  # pylint: disable=import-outside-toplevel
  from kdjax.train.step import make_steps  # pylint: disable=import-outside-toplevel

  eval_bs = a.eval_batch or int(base_config().eval_batch_size)

  res = {"pair": a.pair, "batch": a.batch, "load_start": os.getloadavg()[0]}
  stu = kd_setup.make_kd_step(a.pair, a.batch, teacher=False)
  kd = kd_setup.make_kd_step(a.pair, a.batch)
  res["compile_student_s"] = kd_setup.compile_step(stu)
  res["compile_kd_s"] = kd_setup.compile_step(kd)
  p, t_mod, tv, _, _ = kd_setup.make_models(a.pair)
  x = kd["batch"]["image"]
  tf = jax.jit(lambda v, x: t_mod.apply(v, x, train=False)[0])
  t0 = time.perf_counter()
  tfc = tf.lower(tv, x).compile()
  res["compile_teacher_fwd_s"] = time.perf_counter() - t0

  def teacher_fwd(n):
    t0 = time.perf_counter()
    for _ in range(n):
      out = tfc(tv, x)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n

  timers = {
    "student": lambda n: kd_setup.run_steps(stu, n),
    "kd": lambda n: kd_setup.run_steps(kd, n),
    "teacher_fwd": teacher_fwd,
  }
  for f in timers.values():
    f(1)
  times = {k: [] for k in timers}
  for r in range(a.rounds):
    for k in list(timers)[r % 3 :] + list(timers)[: r % 3]:
      times[k].append(timers[k](a.steps))
    print(
      f"round {r + 1}: "
      + ", ".join(f"{k} {1e3 * v[-1]:.0f} ms" for k, v in times.items())
      + f" (load {os.getloadavg()[0]:.1f})",
      flush=True,
    )
  for k, v in times.items():
    res[f"{k}_ms"] = 1e3 * statistics.median(v)
  res["kd_over_student"] = statistics.median(
    [k_ / s for k_, s in zip(times["kd"], times["student"])]
  )
  res["teacher_fwd_over_student"] = statistics.median(
    [t / s for t, s in zip(times["teacher_fwd"], times["student"])]
  )

  # The teacher's test-set evaluation, as train_and_evaluate does once at the start.
  t_steps = make_steps(
    student=t_mod,
    method=kd_setup.kd_method(),
    tx=None,
    train_transform=lambda im, r: im,
    eval_transform=lambda im: im,
  )
  xe = jnp.asarray(np.random.RandomState(0).randn(eval_bs, p["hw"], p["hw"], p["c"]), jnp.float32)
  ye = jnp.zeros((eval_bs,), jnp.int32)
  me = jnp.ones((eval_bs,), jnp.float32)
  t0 = time.perf_counter()
  out = t_steps.eval_batch(tv, xe, ye, me, ye)
  jax.block_until_ready(out)
  res["teacher_eval_compile_and_first_s"] = time.perf_counter() - t0
  nb = -(-a.eval_n // eval_bs)
  t0 = time.perf_counter()
  for _ in range(min(nb, 4)):
    out = t_steps.eval_batch(tv, xe, ye, me, ye)
  jax.block_until_ready(out)
  per = (time.perf_counter() - t0) / min(nb, 4)
  res["teacher_eval_s"] = per * nb
  res["eval_batch"] = eval_bs
  res["load_end"] = os.getloadavg()[0]
  print(json.dumps(res, indent=1))
  if a.out:
    with open(a.out, "w") as f:
      json.dump(res, f, indent=1)


if __name__ == "__main__":
  main()
