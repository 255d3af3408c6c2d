r"""DKD (decoupled knowledge distillation) on CIFAR-100 for the 11 pairs of mdistiller's table.

Citation: Zhao, Cui, Song, Qiu, Liang. "Decoupled Knowledge Distillation", CVPR 2022
(megvii-research/mdistiller ``mdistiller/distillers/DKD.py``, ``configs/cifar100/dkd/*.yaml``).
Loss ``CE_w·CE + min(epoch / warmup, 1)·(α·TCKD + β·NCKD)`` (epoch counted from 1) with
CE_w 1, α 1, T 4, warm-up 20 epochs and β per pair (2.0 for res56->res20 and res110->res32; 6.0
for vgg13->vgg8, vgg13->MBv2, wrn40-2->wrn16-2, wrn40-2->wrn40-1; 8.0 otherwise), i.e. term
``dkd`` with ``warmup_epochs=20`` (methods.md §7.2, anchors.md §5.3).
Recipe: batch 64, SGD 0.9, wd 5e-4, 240 epochs, lr x0.1 at 150/180/210; lr 0.05, or 0.01 when
the student is MobileNetV2, ShuffleV1 or ShuffleV2 (explicit ``LR: 0.01`` in the yaml files).

mdistiller has no DKD config for resnet110-resnet20 or ResNet50-vgg8 (the TTM paper prints
"n/a" for both), so those two RepDistiller pairs are absent here and raise ValueError.

Launch (``PAIR`` is a key of ``PAIRS``, ``teacher-student``)::

  python -m launch.distill --config configs/cifar100/dkd.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/dkd_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

Published DKD top-1 (mdistiller README, mean of 5 runs per mdistiller#42):
  pair                     β     DKD top-1
  resnet56-resnet20        2.0   71.97
  resnet110-resnet32       2.0   74.11
  resnet32x4-resnet8x4     8.0   76.32
  wrn_40_2-wrn_16_2        6.0   76.23   (the TTM paper prints 76.24)
  wrn_40_2-wrn_40_1        6.0   74.81
  vgg13-vgg8               6.0   74.68
  resnet32x4-ShuffleV1     8.0   76.45   (lr 0.01)
  wrn_40_2-ShuffleV1       8.0   76.70   (lr 0.01)
  vgg13-MobileNetV2        6.0   69.71   (lr 0.01)
  ResNet50-MobileNetV2     8.0   70.35   (lr 0.01)
  resnet32x4-ShuffleV2     8.0   77.07   (lr 0.01; README header says "MobileNet-V2", a typo:
                                          the repo ships res32x4_shuv2.yaml)
Runtime: 240 x 782 steps per run; use a GPU.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset

NOT_PUBLISHED = ("resnet110-resnet20", "ResNet50-vgg8")

# pair -> (teacher, student, beta, published DKD top-1)
PAIRS = {
  "resnet56-resnet20": ("resnet56", "resnet20", 2.0, 71.97),
  "resnet110-resnet32": ("resnet110", "resnet32", 2.0, 74.11),
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 8.0, 76.32),
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2", 6.0, 76.23),
  "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1", 6.0, 74.81),
  "vgg13-vgg8": ("vgg13", "vgg8", 6.0, 74.68),
  "resnet32x4-ShuffleV1": ("resnet32x4", "ShuffleV1", 8.0, 76.45),
  "wrn_40_2-ShuffleV1": ("wrn_40_2", "ShuffleV1", 8.0, 76.70),
  "vgg13-MobileNetV2": ("vgg13", "MobileNetV2", 6.0, 69.71),
  "ResNet50-MobileNetV2": ("ResNet50", "MobileNetV2", 8.0, 70.35),
  "resnet32x4-ShuffleV2": ("resnet32x4", "ShuffleV2", 8.0, 77.07),
}


def get_config(pair: str = "resnet32x4-resnet8x4"):
  if pair in NOT_PUBLISHED:
    raise ValueError(
      f"mdistiller has no DKD config for {pair!r} (no published number); "
      f"choose one of {sorted(PAIRS)}."
    )
  teacher, student, beta, _ = common.parse_pair(pair, PAIRS)
  c = common.recipe(student, teacher)
  apply_preset(c.method, "dkd", beta=beta)  # CE 1, alpha 1, beta, T 4, warm-up 20
  return c
