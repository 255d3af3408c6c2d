"""Per-method cost table: the step time each distillation method adds over plain KD.

resnet32x4 -> resnet8x4, batch 64, 32x32x3, 100 classes, SGD (the RepDistiller step). For every
method the timed step is ``0.1 CE + 0.9 KD(T=4) + b * method`` with the method's term exactly as in
its library preset (``kdjax.methods.preset``, which ``configs/cifar100/*.py`` use too), connectors
and explicit states (CRD memory banks over 50,000 CIFAR images, 16,384 negatives) included. AB and
FSP train their term only in RepDistiller's 30-epoch init stage (the main stage is CE alone): their
rows time that term inside the KD step, i.e. the cost of one init-stage step's term. FT's row is
its main-stage term (the paraphraser's init stage is cheaper). SSKD's row is its main stage
(preset ``'sskd'``: 4 rotated views, so student and teacher run on 4 x 64 images; its
0.9 KD on the normal views is the KD term every row has). The
batch is already on device; teacher forward, student forward/backward, connectors and optimiser
update are all inside the one jitted step. Reports compile time, median step time and the
difference to the plain-KD step.

  .venv/bin/python bench/method_cost.py [--methods kd,fitnet,crd] [--steps 2 --repeats 3]
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
from kdjax.methods import build_method, preset, preset_names  # noqa: E402
from kdjax.train import state as state_lib  # noqa: E402
from kdjax.train.optim import make_optimizer  # noqa: E402
from kdjax.train.step import make_steps  # noqa: E402

PAIR = "resnet32x4-resnet8x4"
N_DATA = 50000
KD = dict(weight=0.9, temperature=4.0)

# The library's presets (kdjax.methods.preset, as configs/ use them), with the per-pair
# hyper-parameters of the resnet32x4 -> resnet8x4 cells of configs/cifar100/{dkd,ttm,wttm,itrd}.py.
PRESET_ARGS = {
  "dkd": dict(beta=8.0),
  "ttm": dict(gamma=0.1, beta=100.0),
  "wttm": dict(gamma=0.1, beta=3.0),
  "itrd": dict(alpha=1.01, mi_weight=1.0),
}
# Terms without a preset (calibration study's ranking losses).
EXTRA = {"listmle": dict(weight=1.0), "pairwise_ranking": dict(weight=1.0)}


def _preset_terms(name):
  recipe = preset(name, **PRESET_ARGS.get(name, {}))
  terms = {k: dict(v) for k, v in recipe["terms"].items() if k != "kd"}
  # AB / FSP: the term lives in the init stage only (the main stage is CE alone).
  return terms or {k: dict(v) for k, v in recipe.get("init", {}).get("terms", {}).items()}


def method_terms(name):
  """``{term key: term dict}`` of the method (without the KD term added below)."""
  if name == "kd":
    return {}
  if name in EXTRA:
    return {name: dict(EXTRA[name])}
  if name == "wttm_crd":
    return {**_preset_terms("wttm"), **_preset_terms("crd")}
  if name not in preset_names():
    raise ValueError(f"no preset {name!r}")
  return _preset_terms(name)


def setup(name, batch):
  t_mod = models.get("resnet32x4", num_classes=100)
  s_mod = models.get("resnet8x4", num_classes=100)
  x0 = jnp.zeros((1, 32, 32, 3))
  tv = t_mod.init(jax.random.PRNGKey(1), x0)
  terms = dict(kd=dict(KD), **method_terms(name))
  method = build_method(dict(name=name, ce_weight=0.1, terms=terms))
  tx, _ = make_optimizer(base_config().optim, steps_per_epoch=782)
  built = state_lib.init_train_state(
    s_mod, (t_mod, tv), method, x0, jax.random.PRNGKey(0), tx=tx, num_examples=N_DATA
  )
  fns = make_steps(
    student=s_mod,
    method=built.method,
    tx=tx,
    teacher=t_mod,
    connectors=built.connectors,
    train_transform=lambda im, r: im,
    eval_transform=lambda im: im,
    emit_norms=False,
    steps_per_epoch=782,
  )
  rs = np.random.RandomState(0)
  b = {
    "image": jnp.asarray(rs.randn(batch, 32, 32, 3).astype(np.float32)),
    "label": jnp.asarray(rs.randint(0, 100, batch).astype(np.int32)),
    "index": jnp.asarray(rs.choice(N_DATA, batch, replace=False).astype(np.int32)),
  }
  return fns, built.state, tv, b, models.count_params(built.params["connectors"])


class Runner:
  """One method's compiled step, its (donated) state and inputs."""

  def __init__(self, name, batch):
    fns, self.state, self.tv, self.b, self.n_conn = setup(name, batch)
    t0 = time.perf_counter()
    self.compiled = fns.train_batch.lower(self.state, self.b, self.tv).compile()
    self.compile_s = time.perf_counter() - t0
    self.time(2)  # warm-up

  def time(self, steps):
    t0 = time.perf_counter()
    for _ in range(steps):
      self.state, self.m = self.compiled(self.state, self.b, self.tv)
    jax.block_until_ready(self.m)
    return (time.perf_counter() - t0) / steps


