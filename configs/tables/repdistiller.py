r"""Table family: RepDistiller's 13 methods (Tian et al., ICLR 2020, Table 1/2) on one pair.

Cells: the teacher, the student alone, then KD, FitNet, AT, SP, CC, VID, RKD, PKT, AB, FT, FSP,
NST, CRD (``configs/cifar100/repdistiller.py``: ``r·CE + a·KD + b·L_method`` with RepDistiller's
weights and init stages; methods N/A for the pair, FSP on most cross-architecture pairs, are left
out). Published numbers: ``configs/cifar100/repdistiller.py``'s ``PAIRS`` (RepDistiller README,
last-epoch top-1 of one run).

  python -m launch.table --config configs/tables/repdistiller.py:cifar100 \
      --out runs/tables/repdistiller_resnet32x4-resnet8x4          # GPU
  python -m launch.table --config configs/tables/repdistiller.py:cifar100,vgg13-vgg8 \
      --out runs/tables/repdistiller_vgg13-vgg8
  python -m launch.table --config configs/tables/repdistiller.py:fmnist \
      --out runs/tables/repdistiller_fmnist                        # CPU, hours

``ARG``: ``cifar100[,PAIR]`` (``PAIR`` a key of ``configs/cifar100/repdistiller.py``'s ``PAIRS``,
default resnet32x4-resnet8x4), ``fmnist`` or ``fmnist,tiny`` (``configs/tables/common.py``).
"""

from configs.cifar100 import repdistiller as rd
from configs.tables import common

SOURCE = "configs/cifar100/repdistiller.py PAIRS (RepDistiller README)"


def methods(pair: str):
  """The methods RepDistiller runs on ``pair`` (its README's non-N/A cells), in table order."""
  return [m for m in rd.METHOD_ORDER if rd.PAIRS[pair][4][m] is not None]


def get_config(arg: str = "cifar100"):
  setting, pair, tiny = common.parse(arg, rd.PAIRS, "resnet32x4-resnet8x4", "tables/repdistiller")
  teacher, student, t_pub, s_pub, published = rd.PAIRS[pair]
  cells = {}
  if setting == "cifar100":
    cells["teacher"] = common.cifar_teacher_cell(teacher)
    cells["teacher"].published = t_pub
    cells["student"] = common.cifar_student_cell(student)
    cells["student"].published = s_pub
    for m in methods(pair):
      cells[m] = common.cell(
        rd.get_config(f"{m}:{pair}"),
        label=m,
        teacher_cell="teacher",
        published=published[m],
        source=SOURCE,
      )
    return common.family(
      f"repdistiller_{pair}",
      f"CIFAR-100 {pair}, RepDistiller's recipe (240 epochs, configs/cifar100/repdistiller.py)",
      cells,
    )
  cells["teacher"] = common.fmnist_teacher_cell()
  cells["student"] = common.fmnist_student_cell()
  for m in methods("resnet32x4-resnet8x4"):  # same-architecture pair: every method
    cells[m] = common.fmnist_distill_cell(rd.get_config(f"{m}:resnet32x4-resnet8x4"), m)
  return common.family("repdistiller_fmnist", common.FMNIST_SETTING, cells, tiny=tiny)
