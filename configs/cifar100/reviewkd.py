r"""ReviewKD (knowledge review: ABF fusion + hierarchical context loss) on CIFAR-100.

Citation: Chen, Liu, Zhao, Jia. "Distilling Knowledge via Knowledge Review", CVPR 2021
(dvlab-research/ReviewKD; recipe as megvii-research/mdistiller ``configs/cifar100/reviewkd.yaml``
and ``mdistiller/distillers/ReviewKD.py``). Term ``reviewkd`` (:mod:`kdjax.methods.reviewkd`,
loss :func:`kdjax.losses.hcl`)::

  L = 1.0 · CE + w · min(epoch / 20, 1) · HCL(ABF(student stage1..N, pooled), teacher
      preact_stage1..N, pooled)

Per-pair weight ``w``: dvlab-research/ReviewKD ``CIFAR-100/script/reviewKD.sh``
(``--kd-loss-weight``); mdistiller's only CIFAR-100 yaml (resnet32x4 → resnet8x4) has the same 5.0.
Channels and sizes (mdistiller's SHAPES / OUT_SHAPES / IN_CHANNELS / OUT_CHANNELS) follow from the
pair's taps. Recipe (mdistiller): batch 64, SGD 0.9, wd 5e-4, 240 epochs, lr ×0.1 at 150/180/210,
lr 0.05, or 0.01 when the student is MobileNetV2/ShuffleV1/ShuffleV2 (the dvlab script's lr 0.1 /
0.02 at batch 128 is the same lr per example); warm-up 20 epochs, epoch counted from 1 (the dvlab
script counts from 0).

Launch (``PAIR`` is a key of ``PAIRS``)::

  python -m launch.distill --config configs/cifar100/reviewkd.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/reviewkd_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

Published ReviewKD top-1 (paper, Tables 1-2; checked against the tables reprinted in
WangYZ1608/Knowledge-Distillation-via-ND ``CIFAR/README.md`` and, for resnet32x4 → resnet8x4 and
vgg13 → vgg8, Papers-with-Code's extraction of the paper):

  pair                     w     ReviewKD   source of w
  resnet56-resnet20        0.6   71.89      dvlab script
  resnet110-resnet32       1.0   --         dvlab script (paper value not cross-checked here)
  wrn_40_2-wrn_16_2        5.0   --         dvlab script (paper value not cross-checked here)
  wrn_40_2-wrn_40_1        5.0   75.09      dvlab script
  resnet32x4-resnet8x4     5.0   75.63      dvlab script = mdistiller yaml
  wrn_40_2-ShuffleV1       5.0   --         dvlab script (paper value not cross-checked here)
  resnet32x4-ShuffleV1     5.0   77.45      dvlab script
  resnet32x4-ShuffleV2     8.0   77.78      dvlab script
  vgg13-vgg8               5.0   74.84      no official script: mdistiller's 5.0 (our choice)
  ResNet50-MobileNetV2     5.0   69.89      no official script: mdistiller's 5.0 (our choice)

"--": the paper reports these pairs too; transcribe the number from its Table 1/2 before citing.
Runtime: 240 × 782 steps per run; use a GPU.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset

LOW_LR = common.LOW_LR

# pair -> (teacher, student, HCL weight, published ReviewKD top-1 or None)
PAIRS = {
  "resnet56-resnet20": ("resnet56", "resnet20", 0.6, 71.89),
  "resnet110-resnet32": ("resnet110", "resnet32", 1.0, None),
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2", 5.0, None),
  "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1", 5.0, 75.09),
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 5.0, 75.63),
  "wrn_40_2-ShuffleV1": ("wrn_40_2", "ShuffleV1", 5.0, None),
  "resnet32x4-ShuffleV1": ("resnet32x4", "ShuffleV1", 5.0, 77.45),
  "resnet32x4-ShuffleV2": ("resnet32x4", "ShuffleV2", 8.0, 77.78),
  "vgg13-vgg8": ("vgg13", "vgg8", 5.0, 74.84),
  "ResNet50-MobileNetV2": ("ResNet50", "MobileNetV2", 5.0, 69.89),
}


def get_config(pair: str = "resnet32x4-resnet8x4"):
  teacher, student, weight, _ = common.parse_pair(pair, PAIRS)
  c = common.recipe(student, teacher)
  apply_preset(c.method, "reviewkd", weight=weight)  # CE 1 + weight · warm-up(20) · HCL
  return c
