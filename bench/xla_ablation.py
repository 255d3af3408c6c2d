"""Ablation of kdjax's KD step on CPU: XLA:CPU options, BatchNorm variance, donation, BN folding
and precision, all in one process, interleaved (A B C ... A B C ...) so that machine-load drifts
hit every variant alike.

XLA options are applied per compilation (``lowered.compile(compiler_options=...)``), so every
variant lives in this process. For each round every variant runs ``--steps`` steps; the summary
gives per-variant median and min step times and the median of the per-round time ratios to the
first variant (``base`` = kdjax's defaults). On a loaded machine trust the ratios and the minima.

  .venv/bin/python bench/xla_ablation.py [--pair r32x4_r8x4] [--batch 64] [--rounds 6]
  .venv/bin/python bench/xla_ablation.py --variants base,eigen,fold_bn --rounds 4
  .venv/bin/python bench/xla_ablation.py --list

XLA:CPU options present in jaxlib 0.12 (``strings`` of libjax_common.so), the ones tried here:
``xla_cpu_experimental_ynn_fusion_type`` (YNNPACK library fusions; default in 0.12:
``individual_dot,individual_convolution``; '' = XLA's own Eigen convolutions and dots; other
types ``eltwise``, ``reduce``), ``xla_cpu_experimental_xnn_fusion_type`` /
``xla_cpu_experimental_onednn_fusion_type`` / ``xla_cpu_use_xnnpack`` / ``xla_cpu_use_onednn``
(accepted, but no XNNPACK/oneDNN op was emitted for our convolutions: checked on the compiled
HLO), ``xla_cpu_enable_fast_math``, ``xla_cpu_multi_thread_eigen``,
``xla_cpu_enable_concurrency_optimized_scheduler``, ``xla_cpu_use_thunk_runtime`` (the thunk
runtime is the only one left: false is ignored).
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

import jax.numpy as jnp  # noqa: E402

import kd_setup  # noqa: E402

YNN = "xla_cpu_experimental_ynn_fusion_type"
# name -> (compiler options, make_kd_step options)
VARIANTS = {
  "base": ({}, {}),
  "eigen": ({YNN: ""}, {}),
  # per-compile options take the enum names (the XLA_FLAGS spelling is lower-case)
  "ynn_dot_only": ({YNN: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}, {}),
  "fast_math": ({"xla_cpu_enable_fast_math": True}, {}),
  "concurrency_sched": ({"xla_cpu_enable_concurrency_optimized_scheduler": True}, {}),
  "no_donate": ({}, {"donate": False}),
  "fast_variance": ({}, {"fast_variance": True}),
  "fold_bn": ({}, {"fold_bn": True}),
  "teacher_bf16": ({}, {"teacher_dtype": jnp.bfloat16}),
  "both_bf16": ({}, {"teacher_dtype": jnp.bfloat16, "student_dtype": jnp.bfloat16}),
  "eigen_fold_bn": ({YNN: ""}, {"fold_bn": True}),
}
DEFAULT = "base,eigen,fast_variance,fold_bn,no_donate,teacher_bf16,eigen_fold_bn"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variants", default=DEFAULT)
  ap.add_argument("--rounds", type=int, default=6)
  ap.add_argument("--steps", type=int, default=1)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--pair", default="r32x4_r8x4")
  ap.add_argument("--list", action="store_true")
  ap.add_argument("--out", default="")
  a = ap.parse_args()
  if a.list:
    for k, (c, o) in VARIANTS.items():
      print(f"{k:<18} {c or ''} {o or ''}")
    return
  names = a.variants.split(",")
  setups, info = {}, {}
  for n in names:
    copts, opts = VARIANTS[n]
    s = kd_setup.make_kd_step(a.pair, a.batch, **opts)
    c = kd_setup.compile_step(s, copts or None)
    if opts.get("fast_variance"):
      kd_setup._patch_fast_variance(False)  # pylint: disable=protected-access
    kd_setup.run_steps(s, 1)
    setups[n] = s
    info[n] = {
      "compile_s": c,
      "compiler_options": {k: str(v) for k, v in copts.items()},
      "opts": {k: str(v) for k, v in opts.items()},
    }
    print(f"compiled {n:<18} {c:6.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
  times = {n: [] for n in names}
  loads = []
  for r in range(a.rounds):
    order = names[r % len(names) :] + names[: r % len(names)]
    for n in order:
      times[n].append(kd_setup.run_steps(setups[n], a.steps))
    loads.append(os.getloadavg()[0])
    print(
      f"round {r + 1}: "
      + ", ".join(f"{n} {1e3 * times[n][-1]:.0f}" for n in names)
      + f" ms (load {loads[-1]:.1f})",
      flush=True,
    )
  base = names[0]
  print(f"\n{a.pair} B={a.batch}, {a.rounds} rounds, load {min(loads):.1f}-{max(loads):.1f}")
  print(f"| variant | median ms | min ms | time / {base} (median of rounds) | compile s |")
  print("|---|---:|---:|---:|---:|")
  summary = {}
  for n in names:
    ratios = [t / b for t, b in zip(times[n], times[base])]
    summary[n] = dict(
      info[n],
      median_ms=1e3 * statistics.median(times[n]),
      min_ms=1e3 * min(times[n]),
      ratio=statistics.median(ratios),
      ratios=ratios,
      times=times[n],
    )
    print(
      f"| {n} | {summary[n]['median_ms']:.0f} | {summary[n]['min_ms']:.0f} | "
      f"{summary[n]['ratio']:.3f} | {info[n]['compile_s']:.1f} |"
    )
  if a.out:
    with open(a.out, "w") as f:
      json.dump(
        {
          "pair": a.pair,
          "batch": a.batch,
          "loads": loads,
          "summary": summary,
          "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        f,
        indent=1,
      )


if __name__ == "__main__":
  main()
