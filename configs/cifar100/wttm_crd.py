r"""WTTM + CRD on CIFAR-100 for the 13 RepDistiller pairs (TTM paper's "WTTM+CRD" cells).

Citation: Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching", ICLR 2024
(zkxufo/TTM ``train_student.py --distill crd --add wttm --ttm_l GAMMA -b 0.8 -a BETA``; paper
Appendix A.5: ``L = H(y, q) + β·U·D(p_t^T ‖ q) + μ·L_CRD`` with μ = 0.8). Wiring
``loss = r·CE + a·L_add + b·L_main`` (methods.md §0.4) with r = 1, main = CRD at b = 0.8 and
add = WTTM at a = β with γ = ``--ttm_l``; (γ, β) per pair from Table 8 (same architecture; row
layout our reading, methods.md §3.4 / §9 item 4; the vgg13-vgg8 cell (0.2, 4) matches the
zkxufo/TTM README command) and Table 9 (different architectures).
CRD settings: zkxufo/TTM defaults = RepDistiller's (feat_dim 128, nce_k 16384, nce_t 0.07,
nce_m 0.5, mode exact); negatives ``'other_class'`` as in ``configs/cifar100/repdistiller.py``
(an approximation of the reference's class-aware sampler, see there).
Recipe: the canonical schedule (methods.md §1): SGD 0.9, wd 5e-4, batch 64, 240 epochs, lr x0.1
at 150/180/210; lr 0.05, or 0.01 when the student is MobileNetV2, ShuffleV1 or ShuffleV2.

Launch (``PAIR`` is a key of ``PAIRS``, ``teacher-student``)::

  python -m launch.distill --config configs/cifar100/wttm_crd.py:vgg13-vgg8 \
      --workdir runs/cifar100/wttm_crd_vgg13-vgg8 \
      --config.teacher.workdir runs/cifar100/teacher_vgg13

Published WTTM+CRD top-1 (paper Tables 1/11 and 3/12 = methods.md §3.5; same-architecture
columns are means over 5 runs, cross-architecture over 3; best vs last epoch not stated):
  pair                     γ     β     WTTM+CRD top-1
  wrn_40_2-wrn_16_2        0.1   4     76.61
  wrn_40_2-wrn_40_1        0.1   2     74.94
  resnet56-resnet20        0.3   0.6   72.20
  resnet110-resnet20       0.2   1.4   72.13
  resnet110-resnet32       0.2   1     74.52
  resnet32x4-resnet8x4     0.2   4     76.65
  vgg13-vgg8               0.2   4     74.71
  vgg13-MobileNetV2        0.3   4.2   70.30   (lr 0.01)
  ResNet50-MobileNetV2     0.3   3     70.84   (lr 0.01)
  ResNet50-vgg8            0.1   3     75.30
  resnet32x4-ShuffleV1     0.2   0.4   75.82   (lr 0.01)
  resnet32x4-ShuffleV2     0.4   12    77.04   (lr 0.01)
  wrn_40_2-ShuffleV1       0.2   0.16  76.86   (lr 0.01)
Runtime: 240 x 782 steps per run; use a GPU.
"""

from configs.cifar100 import common
from kdjax.methods import crd as crd_family

CRD_WEIGHT = 0.8  # -b 0.8 (paper's μ)
CRD_HPARAMS = crd_family.CRD_HPARAMS  # RepDistiller train_student.py defaults

# pair -> (teacher, student, gamma, beta, published WTTM+CRD top-1)
PAIRS = {
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2", 0.1, 4.0, 76.61),
  "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1", 0.1, 2.0, 74.94),
  "resnet56-resnet20": ("resnet56", "resnet20", 0.3, 0.6, 72.20),
  "resnet110-resnet20": ("resnet110", "resnet20", 0.2, 1.4, 72.13),
  "resnet110-resnet32": ("resnet110", "resnet32", 0.2, 1.0, 74.52),
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 0.2, 4.0, 76.65),
  "vgg13-vgg8": ("vgg13", "vgg8", 0.2, 4.0, 74.71),
  "vgg13-MobileNetV2": ("vgg13", "MobileNetV2", 0.3, 4.2, 70.30),
  "ResNet50-MobileNetV2": ("ResNet50", "MobileNetV2", 0.3, 3.0, 70.84),
  "ResNet50-vgg8": ("ResNet50", "vgg8", 0.1, 3.0, 75.30),
  "resnet32x4-ShuffleV1": ("resnet32x4", "ShuffleV1", 0.2, 0.4, 75.82),
  "resnet32x4-ShuffleV2": ("resnet32x4", "ShuffleV2", 0.4, 12.0, 77.04),
  "wrn_40_2-ShuffleV1": ("wrn_40_2", "ShuffleV1", 0.2, 0.16, 76.86),
}


def get_config(pair: str = "vgg13-vgg8"):
  teacher, student, gamma, beta, _ = common.parse_pair(pair, PAIRS)
  c = common.recipe(student, teacher)
  c.method.name = "wttm_crd"
  c.method.ce_weight = 1.0  # -r 1
  c.method.terms.crd = dict(weight=CRD_WEIGHT, **CRD_HPARAMS)  # --distill crd -b 0.8
  c.method.terms.wttm = dict(weight=beta, gamma=gamma)  # --add wttm -a beta --ttm_l
  return c
