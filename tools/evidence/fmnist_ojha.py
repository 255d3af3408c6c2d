"""Evidence run for the what-gets-distilled suite (Ojha et al., NeurIPS 2023) on offline
Fashion-MNIST: a teacher, KD / hint (FitNet) / CRD students and an independent student, then
``launch.analyze``. Writes ``docs/ojha_fmnist/`` (report.md + figures).

  .venv/bin/python tools/evidence/fmnist_ojha.py --out runs/evidence_ojha [--seed 0]

Loss weights follow the paper's MNIST row (methods.md §6.2): KL γ=0.1, α=0.9 (τ=8 in the paper;
kdjax uses τ=4 here), hint γ=1, β=2, CRD γ=1, β=0.1 (τ=0.1, N=32 negatives).
"""
import argparse
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from configs import quickstart as qs  # noqa: E402
from kdjax.train.loop import train_and_evaluate  # noqa: E402


def run_cfg(model, epochs, seed, limit):
  c = qs._common(model, epochs=epochs, train_limit=limit)  # pylint: disable=protected-access
  c.seed = seed
  c.progress = False
  return c


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", default="runs/evidence_ojha")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--limit", type=int, default=10000)
  ap.add_argument("--teacher_epochs", type=int, default=3)
  ap.add_argument("--student_epochs", type=int, default=2)
  ap.add_argument("--num_examples", type=int, default=1000)
  ap.add_argument("--docs", default=os.path.join(ROOT, "docs", "ojha_fmnist"))
  a = ap.parse_args()
  t = os.path.join(a.out, "teacher")
  train_and_evaluate(run_cfg("resnet20", a.teacher_epochs, a.seed, a.limit), t)
  runs = {}
  for name in ("independent", "kd", "hint", "crd"):
    c = run_cfg("resnet8", a.student_epochs, a.seed + 1, a.limit)
    if name != "independent":
      c.teacher.workdir = t
    if name == "kd":
      c.method.name, c.method.ce_weight = "kd", 0.1
      c.method.terms.kd = dict(weight=0.9, temperature=4.0)
    elif name == "hint":
      c.method.name, c.method.ce_weight = "hint", 1.0
      c.method.terms.fitnet = dict(weight=2.0)
    elif name == "crd":
      c.method.name, c.method.ce_weight = "crd", 1.0
      c.method.terms.crd = dict(weight=0.1, nce_t=0.1, nce_k=32)
    runs[name] = os.path.join(a.out, name)
    train_and_evaluate(c, runs[name])
  out = os.path.join(a.out, "report")
  cmd = [sys.executable, "-m", "launch.analyze", "--config", "configs/analysis.py:fmnist",
         "--teacher", t, "--distilled",
         ",".join(f"{k}={runs[k]}" for k in ("kd", "hint", "crd")),
         "--independent", runs["independent"], "--out", out,
         "--num_examples", str(a.num_examples), "--noprogress"]
  subprocess.run(cmd, cwd=ROOT, check=True)
  os.makedirs(a.docs, exist_ok=True)
  for f in os.listdir(out):
    if f.endswith((".md", ".png", ".json")):
      shutil.copy(os.path.join(out, f), os.path.join(a.docs, f))
  print("report in", a.docs)


if __name__ == "__main__":
  main()
