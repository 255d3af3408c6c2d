r"""Table family: the calibration study (Fan et al., "Revisit the Essence of Distilling Knowledge
through Calibration", ICML 2024): a teacher population x {KL, ranking losses} into one student.

Cells (``cifar100``): every teacher of ``configs/cifar100/calibration_population.py`` (capacity
x {the 100-epoch schedule with the decay after epoch 50, the full schedule}: ``t_<arch>_<sched>``),
the student alone, and for every teacher and every loss of that config (``kl`` at τ 1.8 and the
ranking-loss **candidates** ``listmle``, ``pairwise_ranking``, ``pld``, ``spearman``,
``kendall``; CE weight 0, α 1) one student cell ``<loss>@<teacher cell>``. The teachers' ECE is
measured afterwards by ``launch/calibration_study.py`` on the same run dirs. Published numbers:
NONE (methods.md §2.5: no per-teacher number is transcribed; the ranking losses are candidates).

``fmnist``: a population whose accuracy and calibration are not confounded: resnet14 plain,
with label smoothing 0.1 and with mixup (α 0.2) (about the same accuracy, different calibration),
and resnet8 (capacity), all on ``configs/fmnist_converge.py``'s teacher schedule; plus the plain
teacher temperature-scaled by 0.5 and 2 (``teacher.temperature``: the same accuracy, KL only).

  python -m launch.table --config configs/tables/calibration.py:cifar100 --out runs/tables/calib
  python -m launch.table --config configs/tables/calibration.py:fmnist --out runs/tables/calib_fm

``ARG``: ``cifar100[,STUDENT]`` (default resnet8x4), ``fmnist`` or ``fmnist,tiny``.
"""

from configs.cifar100 import calibration_population as pop
from configs.tables import common

FMNIST_TEACHERS = {  # cell -> (model, label smoothing, mixup alpha)
  "t_plain": ("resnet14", 0.0, 0.0),
  "t_ls": ("resnet14", 0.1, 0.0),
  "t_mixup": ("resnet14", 0.0, 0.2),
  "t_small": ("resnet8", 0.0, 0.0),
}
FMNIST_TEMPERATURES = (0.5, 2.0)


def get_config(arg: str = "cifar100"):
  students = {s: s for s in pop.STUDENTS}
  setting, student, tiny = common.parse(arg, students, "resnet8x4", "tables/calibration")
  cells = {}
  if setting == "cifar100":
    for arch in pop.CAPACITY:
      for sched in pop.SCHEDULES:
        cells[f"t_{arch}_{sched}"] = common.cell(
          pop.get_config(f"teacher:{arch},{sched}"), label=f"teacher {arch} {sched}", seeds=(0,)
        )
    alone = pop.get_config(f"{student},kl,{pop.CAPACITY[0]},{pop.SCHEDULES[0]}")
    alone.method = pop.teacher_config(pop.CAPACITY[0], pop.SCHEDULES[0]).method  # CE alone
    alone.teacher.workdir = ""
    cells["student"] = common.cell(alone, label=f"student {student} alone")
    for arch in pop.CAPACITY:
      for sched in pop.SCHEDULES:
        for loss in pop.LOSSES:
          cells[f"{loss}@t_{arch}_{sched}"] = common.cell(
            pop.get_config(f"{student},{loss},{arch},{sched}"),
            label=f"{loss} from {arch} {sched}",
            teacher_cell=f"t_{arch}_{sched}",
          )
    return common.family(
      f"calibration_{student}", f"CIFAR-100 calibration population -> {student}", cells
    )
  for name, (model, ls, mixup) in FMNIST_TEACHERS.items():
    t = common.fmnist_teacher_run(model)
    t.method.label_smoothing = ls
    t.dataset.mixup_alpha = mixup
    cells[name] = common.cell(t, label=f"teacher {model} ls {ls} mixup {mixup}", seeds=(0,))
  cells["student"] = common.fmnist_student_cell()
  for name in FMNIST_TEACHERS:
    for loss in pop.LOSSES:
      src = pop.get_config(f"resnet8x4,{loss},resnet110,short100")
      cells[f"{loss}@{name}"] = common.fmnist_distill_cell(src, f"{loss} from {name}", name)
  for temp in FMNIST_TEMPERATURES:
    src = pop.get_config("resnet8x4,kl,resnet110,short100")
    c = common.fmnist_distill_cell(src, f"kl from t_plain / T {temp}", "t_plain")
    c.run.teacher.temperature = temp
    cells[f"kl@t_plain_T{temp:g}".replace(".", "p")] = c
  return common.family("calibration_fmnist", common.FMNIST_SETTING, cells, tiny=tiny)
