"""Times the full KD train step, resnet32x4 -> resnet8x4, batch 64, 32x32x3, 100 classes.

Step = teacher forward (inference BN, stop_gradient) + student forward/backward +
0.1 CE + 0.9 T^2 KL (T=4) + SGD(0.05, momentum 0.9, wd 5e-4); the batch is already on device
(the same setting as platform.md's baseline). Reports compile time and the median images/s over
several timed runs after warm-up; with ``--torch_python`` (or torch importable here) runs
bench/torch_kd_step.py with the same settings and prints the ratio.

  .venv/bin/python bench/kd_step.py [--batch 64] [--torch_python /path/to/python-with-torch]
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kdjax import models  # noqa: E402
from kdjax.config import base_config  # noqa: E402
from kdjax.methods import build_method  # noqa: E402
from kdjax.train import state as state_lib  # noqa: E402
from kdjax.train.optim import make_optimizer  # noqa: E402
from kdjax.train.step import make_steps  # noqa: E402


def bench_jax(batch, steps, repeats, teacher="resnet32x4", student="resnet8x4"):
  t_mod = models.get(teacher, num_classes=100)
  s_mod = models.get(student, num_classes=100)
  x0 = jnp.zeros((1, 32, 32, 3))
  tv = t_mod.init(jax.random.PRNGKey(1), x0)
  sv = s_mod.init(jax.random.PRNGKey(0), x0)
  cfg = base_config()
  tx, _ = make_optimizer(cfg.optim, steps_per_epoch=782)
  method = build_method(
    dict(name="kd", ce_weight=0.1, terms=dict(kd=dict(weight=0.9, temperature=4.0)))
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
    teacher=t_mod,
    train_transform=lambda im, r: im,
    eval_transform=lambda im: im,
    emit_norms=False,
  )
  rs = np.random.RandomState(0)
  b = {
    "image": jnp.asarray(rs.randn(batch, 32, 32, 3).astype(np.float32)),
    "label": jnp.asarray(rs.randint(0, 100, batch).astype(np.int32)),
    "index": jnp.arange(batch),
  }
  t0 = time.perf_counter()
  compiled = fns.train_batch.lower(state, b, tv).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(3):
    state, m = compiled(state, b, tv)
  jax.block_until_ready(m)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      state, m = compiled(state, b, tv)
    jax.block_until_ready(m)
    times.append((time.perf_counter() - t0) / steps)
  med = statistics.median(times)
  return {
    "framework": f"jax {jax.__version__} f32 NHWC",
    "batch": batch,
    "step_s": med,
    "img_per_s": batch / med,
    "compile_s": compile_s,
    "device": str(jax.devices()[0].platform),
    "num_devices": 1,
  }


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--torch_python", default=os.environ.get("KDJAX_TORCH_PYTHON", ""))
  args = ap.parse_args()
  res = {"jax": bench_jax(args.batch, args.steps, args.repeats)}
  py = args.torch_python or (sys.executable if importlib.util.find_spec("torch") else "")
  if py:
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_kd_step.py")
    out = subprocess.run(
      [
        py,
        script,
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--repeats",
        str(args.repeats),
      ],
      capture_output=True,
      text=True,
    )
    if out.returncode == 0:
      res["torch"] = json.loads(out.stdout.strip().splitlines()[-1])
    else:
      res["torch_error"] = out.stderr[-500:]
  j = res["jax"]
  print(f"KD step resnet32x4 -> resnet8x4, batch {args.batch}, 32x32x3, 100 classes")
  print(
    f"  {j['framework']:<28} {j['img_per_s']:8.1f} img/s  (step {1e3 * j['step_s']:.0f} ms, "
    f"compile {j['compile_s']:.1f} s)"
  )
  if "torch" in res:
    t = res["torch"]
    print(f"  {t['framework']:<28} {t['img_per_s']:8.1f} img/s  (step {1e3 * t['step_s']:.0f} ms)")
    print(f"  ratio jax/torch = {j['img_per_s'] / t['img_per_s']:.2f}")
  elif "torch_error" in res:
    print("  torch run failed:", res["torch_error"])
  else:
    print("  torch not importable: pass --torch_python to compare")
  print(json.dumps(res))


if __name__ == "__main__":
  main()
