r"""Overhaul distillation (OH) on CIFAR-100 with its official schedule.

Citation: Heo, Kim, Yun, Park, Kwak, Choi, "A Comprehensive Overhaul of Feature Distillation",
ICCV 2019 (clovaai/overhaul-distillation ``CIFAR-100/train_with_distillation.py``,
``distiller.py``; methods.md §7.2, §8). Loss ``CE + Σ_i w_i·L_pd(F_s', max(F_t, m))/B/1000``
(term ``oh``: margins from the teacher's BN, connector conv1x1 + BN, stage weights 1/2^(L−i−1);
preset ``oh``). Schedule (official CIFAR code): 200 epochs, SGD **Nesterov** momentum 0.9, lr 0.1,
÷10 at epoch 100 and ÷100 at 150 (milestones 100/150, decay 0.1), wd 5e-4 and batch 128
(unverified: methods.md §8 marks the batch as unverified). ShuffleNets are unsupported
(RepDistiller has no ``get_bn_before_relu`` for them), so their pairs are absent, and so is
ResNet50 -> MobileNetV2 (the stage maps differ in spatial size, 32/16/8/4 vs 16/8/4/2, which the
OH connector, conv1x1 + BN, cannot bridge).

Argument ``<teacher>-<student>``: the RepDistiller/SFTN pairs with BN-before-ReLU on both sides.

Launch::

  python -m launch.distill --config configs/cifar100/oh.py:wrn_40_2-wrn_16_2 \
      --workdir runs/cifar100/oh_wrn_40_2-wrn_16_2 \
      --config.teacher.workdir runs/cifar100/teacher_wrn_40_2

Published numbers: NONE for these pairs. RepDistiller's table has no OH row, and the official
README (clovaai/overhaul-distillation ``README.md`` / ``CIFAR-100/README.md``, "Experimental
results", error rate %) reports only its own settings, whose WRN-28-4 and PyramidNet teachers are
not kdjax models. For reference, that table as top-1 = 100 - error (student alone -> OH):

  README setting                    student alone   OH      (error %: alone / OH)
  (a) WRN 28-4 -> WRN 16-4          77.28           79.11   (22.72 / 20.89)
  (b) WRN 28-4 -> WRN 28-2          75.12           78.02   (24.88 / 21.98)
  (c) WRN 28-4 -> WRN 16-2          72.68           75.92   (27.32 / 24.08)
  (d) WRN 28-4 -> ResNet 56         72.32           75.56   (27.68 / 24.44)
  Pyramid-200 -> WRN 28-4           78.91           82.20   (21.09 / 17.80)
  Pyramid-200 -> Pyramid-110        77.42           81.11   (22.58 / 18.89)

(the README labels the last two rows (f), (g) in its results but (e), (f) in its settings; the
Pyramid teachers were trained at batch 64). None of these is a number for a ``PAIRS`` cell here.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset

PAIRS = {
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2"),
  "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1"),
  "resnet56-resnet20": ("resnet56", "resnet20"),
  "resnet110-resnet32": ("resnet110", "resnet32"),
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4"),
  "vgg13-vgg8": ("vgg13", "vgg8"),
}
EPOCHS, BATCH = 200, 128
PUBLISHED = {}  # no published OH number for these pairs (docstring)
# the official README's own settings (not kdjax models): setting -> (alone, OH) top-1
OFFICIAL_README = {
  "wrn_28_4-wrn_16_4": (77.28, 79.11),
  "wrn_28_4-wrn_28_2": (75.12, 78.02),
  "wrn_28_4-wrn_16_2": (72.68, 75.92),
  "wrn_28_4-resnet56": (72.32, 75.56),
  "pyramid200-wrn_28_4": (78.91, 82.20),
  "pyramid200-pyramid110": (77.42, 81.11),
}


def apply_oh(method_cfg):
  """Fills ``config.method`` with the preset ``oh`` (CE 1 + OH at scale 1e-3)."""
  apply_preset(method_cfg, "oh")
  method_cfg.name = "oh"
  return method_cfg


def get_config(pair: str = "wrn_40_2-wrn_16_2"):
  teacher, student = common.parse_pair(pair, PAIRS, "oh")
  c = common.recipe(student, teacher)
  apply_oh(c.method)
  c.batch_size = BATCH
  c.num_epochs = EPOCHS
  o = c.optim
  o.lr, o.momentum, o.nesterov, o.weight_decay = 0.1, 0.9, True, 5e-4
  o.milestones, o.decay, o.epochs = (100, 150), 0.1, EPOCHS
  o.reference_batch_size = BATCH
  c.checkpoint_every_steps = -(-50000 // BATCH) * 5
  return c
