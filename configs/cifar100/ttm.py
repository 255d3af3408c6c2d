r"""TTM and WTTM (transformed teacher matching) on CIFAR-100 for the 13 RepDistiller pairs.

Citation: Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching", ICLR 2024
(zkxufo/TTM ``train_student.py --distill {ttm,wttm} --ttm_l GAMMA -r 1 -b BETA -a 0``). Wiring
``loss = r·CE + a·L_add + b·L_main`` with r = 1, a = 0 (no KD / additional term) and

* TTM:  ``L_main = mean_b KL(softmax(γ·z_t) ‖ softmax(z_s))``;
* WTTM: ``L_main = mean_b U_γ(p_t)·KL(softmax(γ·z_t) ‖ softmax(z_s))``, ``U_γ(p) = Σ_j p_j^γ``;

no student temperature, no T². (γ, β) per pair from the paper's Table 8 (same architecture) and
Table 9 (different architectures); γ = ``--ttm_l``. Table 8's row layout is our reading
(methods.md §3.4, §9 item 4); its TTM vgg13-vgg8 cell (0.1, 45) matches the zkxufo/TTM README
command. Recipe: the canonical RepDistiller schedule (``configs/cifar100/common.py``, methods.md
§1): SGD 0.9, wd 5e-4, batch 64, 240 epochs, lr x0.1 at 150/180/210; lr 0.05, or 0.01 when the
student is MobileNetV2, ShuffleV1 or ShuffleV2 (zkxufo/TTM ``train_student.py`` override).

WTTM + CRD (``--distill crd --add wttm``, Table 8/9's "WTTM+CRD" column) is
``configs/cifar100/wttm_crd.py``; WTTM + ITRD is ``configs/cifar100/wttm_itrd.py``, ITRD alone
``configs/cifar100/itrd.py`` and WTTM without CE (Table 6) ``configs/cifar100/wttm_noce.py``.

Launch (``ARG`` is ``[ttm:|wttm:]PAIR``, ``PAIR`` a key of ``PAIRS``, ``teacher-student``; a
bare ``PAIR`` is TTM; ``configs/cifar100/wttm.py:PAIR`` is kept as an alias of ``wttm:PAIR``)::

  python -m launch.distill --config configs/cifar100/ttm.py:vgg13-vgg8 \
      --workdir runs/cifar100/ttm_vgg13-vgg8 \
      --config.teacher.workdir runs/cifar100/teacher_vgg13
  python -m launch.distill --config configs/cifar100/ttm.py:wttm:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/wttm_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

Published top-1 (paper Tables 1/11 and 3/12 = zkxufo/TTM README; same architecture: mean ± std
over 5 runs; different architectures: mean over 3 runs; best vs last epoch not stated):
  pair                     TTM γ  β     TTM top-1      WTTM γ  β     WTTM top-1
  wrn_40_2-wrn_16_2        0.1    101   76.23 ± 0.15   0.1     4     76.37 ± 0.10
  wrn_40_2-wrn_40_1        0.1    76    74.32 ± 0.31   0.1     3     74.58 ± 0.26
  resnet56-resnet20        0.3    7     71.83 ± 0.16   0.3     1.5   71.92 ± 0.40
  resnet110-resnet20       0.2    8     71.46 ± 0.16   0.2     2     71.67 ± 0.28
  resnet110-resnet32       0.1    33    73.97 ± 0.23   0.1     1.5   74.13 ± 0.37
  resnet32x4-resnet8x4     0.1    100   76.17 ± 0.28   0.1     3     76.06 ± 0.27
  vgg13-vgg8               0.1    45    74.33 ± 0.07   0.1     2.25  74.44 ± 0.19
  vgg13-MobileNetV2        0.2    16    68.98          0.2     3     69.16   (lr 0.01)
  ResNet50-MobileNetV2     0.2    20    69.24          0.2     5     69.59   (lr 0.01)
  ResNet50-vgg8            0.1    70    74.87          0.1     2     74.82
  resnet32x4-ShuffleV1     0.2    12    74.18          0.2     1.4   74.37   (lr 0.01)
  resnet32x4-ShuffleV2     0.4    40    76.57          0.4     16    76.55   (lr 0.01)
  wrn_40_2-ShuffleV1       0.3    8     75.39          0.3     3     75.42   (lr 0.01)
Runtime: 240 x 782 steps per run; use a GPU.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset

# pair -> (teacher, student, gamma, beta, published mean top-1, published std or None)
PAIRS = {  # TTM
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2", 0.1, 101.0, 76.23, 0.15),
  "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1", 0.1, 76.0, 74.32, 0.31),
  "resnet56-resnet20": ("resnet56", "resnet20", 0.3, 7.0, 71.83, 0.16),
  "resnet110-resnet20": ("resnet110", "resnet20", 0.2, 8.0, 71.46, 0.16),
  "resnet110-resnet32": ("resnet110", "resnet32", 0.1, 33.0, 73.97, 0.23),
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 0.1, 100.0, 76.17, 0.28),
  "vgg13-vgg8": ("vgg13", "vgg8", 0.1, 45.0, 74.33, 0.07),
  "vgg13-MobileNetV2": ("vgg13", "MobileNetV2", 0.2, 16.0, 68.98, None),
  "ResNet50-MobileNetV2": ("ResNet50", "MobileNetV2", 0.2, 20.0, 69.24, None),
  "ResNet50-vgg8": ("ResNet50", "vgg8", 0.1, 70.0, 74.87, None),
  "resnet32x4-ShuffleV1": ("resnet32x4", "ShuffleV1", 0.2, 12.0, 74.18, None),
  "resnet32x4-ShuffleV2": ("resnet32x4", "ShuffleV2", 0.4, 40.0, 76.57, None),
  "wrn_40_2-ShuffleV1": ("wrn_40_2", "ShuffleV1", 0.3, 8.0, 75.39, None),
}
WTTM_PAIRS = {  # same layout
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
TABLES = {"ttm": PAIRS, "wttm": WTTM_PAIRS}


def parse(arg: str):
  """``'[ttm:|wttm:]PAIR'`` -> (method, PAIRS row); a bare pair is TTM."""
  method, _, pair = arg.rpartition(":")
  method = method or "ttm"
  if method not in TABLES:
    raise ValueError(
      f"configs/cifar100/ttm.py: unknown method {method!r} in {arg!r}; use ttm:PAIR or wttm:PAIR."
    )
  return method, common.parse_pair(pair, TABLES[method], "configs/cifar100/ttm.py")


def get_config(arg: str = "vgg13-vgg8"):
  method, (teacher, student, gamma, beta, _, _) = parse(arg)
  c = common.recipe(student, teacher)
  # -r 1 -a 0 -b beta --ttm_l gamma: the TTM / WTTM term alone
  apply_preset(c.method, method, gamma=gamma, beta=beta)
  return c
