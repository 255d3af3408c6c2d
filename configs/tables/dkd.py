r"""Table family: DKD vs KD (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022; mdistiller).

Cells: the teacher, the student alone, KD (RepDistiller's 0.1 CE + 0.9 KD, T 4:
``configs/cifar100/kd.py``) and DKD (CE + warm-up(20)·(α TCKD + β NCKD), T 4:
``configs/cifar100/dkd.py``). Published numbers: DKD from ``configs/cifar100/dkd.py``'s
``PAIRS`` (mdistiller README), KD from ``configs/cifar100/repdistiller.py``'s ``PAIRS``
(RepDistiller README, the KD row mdistiller reprints).

  python -m launch.table --config configs/tables/dkd.py:cifar100 --out runs/tables/dkd   # GPU
  python -m launch.table --config configs/tables/dkd.py:fmnist --out runs/tables/dkd_fmnist

``ARG``: ``cifar100[,PAIR]`` (``PAIR`` a key of ``configs/cifar100/dkd.py``'s ``PAIRS``, default
resnet32x4-resnet8x4), ``fmnist`` or ``fmnist,tiny`` (``configs/tables/common.py``).
"""

from configs.cifar100 import dkd
from configs.tables import baselines, common


def get_config(arg: str = "cifar100"):
  setting, pair, tiny = common.parse(arg, dkd.PAIRS, "resnet32x4-resnet8x4", "tables/dkd")
  extra = {"dkd": (dkd.get_config(pair), dkd.PAIRS[pair][3], "configs/cifar100/dkd.py PAIRS")}
  return baselines.logit_family("dkd", setting, pair, tiny, extra)
