r"""Hinton KD on CIFAR-10 with RepDistiller's student recipe and weights (CE 0.1, KD 0.9, T = 4).

Citation: Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015;
recipe HobbitLong/RepDistiller ``train_student.py`` (methods.md §1), here on ``cifar10``
(``configs/cifar10/teacher.py`` teachers). Argument ``<teacher>-<student>`` (any registered CIFAR
models).

Launch::

  python -m launch.distill --config configs/cifar10/kd.py:resnet56-resnet20 \
      --workdir runs/cifar10/kd_resnet56-resnet20

Published numbers: none transcribed for CIFAR-10.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset

PAIRS = {
  "resnet56-resnet20": ("resnet56", "resnet20"),
  "resnet110-resnet32": ("resnet110", "resnet32"),
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2"),
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4"),
}
PUBLISHED = {}


def get_config(pair: str = "resnet56-resnet20"):
  teacher, student = common.parse_pair(pair, PAIRS, "cifar10/kd")
  c = common.recipe(student)
  c.dataset.name = "cifar10"
  c.teacher.workdir = f"runs/cifar10/teacher_{teacher}"
  apply_preset(c.method, "kd")
  return c
