r"""Table family: SFTN (Park et al., "Learning Student-Friendly Teacher Networks for Knowledge
Distillation", NeurIPS 2021, Tables 1/2): standard vs student-friendly teacher x distillers.

Cells: the standard teacher (``configs/cifar100/teacher.py``), the SFTN teacher (stage 1,
``configs/cifar100/sftn_stage1.py``: the teacher with the student's branches; the runner exports
its teacher, ``teacher_export='sftn'``), the student alone, then for every stage-2 distiller of
``configs/cifar100/sftn_stage2.py`` (KD, FitNet, AT, SP, VID, RKD, PKT, AB, FT, CRD, OH; each
jointly with KD as the paper does, where the pair supports it) one cell from the standard teacher
(``<method>_standard``) and one from the SFTN teacher (``<method>_sftn``). Published numbers: NONE
per cell (SFTN Tables 1/2 per pair are not transcribed, methods.md §4.4; see
``configs/cifar100/sftn_stage2.py``).

  python -m launch.table --config configs/tables/sftn.py:cifar100 --out runs/tables/sftn   # GPU
  python -m launch.table --config configs/tables/sftn.py:fmnist --out runs/tables/sftn_fmnist

``ARG``: ``cifar100[,PAIR]`` (a key of ``configs/sftn.py``'s ``PAIRS``), ``fmnist`` (SFTN
resnet14 teacher with resnet8 branches on ``configs/fmnist_converge.py``'s teacher schedule) or
``fmnist,tiny``.
"""

from configs import sftn
from configs.cifar100 import sftn_stage1, sftn_stage2
from configs.tables import common

FMNIST_METHODS = ("kd", "fitnet", "at", "crd")  # the CPU variant: KD and three feature methods


def get_config(arg: str = "cifar100"):
  setting, pair, tiny = common.parse(arg, sftn.PAIRS, "resnet32x4-resnet8x4", "tables/sftn")
  teacher, student = sftn.PAIRS[pair]
  cells = {}
  if setting == "cifar100":
    methods = [m for m in sftn_stage2.METHODS if not sftn_stage2._na(m, pair)]
    cells["teacher"] = common.cifar_teacher_cell(teacher, "standard teacher")
    cells["sftn_teacher"] = common.cell(
      sftn_stage1.get_config(pair), label=f"SFTN teacher {teacher}", seeds=(0,)
    )
    cells["student"] = common.cifar_student_cell(student)
    for m in methods:
      cfg = sftn_stage2.get_config(f"{m}:{pair}")
      cells[f"{m}_standard"] = common.cell(
        cfg, label=f"{m} (standard teacher)", teacher_cell="teacher"
      )
      cells[f"{m}_sftn"] = common.cell(
        cfg, label=f"{m} (SFTN teacher)", teacher_cell="sftn_teacher", teacher_export="sftn"
      )
    return common.family(
      f"sftn_{pair}", f"CIFAR-100 {pair}: standard vs SFTN teacher, stage-2 distillers + KD", cells
    )
  t_run = common.fmnist_teacher_run()
  cells["teacher"] = common.cell(t_run, label="standard teacher", seeds=(0,))
  s_run = sftn._sftn(common.fmnist_teacher_run(), common.FMNIST_TEACHER, common.FMNIST_STUDENT)
  cells["sftn_teacher"] = common.cell(s_run, label="SFTN teacher", seeds=(0,))
  cells["student"] = common.fmnist_student_cell()
  for m in FMNIST_METHODS:
    src = sftn_stage2.get_config(f"{m}:resnet32x4-resnet8x4")
    cells[f"{m}_standard"] = common.fmnist_distill_cell(src, f"{m} (standard teacher)")
    cells[f"{m}_sftn"] = common.fmnist_distill_cell(
      src, f"{m} (SFTN teacher)", "sftn_teacher", teacher_export="sftn"
    )
  return common.family("sftn_fmnist", common.FMNIST_SETTING, cells, tiny=tiny)
