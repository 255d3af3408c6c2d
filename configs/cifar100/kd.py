r"""Hinton KD on CIFAR-100 for the RepDistiller pairs.

Citation: Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network" (2015); numbers
and recipe from Tian et al., "Contrastive Representation Distillation", ICLR 2020
(HobbitLong/RepDistiller ``train_student.py --distill kd -r 0.1 -a 0.9 -b 0``): loss
``0.1 * CE + 0.9 * T^2 KL(p_t^T || p_s^T)``, T = 4, SGD 0.9, wd 5e-4, lr 0.05 x0.1 at 150/180/210,
240 epochs, batch 64. RepDistiller reports the LAST-epoch top-1 (kdjax records last and best).

Launch (``PAIR`` is one of the keys of ``PAIRS``)::

  python -m launch.distill --config configs/cifar100/kd.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/kd_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

Published KD top-1 (RepDistiller README, CIFAR-100):
  resnet56-resnet20 70.66, resnet110-resnet20 70.67, resnet110-resnet32 73.08,
  resnet32x4-resnet8x4 73.33, wrn_40_2-wrn_16_2 74.92, wrn_40_2-wrn_40_1 73.54.
Runtime: 240 x 782 steps; ~21 min per epoch for r32x4->r8x4 on the 2-core CPU: use a GPU.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset

# pair -> (teacher, student, published KD top-1, published teacher, published student)
PAIRS = {
  "resnet56-resnet20": ("resnet56", "resnet20", 70.66, 72.34, 69.06),
  "resnet110-resnet20": ("resnet110", "resnet20", 70.67, 74.31, 69.06),
  "resnet110-resnet32": ("resnet110", "resnet32", 73.08, 74.31, 71.14),
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 73.33, 79.42, 72.50),
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2", 74.92, 75.61, 73.26),
  "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1", 73.54, 75.61, 71.98),
}


def get_config(pair: str = "resnet32x4-resnet8x4"):
  teacher, student, _, _, _ = common.parse_pair(pair, PAIRS)
  c = common.recipe(student, teacher)  # every student here trains at lr 0.05
  apply_preset(c.method, "kd")  # 0.1 CE + 0.9 T^2 KL, T = 4
  return c
