"""Standard vs SFTN teacher on Fashion-MNIST through the public train loop (issue 13, item 4).

  nice -n 5 .venv/bin/python tools/evidence/sftn_fmnist.py \
      --limit 2000 --epochs 4 --seeds 0 1 --variants standard kdjax [more variants]

Every run is ``kdjax.train.loop.train_and_evaluate`` on a config of the repository:

* ``standard``: ``configs/quickstart.py``'s resnet20 teacher recipe (SGD 0.9, wd 5e-4, lr 0.1
  cosine, batch 128, crop 2 + flip) on the first ``--limit`` training images for ``--epochs``;
* ``kdjax`` etc.: ``configs/sftn.py:fmnist:resnet20-resnet8`` on exactly that schedule, with the
  variant's options of :data:`VARIANTS` (the config keys of ``configs/sftn.py``).

Reports the SFTN run's teacher top-1 (the run evaluates the teacher's logits) on the first
``--test_limit`` test images, per seed and as mean ± std, into ``--out`` (JSON). Runs are kept
under ``runs/sftn_fmnist/`` and reused when finished.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from configs import quickstart as qs  # noqa: E402
from configs import sftn as sftn_cfg  # noqa: E402

# variant -> (model_kwargs overrides, method.terms.sftn overrides)
VARIANTS = {
  "standard": None,
  "kdjax": ({}, {}),
  "kimyuji": ({"detach_branch_input": True}, {}),
  "no_kl_to_teacher": ({}, {"detach_teacher_logits_in_kl": True}),
}


def config(variant, *, seed, limit, epochs, test_limit):
  base = qs._common("resnet20", epochs=epochs, train_limit=limit)  # pylint: disable=protected-access
  if VARIANTS[variant] is None:
    c = base
  else:
    c = sftn_cfg.get_config("fmnist:resnet20-resnet8")
    c.num_epochs, c.optim.epochs = base.num_epochs, base.optim.epochs
    c.dataset.train_limit = limit
    mk, tk = VARIANTS[variant]
    for k, v in mk.items():
      c.model_kwargs[k] = v
    terms = dict(c.method.terms.sftn)
    terms.update(tk)
    c.method.terms.sftn = terms
  c.seed, c.progress, c.tensorboard = seed, False, False
  c.dataset.eval_limit = test_limit
  c.eval_every_epochs = epochs
  return c


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--limit", type=int, default=2000)
  ap.add_argument("--test_limit", type=int, default=2000)
  ap.add_argument("--epochs", type=int, nargs="+", default=[4])
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  ap.add_argument("--variants", nargs="+", default=["standard", "kdjax"])
  ap.add_argument("--runs", default=os.path.join(ROOT, "runs", "sftn_fmnist"))
  ap.add_argument("--out", default=os.path.join(ROOT, "docs", "sftn_fmnist", "results.json"))
  a = ap.parse_args()
  from kdjax.train.loop import train_and_evaluate

  res = {}
  if os.path.exists(a.out):
    with open(a.out) as fh:
      res = json.load(fh)
  for epochs in a.epochs:
    for seed in a.seeds:
      for v in a.variants:
        key = f"{v}/e{epochs}/n{a.limit}/s{seed}"
        if key in res:
          continue
        wd = os.path.join(a.runs, key.replace("/", "_"))
        c = config(v, seed=seed, limit=a.limit, epochs=epochs, test_limit=a.test_limit)
        s = train_and_evaluate(c, wd)
        res[key] = float(s["last_top1"])
        print(f"[sftn-fmnist] {key}: teacher top-1 {res[key]:.2f}", flush=True)
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out, "w") as fh:
          json.dump(res, fh, indent=1, sort_keys=True)
  groups = {}
  for k, v in res.items():
    groups.setdefault(k.rsplit("/", 1)[0], []).append(v)
  for g, vals in sorted(groups.items()):
    print(f"{g}: {np.mean(vals):.2f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0:.2f} {vals}")


if __name__ == "__main__":
  main()
