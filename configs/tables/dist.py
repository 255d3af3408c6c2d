r"""Table family: DIST vs KD (Huang et al., "Knowledge Distillation from A Stronger Teacher",
NeurIPS 2022).

Cells: the teacher, the student alone, KD (RepDistiller's) and DIST (CE + 2·(β inter + γ intra),
T 4: ``configs/cifar100/dist.py``). Published numbers: DIST from ``configs/cifar100/dist.py``'s
``PAIRS`` (as the TTM paper prints them), KD from RepDistiller's README.

  python -m launch.table --config configs/tables/dist.py:cifar100 --out runs/tables/dist   # GPU
  python -m launch.table --config configs/tables/dist.py:fmnist --out runs/tables/dist_fmnist

``ARG``: ``cifar100[,PAIR]`` (a key of ``configs/cifar100/dist.py``'s ``PAIRS``), ``fmnist`` or
``fmnist,tiny``.
"""

from configs.cifar100 import dist
from configs.tables import baselines, common


def get_config(arg: str = "cifar100"):
  setting, pair, tiny = common.parse(arg, dist.PAIRS, "resnet32x4-resnet8x4", "tables/dist")
  extra = {"dist": (dist.get_config(pair), dist.PAIRS[pair][2], "configs/cifar100/dist.py PAIRS")}
  return baselines.logit_family("dist", setting, pair, tiny, extra)