def bench(name, batch, steps, repeats, kd=None):
  """Median step time of ``name``; with ``kd`` (the KD Runner) every repeat also times KD right
  before the method, and the added cost is the median of the per-repeat ratios (paired, so slow
  drifts of the machine's load cancel)."""
  r = Runner(name, batch)
  times, ratios = [], []
  for _ in range(repeats):
    t_kd = kd.time(steps) if kd is not None else None
    times.append(r.time(steps))
    if t_kd is not None:
      ratios.append(times[-1] / t_kd)
  # Repeating one batch with random weights can diverge (timing is unaffected): flag it.
  out = dict(
    method=name,
    step_s=statistics.median(times),
    compile_s=r.compile_s,
    connector_params=r.n_conn,
    finite=bool(np.isfinite(float(r.m["loss"]))),
    ratio=statistics.median(ratios) if ratios else 1.0,
  )
  return out, r


DEFAULT = (
  "kd,fitnet,at,sp,cc,vid,rkd,pkt,ab,ft,fsp,nst,crd,dkd,dist,ttm,wttm,listmle,"
  "pairwise_ranking,wttm_crd,itrd,sskd"
)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--methods", default=DEFAULT)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--steps", type=int, default=2)
  ap.add_argument("--repeats", type=int, default=3)
  a = ap.parse_args()
  names = a.methods.split(",")
  if names[0] != "kd":
    names = ["kd"] + [n for n in names if n != "kd"]
  rows, kd_runner = [], None
  for n in names:
    try:
      row, runner = bench(n, a.batch, a.steps, a.repeats, kd=kd_runner)
      rows.append(row)
      if n == "kd":
        kd_runner = runner
      else:
        del runner
    except (ValueError, KeyError) as e:  # e.g. a term not registered in this checkout
      rows.append(dict(method=n, error=str(e).splitlines()[0][:120]))
    r = rows[-1]
    print(
      f"  {n:<18} " + (f"{1e3 * r['step_s']:8.0f} ms" if "step_s" in r else r["error"]), flush=True
    )
  kd = rows[0]["step_s"]
  print(
    f"\nMethod cost over plain KD: resnet32x4 -> resnet8x4, batch {a.batch}, "
    f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cores), "
    f"median of {a.repeats} x {a.steps} steps; 'added' = median over repeats of the method's "
    "step / the KD step timed just before it"
  )
  print(
    "| method (0.1 CE + 0.9 KD + term) | step (ms) | added over KD (ms) | added (%) | "
    "img/s | connector params | compile (s) |"
  )
  print("|---|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    if "error" in r:
      print(f"| {r['method']} | – | – | – | – | – | {r['error']} |")
      continue
    d = (r["ratio"] - 1.0) * kd
    print(
      f"| {r['method']} | {1e3 * r['step_s']:.0f} | {1e3 * d:+.0f} | "
      f"{100 * (r['ratio'] - 1.0):+.1f} | "
      f"{a.batch / r['step_s']:.1f} | {r['connector_params']:,} | {r['compile_s']:.1f} |"
      + ("" if r["finite"] else " (loss diverged on the repeated batch)")
    )
  print(json.dumps(rows))


if __name__ == "__main__":
  main()
