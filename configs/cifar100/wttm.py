r"""WTTM (weighted transformed teacher matching) on CIFAR-100 for the 13 RepDistiller pairs.

Citation: Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching", ICLR 2024
(zkxufo/TTM ``train_student.py --distill wttm --ttm_l GAMMA -r 1 -b BETA -a 0``). Wiring
``loss = r·CE + a·L_add + b·L_main`` with r = 1, a = 0 (no KD / additional term) and
``L_main = mean_b U_γ(p_t)·KL(softmax(γ·z_t) ‖ softmax(z_s))``, ``U_γ(p) = Σ_j p_j^γ``
(no student temperature, no T²); (γ, β) per pair from the paper's Table 8 (same architecture;
row layout is our reading, methods.md §3.4 / §9 item 4) and Table 9 (different architectures).
Recipe: the canonical RepDistiller schedule (methods.md §1): SGD 0.9, wd 5e-4, batch 64,
240 epochs, lr x0.1 at 150/180/210; lr 0.05, or 0.01 when the student is MobileNetV2, ShuffleV1
or ShuffleV2 (zkxufo/TTM ``train_student.py`` override).

WTTM + CRD (``--distill crd --add wttm``, Table 8/9's "WTTM+CRD" column) is
``configs/cifar100/wttm_crd.py``; WTTM + ITRD is ``configs/cifar100/wttm_itrd.py`` and ITRD
alone ``configs/cifar100/itrd.py``.

Launch (``PAIR`` is a key of ``PAIRS``, ``teacher-student``)::

  python -m launch.distill --config configs/cifar100/wttm.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/wttm_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

Published WTTM top-1 (paper Tables 1/11 and 3/12 = zkxufo/TTM README; same architecture: mean ±
std over 5 runs; different architectures: mean over 3 runs; best vs last epoch not stated):
  pair                     γ     β     WTTM top-1
  wrn_40_2-wrn_16_2        0.1   4     76.37 ± 0.10
  wrn_40_2-wrn_40_1        0.1   3     74.58 ± 0.26
  resnet56-resnet20        0.3   1.5   71.92 ± 0.40
  resnet110-resnet20       0.2   2     71.67 ± 0.28
  resnet110-resnet32       0.1   1.5   74.13 ± 0.37
  resnet32x4-resnet8x4     0.1   3     76.06 ± 0.27
  vgg13-vgg8               0.1   2.25  74.44 ± 0.19
  vgg13-MobileNetV2        0.2   3     69.16   (lr 0.01)
  ResNet50-MobileNetV2     0.2   5     69.59   (lr 0.01)
  ResNet50-vgg8            0.1   2     74.82
  resnet32x4-ShuffleV1     0.2   1.4   74.37   (lr 0.01)
  resnet32x4-ShuffleV2     0.4   16    76.55   (lr 0.01)
  wrn_40_2-ShuffleV1       0.3   3     75.42   (lr 0.01)
Runtime: 240 x 782 steps per run; use a GPU.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset

# pair -> (teacher, student, gamma, beta, published mean top-1, published std or None)
PAIRS = {
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2", 0.1, 4.0, 76.37, 0.10),
  "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1", 0.1, 3.0, 74.58, 0.26),
  "resnet56-resnet20": ("resnet56", "resnet20", 0.3, 1.5, 71.92, 0.40),
  "resnet110-resnet20": ("resnet110", "resnet20", 0.2, 2.0, 71.67, 0.28),
  "resnet110-resnet32": ("resnet110", "resnet32", 0.1, 1.5, 74.13, 0.37),
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 0.1, 3.0, 76.06, 0.27),
  "vgg13-vgg8": ("vgg13", "vgg8", 0.1, 2.25, 74.44, 0.19),
  "vgg13-MobileNetV2": ("vgg13", "MobileNetV2", 0.2, 3.0, 69.16, None),
  "ResNet50-MobileNetV2": ("ResNet50", "MobileNetV2", 0.2, 5.0, 69.59, None),
  "ResNet50-vgg8": ("ResNet50", "vgg8", 0.1, 2.0, 74.82, None),
  "resnet32x4-ShuffleV1": ("resnet32x4", "ShuffleV1", 0.2, 1.4, 74.37, None),
  "resnet32x4-ShuffleV2": ("resnet32x4", "ShuffleV2", 0.4, 16.0, 76.55, None),
  "wrn_40_2-ShuffleV1": ("wrn_40_2", "ShuffleV1", 0.3, 3.0, 75.42, None),
}


def get_config(pair: str = "resnet32x4-resnet8x4"):
  teacher, student, gamma, beta, _, _ = common.parse_pair(pair, PAIRS)
  c = common.recipe(student, teacher)
  # -r 1 -a 0 -b beta --ttm_l gamma: the WTTM term alone
  apply_preset(c.method, "wttm", gamma=gamma, beta=beta)
  return c
