"""kdjax vs PyTorch on the same KD train step, side by side in one run, interleaved (A B A B).

For every (pair, batch) configuration: kdjax's jitted KD step (``make_steps``' ``train_batch``,
identity transforms, the batch already on the device, timed in this process), kdjax's whole
epoch loop (``run_epoch_steps`` over an ``InMemoryFeed`` of uint8 images with the real crop +
flip + normalise inside the step, metrics queued and fetched as in training) next to its bare
``train_indexed`` step, and PyTorch's eager float32, channels-last, ``torch.compile``
(+ channels-last) and bf16 autocast + channels-last variants of the same step, run by a persistent
worker process (bench/torch_worker.py, in the Python that has torch: PyTorch and kdjax need
different Pythons here). Each round times every variant once, kdjax and PyTorch alternating, in a
rotated order; the table gives per-variant medians and min–max over rounds, each variant's speed
relative to PyTorch eager (median of the per-round ratios: slow drifts in load cancel), the load
average while it ran, compile time and the cold start to the first step (imports + build +
compile + first step, as a fresh process would see it). kdjax variants with other XLA flags run in
a kdjax worker process (``--kdjax_flags``).

  .venv/bin/python bench/vs_torch.py                       # full run (~20-40 min on 2 cores)
  .venv/bin/python bench/vs_torch.py --quick               # smoke test (~1-2 min)
  .venv/bin/python bench/vs_torch.py --pairs r32x4_r8x4:64 --rounds 5 --torch eager,compile

Writes ``<out>/vs_torch_<UTC time>.json`` (every measurement) and prints a Markdown table.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

# A Python with torch (e.g. a scratch 3.11 venv): --torch_python or $KDJAX_TORCH_PYTHON.
DEFAULT_TORCH_PY = os.path.join(os.path.dirname(ROOT), "torchvenv", "bin", "python")
TORCH_VARIANTS = ("eager", "channels_last", "compile", "compile_cl", "bf16_cl")
KDJAX_VARIANTS = ("step", "loop", "loop_bare")  # also: step_bf16


def _load():
  return os.getloadavg()[0]


# ---------------------------------------------------------------- workers (subprocess JSON lines)
class Worker:
  """A persistent subprocess answering one JSON line per request."""

  def __init__(self, argv, env=None):
    self.proc = subprocess.Popen(
      argv,
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=env,
      cwd=ROOT,
    )

  def ask(self, **msg):
    self.proc.stdin.write(json.dumps(msg) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      err = self.proc.stderr.read()[-2000:]
      raise RuntimeError(f"worker {self.proc.args} died: {err}")
    out = json.loads(line)
    if not out.get("ok"):
      raise RuntimeError(f"worker error: {out.get('error')}")
    return out

  def close(self):
    try:
      self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
      self.proc.stdin.flush()
      self.proc.wait(timeout=30)
    except Exception:  # pylint: disable=broad-except
      self.proc.kill()


# ---------------------------------------------------------------- kdjax side
class KdjaxRunner:
  """Builds and times kdjax variants in this process (the same protocol as the workers)."""

  def __init__(self, import_s):
    self.import_s = import_s
    self.items = {}

  def setup(self, key, pair, batch, variant, steps_per_epoch=4, **opts):
    steps_per_epoch = int(os.environ.get("KDJAX_BENCH_EPOCH_STEPS", steps_per_epoch))
    import jax  # pylint: disable=import-outside-toplevel
    import kd_setup  # pylint: disable=import-outside-toplevel

    t0 = time.perf_counter()
    if variant in ("step", "step_bf16"):
      if variant == "step_bf16":  # kdjax.precision 'bfloat16' for student and teacher
        import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

        opts = dict(opts, student_dtype=jnp.bfloat16, teacher_dtype=jnp.bfloat16)
      s = kd_setup.make_kd_step(pair, batch, **opts)
      t1 = time.perf_counter()
      compile_s = kd_setup.compile_step(s)
      t2 = time.perf_counter()
      kd_setup.run_steps(s, 1)
      t3 = time.perf_counter()
      self.items[key] = lambda n, s=s: kd_setup.run_steps(s, n)
      loss = None
    else:  # loop / loop_bare share one set-up per (pair, batch)
      shared = (pair, batch, "loop")
      if shared not in self.items:
        self.items[shared] = kd_setup.make_epoch_loop(pair, batch, steps_per_epoch=steps_per_epoch)
      L = self.items[shared]
      t1 = time.perf_counter()
      first = L["warm"]()  # compile + first step (the jit compiles on first call)
      t2 = t3 = time.perf_counter()
      compile_s = first if variant == "loop" else None  # loop_bare shares loop's compile
      if variant == "loop":
        self.items[key] = lambda n, L=L: _loop_steps(L, n)
      else:
        self.items[key] = L["bare"]
      loss = None
    del loss
    return {
      "ok": True,
      "setup_s": t1 - t0,
      "compile_s": compile_s,
      "first_step_s": t3 - t2,
      "cold_s": self.import_s + (t3 - t0) if compile_s is not None else None,
      "import_s": self.import_s,
      "framework": _jax_version(),
      "device": str(jax.devices()[0].device_kind),
    }

  def ask(self, cmd, key=None, steps=1, **kw):
    if cmd == "setup":
      return self.setup(key, **kw)
    if cmd == "time":
      return {"ok": True, "step_s": self.items[key](steps)}
    if cmd == "reset":
      self.items.clear()
      return {"ok": True}
    raise ValueError(cmd)

  def close(self):
    self.items.clear()


def _loop_steps(L, n):
  """Runs whole epochs covering at least ``n`` steps; seconds per step."""
  epochs = max(1, -(-n // L["steps_per_epoch"]))
  return L["loop"](epochs)


def _jax_version():
  import jax  # pylint: disable=import-outside-toplevel

  return f"jax {jax.__version__}"


def kdjax_worker_main():
  """``--worker``: the kdjax runner behind the JSON-lines protocol (other XLA_FLAGS)."""
  t0 = time.perf_counter()
  import kd_setup  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

  runner = KdjaxRunner(time.perf_counter() - T_START)
  del t0
  for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("cmd") == "quit":
      break
    try:
      out = runner.ask(**msg)
    except Exception as e:  # pylint: disable=broad-except
      out = {"ok": False, "error": f"{type(e).__name__}: {e}"[-2000:]}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- driver
def parse_pairs(s):
  out = []
  for item in s.split(","):
    pair, _, b = item.partition(":")
    out.append((pair, int(b or 64)))
  return out


def run_config(pair, batch, variants, runners, *, rounds, steps, warm_steps, log):
  """Sets up and times every variant of one (pair, batch); returns the per-variant records."""
  rec = {}
  for v in variants:
    name, runner_key, kwargs = v["name"], v["runner"], v["kwargs"]
    runner = runners[runner_key]
    load0 = _load()
    try:
      info = runner.ask(cmd="setup", key=name, pair=pair, batch=batch, **kwargs)
    except Exception as e:  # pylint: disable=broad-except
      log(f"  {name}: setup failed: {e}")
      continue
    info["load_setup"] = (load0 + _load()) / 2
    if warm_steps:
      runner.ask(cmd="time", key=name, steps=warm_steps)
    rec[name] = dict(info, times=[], loads=[], rounds=[])
    log(
      f"  setup {name:<22} compile/first {info.get('compile_s') or 0:6.1f} s  cold "
      f"{info.get('cold_s') or 0:6.1f} s  load {info['load_setup']:.1f}"
    )
  names = [v["name"] for v in variants if v["name"] in rec]
  runner_of = {v["name"]: v["runner"] for v in variants}
  for r in range(rounds):
    order = names[r % len(names) :] + names[: r % len(names)]
    for name in order:
      load0 = _load()
      out = runners[runner_of[name]].ask(cmd="time", key=name, steps=steps)
      rec[name]["times"].append(out["step_s"])
      rec[name]["rounds"].append(r)
      rec[name]["loads"].append((load0 + _load()) / 2)
    log(
      f"  round {r + 1}/{rounds}: "
      + ", ".join(f"{n} {1e3 * rec[n]['times'][-1]:.0f}" for n in names)
      + f" ms (load {_load():.1f})"
    )
  for runner in runners.values():
    runner.ask(cmd="reset")
  return rec


def summarize(rec, batch, ref="torch:eager"):
  rows = []
  for name, r in rec.items():
    if not r["times"]:
      continue
    med = statistics.median(r["times"])
    row = {
      "variant": name,
      "step_ms": 1e3 * med,
      "min_ms": 1e3 * min(r["times"]),
      "max_ms": 1e3 * max(r["times"]),
      "img_s": batch / med,
      "load": statistics.mean(r["loads"]),
      "compile_s": r.get("compile_s"),
      "cold_s": r.get("cold_s"),
      "n": len(r["times"]),
    }
    if ref in rec and rec[ref]["times"]:
      ratios = [rt / t for t, rt in zip(r["times"], rec[ref]["times"])]
      row["speed_vs_ref"] = statistics.median(ratios)
      row["speed_vs_ref_min"], row["speed_vs_ref_max"] = min(ratios), max(ratios)
    rows.append(row)
  return rows


def table(pair, batch, rows, ref="torch:eager"):
  lines = [
    f"\n### {pair}, batch {batch}\n",
    f"| variant | step ms (median) | min–max ms | img/s | speed vs {ref} (median, min–max) "
    "| load | compile s | cold start s |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    sp = (
      f"{r['speed_vs_ref']:.2f} ({r['speed_vs_ref_min']:.2f}–{r['speed_vs_ref_max']:.2f})"
      if "speed_vs_ref" in r
      else "–"
    )
    cs = f"{r['compile_s']:.1f}" if r.get("compile_s") is not None else "–"
    cold = f"{r['cold_s']:.1f}" if r.get("cold_s") is not None else "–"
    lines.append(
      f"| {r['variant']} | {r['step_ms']:.0f} | {r['min_ms']:.0f}–{r['max_ms']:.0f} | "
      f"{r['img_s']:.1f} | {sp} | {r['load']:.1f} | {cs} | {cold} |"
    )
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument(
    "--pairs",
    default="r32x4_r8x4:64,r32x4_r8x4:128,r20_r8:128",
    help="comma-separated PAIR:BATCH (pairs: bench/kd_setup.py PAIRS)",
  )
  ap.add_argument("--rounds", type=int, default=4)
  ap.add_argument("--steps", type=int, default=3, help="steps per timed call")
  ap.add_argument("--warm_steps", type=int, default=1)
  ap.add_argument("--torch", default=",".join(TORCH_VARIANTS), help="torch variants ('' = none)")
  ap.add_argument(
    "--kdjax",
    default=",".join(KDJAX_VARIANTS),
    help="kdjax variants: step, step_bf16 (bfloat16 policy for both models), loop, loop_bare",
  )
  ap.add_argument(
    "--epoch_steps",
    type=int,
    default=4,
    help="steps per epoch of the kdjax:loop variant's in-memory feed",
  )
  ap.add_argument(
    "--kdjax_flags",
    default="",
    help="';'-separated NAME=XLA_FLAGS: extra kdjax step variants in workers",
  )
  ap.add_argument(
    "--fold_bn",
    action="store_true",
    help="also time kdjax's step with the teacher's BatchNorm folded (kdjax.models.fold_bn)",
  )
  ap.add_argument(
    "--torch_python",
    default=os.environ.get("KDJAX_TORCH_PYTHON", DEFAULT_TORCH_PY),
    help="a Python with torch ('none' = kdjax only)",
  )
  ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
  ap.add_argument(
    "--quick",
    action="store_true",
    help="smoke test: r20_r8 at batch 8, 1 round of 1 step, eager torch only",
  )
  ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  a = ap.parse_args()
  if a.worker:
    kdjax_worker_main()
    return
  if a.quick:
    if a.pairs == ap.get_default("pairs"):
      a.pairs = "r20_r8:8"
    a.rounds, a.steps, a.warm_steps = 1, 1, 0
    if a.torch == ap.get_default("torch"):
      a.torch = "eager"
  os.environ["KDJAX_BENCH_EPOCH_STEPS"] = str(a.epoch_steps)
  import kd_setup  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  import jax  # pylint: disable=import-outside-toplevel

  import_s = time.perf_counter() - T_START
  log = lambda s: print(s, flush=True)  # noqa: E731

  runners = {"kdjax": KdjaxRunner(import_s)}
  variants = [
    {"name": f"kdjax:{v}", "runner": "kdjax", "kwargs": {"variant": v}}
    for v in a.kdjax.split(",")
    if v
  ]
  if a.fold_bn:
    variants.append(
      {
        "name": "kdjax:step+fold_bn",
        "runner": "kdjax",
        "kwargs": {"variant": "step", "fold_bn": True},
      }
    )
  for spec in filter(None, a.kdjax_flags.split(";")):
    name, _, flags = spec.partition("=")
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
    runners[f"kdjax[{name}]"] = Worker(
      [sys.executable, os.path.abspath(__file__), "--worker"], env=env
    )
    variants.append(
      {"name": f"kdjax[{name}]:step", "runner": f"kdjax[{name}]", "kwargs": {"variant": "step"}}
    )
  torch_variants = [v for v in a.torch.split(",") if v]
  torch_ok = a.torch_python.lower() != "none" and torch_variants
  if torch_ok and not os.path.exists(a.torch_python):
    log(f"[vs_torch] {a.torch_python} not found: kdjax only (pass --torch_python).")
    torch_ok = False
  if torch_ok:
    runners["torch"] = Worker([a.torch_python, os.path.join(HERE, "torch_worker.py")])
  # interleave: kdjax, torch, kdjax, torch, ...
  tv = [
    {"name": f"torch:{v}", "runner": "torch", "kwargs": {"variant": v}}
    for v in (torch_variants if torch_ok else [])
  ]
  merged = []
  for i in range(max(len(variants), len(tv))):
    merged += variants[i : i + 1] + tv[i : i + 1]

  meta = {
    "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "host": platform.node(),
    "cpus": os.cpu_count(),
    "jax": jax.__version__,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "python": sys.version.split()[0],
    "device": str(jax.devices()[0].device_kind),
    "num_devices": jax.device_count(),
    "args": vars(a),
    "import_s": import_s,
    "load_start": os.getloadavg(),
  }
  results = {"meta": meta, "configs": []}
  md = []
  try:
    for pair, batch in parse_pairs(a.pairs):
      log(
        f"[vs_torch] {pair} batch {batch}: {len(merged)} variants, {a.rounds} rounds x "
        f"{a.steps} steps (load {_load():.1f})"
      )
      rec = run_config(
        pair,
        batch,
        merged,
        runners,
        rounds=a.rounds,
        steps=a.steps,
        warm_steps=a.warm_steps,
        log=log,
      )
      rows = summarize(rec, batch)
      results["configs"].append({"pair": pair, "batch": batch, "records": rec, "rows": rows})
      md.append(table(pair, batch, rows))
      log(md[-1])
  finally:
    for r in runners.values():
      r.close()
  meta["load_end"] = os.getloadavg()
  meta["wall_s"] = time.perf_counter() - T_START
  os.makedirs(a.out, exist_ok=True)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  path = os.path.join(a.out, f"vs_torch_{stamp}{'_quick' if a.quick else ''}.json")
  with open(path, "w") as f:
    json.dump(results, f, indent=1)
  log(
    f"\n[vs_torch] wall {meta['wall_s']:.0f} s; load {meta['load_start'][0]:.1f} -> "
    f"{meta['load_end'][0]:.1f}; wrote {path}"
  )
  return results


if __name__ == "__main__":
  main()
