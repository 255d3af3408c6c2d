"""Ablation of XLA:CPU options (and model-side switches) on kdjax's KD step, one process per
variant, rounds interleaved (A B C ... A B C ...) so that machine-load drifts hit every variant.

XLA reads ``XLA_FLAGS`` once per process, so every (variant, round) is a fresh worker process that
compiles the step, warms up and times ``--steps`` steps; the driver prints the per-variant median
of the per-round ratios to the first variant (the baseline), plus load.

  .venv/bin/python bench/xla_ablation.py --rounds 3 --variants base,ynn_conv,xnn_conv
  .venv/bin/python bench/xla_ablation.py --list     # the variants and their flags

Worker: ``--worker VARIANT`` prints one JSON line (used by the driver).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (XLA_FLAGS additions, model/step options)
VARIANTS = {
    "base": ("", {}),
    "ynn_conv": ("--xla_cpu_experimental_ynn_fusion_type=individual_convolution", {}),
    "ynn_conv_dot": ("--xla_cpu_experimental_ynn_fusion_type=individual_convolution,"
                     "individual_dot", {}),
    "ynn_all": ("--xla_cpu_experimental_ynn_fusion_type=individual_convolution,individual_dot,"
                "eltwise,reduce", {}),
    "xnn_conv": ("--xla_cpu_experimental_xnn_fusion_type=individual_convolution", {}),
    "xnn_conv_dot": ("--xla_cpu_experimental_xnn_fusion_type=individual_convolution,"
                     "individual_dot", {}),
    "onednn": ("--xla_cpu_use_onednn=true", {}),
    "onednn_conv": ("--xla_cpu_experimental_onednn_fusion_type=individual_convolution", {}),
    "xnnpack": ("--xla_cpu_use_xnnpack=true", {}),
    "fast_math": ("--xla_cpu_enable_fast_math=true", {}),
    "no_thunks": ("--xla_cpu_use_thunk_runtime=false", {}),
    "no_eigen_mt": ("--xla_cpu_multi_thread_eigen=false", {}),
    "concurrency_sched": ("--xla_cpu_enable_concurrency_optimized_scheduler=true", {}),
    "fast_var": ("", {"fast_variance": True}),
    "no_donate": ("", {"donate": False}),
    "all_taps": ("", {"all_taps": True}),
    "fold_bn": ("", {"fold_bn": True}),
    "ynn_conv_fold": ("--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
                      {"fold_bn": True}),
}


def worker(name, batch, steps, pair):
  flags, opts = VARIANTS[name]
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
  sys.path.insert(0, ROOT)
  sys.path.insert(0, os.path.join(ROOT, "bench"))
  import jax  # noqa: F401  (after XLA_FLAGS)
  import kd_setup  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  setup = kd_setup.make_kd_step(pair, batch, **opts)
  out = kd_setup.time_step(setup, steps=steps, repeats=1, warmup=2)
  out.update(variant=name, flags=flags, opts=opts, wall_s=time.perf_counter() - t0)
  print(json.dumps(out))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variants", default="base,ynn_conv,xnn_conv,onednn,fast_math")
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--steps", type=int, default=4)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--pair", default="r32x4_r8x4")
  ap.add_argument("--worker", default="")
  ap.add_argument("--list", action="store_true")
  ap.add_argument("--out", default="")
  a = ap.parse_args()
  if a.list:
    for k, (f, o) in VARIANTS.items():
      print(f"{k:<18} {f} {o or ''}")
    return
  if a.worker:
    worker(a.worker, a.batch, a.steps, a.pair)
    return
  names = a.variants.split(",")
  rows = {n: [] for n in names}
  for r in range(a.rounds):
    for n in names:
      cmd = [sys.executable, __file__, "--worker", n, "--batch", str(a.batch), "--steps",
             str(a.steps), "--pair", a.pair]
      p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
      if p.returncode:
        print(f"round {r} {n}: FAILED {p.stderr[-400:]}", flush=True)
        rows[n].append(None)
        continue
      res = json.loads(p.stdout.strip().splitlines()[-1])
      res["load"] = os.getloadavg()[0]
      rows[n].append(res)
      print(f"round {r} {n:<18} step {1e3 * res['step_s']:7.0f} ms  compile "
            f"{res['compile_s']:5.1f} s  load {res['load']:.1f}", flush=True)
  base = names[0]
  print(f"\n{a.pair} B={a.batch}: median over rounds of (variant step / {base} step, same round)")
  summary = {}
  for n in names:
    ratios = [x["step_s"] / b["step_s"] for x, b in zip(rows[n], rows[base]) if x and b]
    steps_ = [x["step_s"] for x in rows[n] if x]
    if not steps_:
      print(f"  {n:<18} failed")
      continue
    summary[n] = {"median_step_s": statistics.median(steps_),
                  "median_ratio_to_base": statistics.median(ratios) if ratios else None,
                  "ratios": ratios, "flags": VARIANTS[n][0], "opts": VARIANTS[n][1]}
    print(f"  {n:<18} step {1e3 * statistics.median(steps_):7.0f} ms  time ratio "
          f"{summary[n]['median_ratio_to_base']:.3f}  ({', '.join(f'{r:.2f}' for r in ratios)})")
  if a.out:
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
      json.dump({"pair": a.pair, "batch": a.batch, "rows": rows, "summary": summary}, f, indent=1)


if __name__ == "__main__":
  main()
