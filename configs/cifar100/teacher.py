r"""CIFAR-100 teachers (and student baselines) with the RepDistiller recipe.

Citation: Tian, Krishnan, Isola. "Contrastive Representation Distillation", ICLR 2020
(HobbitLong/RepDistiller ``train_teacher.py``): SGD momentum 0.9, wd 5e-4, lr 0.05 (0.01 for
MobileNetV2/ShuffleNets), x0.1 after epochs 150/180/210, 240 epochs, batch 64,
RandomCrop(32, 4) + flip, RepDistiller normalisation.

Launch (``ARCH`` is any registered model)::

  python -m launch.train_teacher --config configs/cifar100/teacher.py:resnet32x4 \
      --workdir runs/cifar100/teacher_resnet32x4

Published teacher accuracies (CIFAR-100 top-1, RepDistiller README / pretrained checkpoints):
wrn_40_2 75.61, resnet56 72.34, resnet110 74.31, resnet32x4 79.42, vgg13 74.64, ResNet50 79.34.
Published "student" baselines: wrn_16_2 73.26, wrn_40_1 71.98, resnet20 69.06, resnet32 71.14,
resnet8x4 72.50, vgg8 70.36, MobileNetV2 64.60, ShuffleV1 70.50, ShuffleV2 71.82.
Runtime: ~240 epochs x 782 steps; on the 2-core CPU machines this is days (use a GPU).
Kept checkpoints every 20 epochs serve checkpoint-KD.
"""

from configs.cifar100 import common

PUBLISHED = {
  "wrn_40_2": 75.61,
  "resnet56": 72.34,
  "resnet110": 74.31,
  "resnet32x4": 79.42,
  "vgg13": 74.64,
  "ResNet50": 79.34,
  "wrn_16_2": 73.26,
  "wrn_40_1": 71.98,
  "resnet20": 69.06,
  "resnet32": 71.14,
  "resnet8x4": 72.50,
  "vgg8": 70.36,
  "MobileNetV2": 64.60,
  "ShuffleV1": 70.50,
  "ShuffleV2": 71.82,
}
LOW_LR = common.LOW_LR


def get_config(arch: str = "resnet32x4"):
  c = common.recipe(arch)
  c.keep_every_epochs = 20
  return c
