r"""CIFAR-10 teachers and student baselines with the RepDistiller recipe (``configs/cifar100/teacher.py``
on ``dataset.name = 'cifar10'``): SGD 0.9, wd 5e-4, batch 64, 240 epochs, lr 0.05 (0.01 for
MobileNetV2/ShuffleNets) x0.1 at 150/180/210, kept checkpoints every 20 epochs.

Citation: Tian, Krishnan, Isola, "Contrastive Representation Distillation", ICLR 2020 (the recipe);
CIFAR-10 use as in Fan et al., ICML 2024.

Launch::

  python -m launch.train_teacher --config configs/cifar10/teacher.py:resnet56 \
      --workdir runs/cifar10/teacher_resnet56

Published numbers: none for this recipe on CIFAR-10 (RepDistiller reports CIFAR-100 only).
"""

from configs.cifar100 import common

PUBLISHED = {}


def get_config(arch: str = "resnet56"):
  c = common.recipe(arch)
  c.dataset.name = "cifar10"
  c.keep_every_epochs = 20
  return c
