"""All evidence runs of one seed on offline Fashion-MNIST (issues 5 and 6), resumable.

  .venv/bin/python tools/evidence/fmnist_seed.py --seed 0 [--phases all|ojha|issue5]
  .venv/bin/python tools/evidence/fmnist_aggregate.py      # tables + plots into docs/

Runs under ``runs/evidence/seed<S>/`` (every finished run is reused when launched again):

* ``teacher``: resnet20, CE only, a kept checkpoint every epoch (the standard teacher, and the
  checkpoints of Wang et al. 2022);
* ``independent``: resnet8, CE only; ``kd`` (0.1 CE + 0.9 KD, T = 4), ``hint`` (FitNet on the last
  stage, weight 2) and ``crd`` (weight 0.1, 32 negatives) students of the final teacher, then the
  what-gets-distilled suite (Ojha et al. 2023) in ``analysis/``;
* ``sftn_teacher``: SFTN teacher (resnet20 with resnet8 branches, Park et al. 2021) on the
  teacher's exact schedule, exported as a plain teacher; ``kd_sftn``: the ``kd`` student recipe
  distilled from it;
* ``kd_epoch<N>`` (intermediate checkpoints), ``kd_snapshot`` (logit mean of every kept
  checkpoint) and ``selection/`` (Algorithm 1 MI probes; the selected epoch's student is the
  matching ``kd_epoch<N>`` or ``kd`` run);
* ``fan/``: the Fan et al. (2024) recipe (pure KL, tau = 1.8, CE excluded) from every teacher
  (epoch 1, epoch 2, final, SFTN) for the teacher-ECE vs student-accuracy study.

Students use seed + 100 so that all students of one seed start from the same initialisation.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from configs import quickstart as qs  # noqa: E402
from configs import sftn as sftn_cfg  # noqa: E402

LIMIT = 10000  # training images
TEACHER_EPOCHS = 3
STUDENT_EPOCHS = 2


def _cfg(model, epochs, seed):
  c = qs._common(model, epochs=epochs, train_limit=LIMIT)  # pylint: disable=protected-access
  c.seed, c.progress, c.tensorboard = seed, False, False
  return c


def teacher_cfg(seed):
  c = _cfg("resnet20", TEACHER_EPOCHS, seed)
  c.keep_every_epochs = 1
  return c


def student_cfg(seed, kind, teacher=""):
  c = _cfg("resnet8", STUDENT_EPOCHS, seed + 100)
  c.teacher.workdir = teacher
  if kind == "independent":
    c.teacher.workdir = ""
  elif kind == "kd":
    c.method.name, c.method.ce_weight = "kd", 0.1
    c.method.terms.kd = dict(weight=0.9, temperature=4.0)
  elif kind == "hint":
    c.method.name, c.method.ce_weight = "hint", 1.0
    c.method.terms.fitnet = dict(weight=2.0)
  elif kind == "crd":
    c.method.name, c.method.ce_weight = "crd", 1.0
    c.method.terms.crd = dict(weight=0.1, nce_t=0.1, nce_k=32)
  elif kind == "sskd":  # Xu et al. 2020 (configs/cifar100/sskd.py's loss; 1 head epoch)
    from configs.cifar100 import sskd

    sskd.sskd_method(c, head_epochs=1, head_lr=0.05, head_milestones=())
  elif kind == "fan":  # Fan et al. 2024: tau = 1.8, CE excluded (alpha = 1)
    c.method.name, c.method.ce_weight = "kl_tau1.8", 0.0
    c.method.terms.kl = dict(weight=1.0, teacher_temperature=1.8, student_temperature=1.8)
  else:
    raise ValueError(kind)
  return c


def run(cfg, workdir):
  """Trains (or reuses the finished run in) ``workdir``; returns its summary without state."""
  from kdjax.train.loop import train_and_evaluate

  path = os.path.join(workdir, "summary.json")
  if os.path.exists(path):
    with open(path) as fh:
      s = json.load(fh)
    if s.get("finished") and s.get("last_top1") is not None:
      return s
  t = time.time()
  s = train_and_evaluate(cfg, workdir)
  s.pop("state", None)
  print(f"[evidence] {workdir}: top-1 {s['last_top1']:.2f} ({time.time() - t:.0f}s)", flush=True)
  return s


def main():
  global LIMIT, TEACHER_EPOCHS, STUDENT_EPOCHS  # pylint: disable=global-statement
  ap = argparse.ArgumentParser()
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default=os.path.join(ROOT, "runs", "evidence"))
  ap.add_argument(
    "--phases", default="all", help="all | ojha | issue5 | zoo (comma list; all = ojha + issue5)"
  )
  ap.add_argument("--num_examples", type=int, default=500, help="analysis probe images")
  ap.add_argument("--limit", type=int, default=LIMIT, help="training images (smoke runs: less)")
  ap.add_argument("--teacher_epochs", type=int, default=TEACHER_EPOCHS)
  ap.add_argument("--student_epochs", type=int, default=STUDENT_EPOCHS)
  a = ap.parse_args()
  LIMIT, TEACHER_EPOCHS, STUDENT_EPOCHS = a.limit, a.teacher_epochs, a.student_epochs
  phases = set(a.phases.split(","))
  if "all" in phases:
    phases = {"ojha", "issue5"}
  out = os.path.join(a.out, f"seed{a.seed}")
  os.makedirs(out, exist_ok=True)
  d = lambda *p: os.path.join(out, *p)
  s = a.seed
  teacher = d("teacher")
  run(teacher_cfg(s), teacher)
  run(student_cfg(s, "independent"), d("independent"))
  run(student_cfg(s, "kd", teacher), d("kd"))

  if "issue5" in phases:
    from kdjax.teachers.selection import select_teacher
    from kdjax.teachers.sftn import export_teacher

    # SFTN vs standard teacher -> the same KD student recipe.
    sc = sftn_cfg.get_config("fmnist:resnet20-resnet8")
    ref = teacher_cfg(s)
    sc.seed, sc.progress, sc.tensorboard = s, False, False
    sc.num_epochs, sc.optim.epochs = ref.num_epochs, ref.optim.epochs
    sc.dataset.train_limit = ref.dataset.train_limit
    run(sc, d("sftn"))
    if not os.path.isdir(d("sftn_teacher", "kept")):
      export_teacher(d("sftn"), d("sftn_teacher"))
    run(student_cfg(s, "kd", d("sftn_teacher")), d("kd_sftn"))
    # Checkpoint teachers: intermediate, snapshot ensemble, selected.
    for e in range(1, TEACHER_EPOCHS):
      c = student_cfg(s, "kd", teacher)
      c.teacher.which = f"epoch:{e}"
      run(c, d(f"kd_epoch{e}"))
    c = student_cfg(s, "kd")
    c.teacher.members = tuple(f"{teacher}@epoch:{e}" for e in range(1, TEACHER_EPOCHS + 1))
    run(c, d("kd_snapshot"))
    if not os.path.exists(d("selection", "selection.json")):
      select_teacher(teacher, num_examples=2000, out_dir=d("selection"), seed=s)
    with open(d("selection", "selection.json")) as fh:
      sel_epoch = json.load(fh)["selected"]["epoch"]
    with open(d("selected_epoch.txt"), "w") as fh:
      fh.write(f"{sel_epoch}\n")

  if "ojha" in phases:
    run(student_cfg(s, "hint", teacher), d("hint"))
    run(student_cfg(s, "crd", teacher), d("crd"))
    if not os.path.exists(d("analysis", "report.json")):
      from kdjax import analysis

      c = analysis.base_config()
      c.teacher, c.independent, c.out_dir = teacher, d("independent"), d("analysis")
      c.distilled = ",".join(f"{k}={d(k)}" for k in ("kd", "hint", "crd"))
      c.num_examples, c.seed, c.progress = a.num_examples, s, False
      c.probes.adversarial.eps_list = (0.0, 2 / 255, 4 / 255, 8 / 255)
      c.probes.adversarial.pgd_steps = 5
      c.probes.adversarial.pgd_step_frac = 0.0
      analysis.analyze(c)

  if "issue5" in phases:
    for name, spec in ((f"epoch{e}", (teacher, f"epoch:{e}")) for e in range(1, TEACHER_EPOCHS)):
      c = student_cfg(s, "fan", spec[0])
      c.teacher.which = spec[1]
      run(c, d("fan", name))
    run(student_cfg(s, "fan", teacher), d("fan", "final"))
    run(student_cfg(s, "fan", d("sftn_teacher")), d("fan", "sftn"))
  if "zoo" in phases:  # more of the zoo on the same teacher and recipe
    run(student_cfg(s, "sskd", teacher), d("sskd"))
  print(f"[evidence] seed {s} done: {sorted(phases)}", flush=True)


if __name__ == "__main__":
  main()
