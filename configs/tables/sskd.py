r"""Table family: SSKD vs KD (Xu et al., "Knowledge Distillation Meets Self-Supervision", ECCV 2020).

Cells: the teacher, the student alone, KD (RepDistiller's) and SSKD (``configs/cifar100/sskd.py``:
the 60-epoch teacher-head init stage, then the student on 4 rotated views). Published numbers:
SSKD from ``configs/cifar100/sskd.py``'s ``PAIRS`` (xuguodong03/SSKD README, best epoch; SSKD
trains its own teachers, so its teacher / student columns differ from the RepDistiller numbers
shown for the teacher and student cells here), KD from RepDistiller's README.

  python -m launch.table --config configs/tables/sskd.py:cifar100 --out runs/tables/sskd   # GPU
  python -m launch.table --config configs/tables/sskd.py:fmnist --out runs/tables/sskd_fmnist

``ARG``: ``cifar100[,PAIR]`` (a key of ``configs/cifar100/sskd.py``'s ``PAIRS``), ``fmnist``
(head stage 15 epochs, milestones 8 / 11: SSKD's 60 / 30 / 45 scaled by 60 / 240) or
``fmnist,tiny``.
"""

from configs.cifar100 import sskd
from configs.tables import baselines, common


def get_config(arg: str = "cifar100"):
  setting, pair, tiny = common.parse(arg, sskd.PAIRS, "resnet32x4-resnet8x4", "tables/sskd")
  src = pair if setting == "cifar100" else "resnet32x4-resnet8x4"
  extra = {"sskd": (sskd.get_config(src), sskd.PAIRS[src][2], "configs/cifar100/sskd.py PAIRS")}
  return baselines.logit_family("sskd", setting, pair, tiny, extra)
