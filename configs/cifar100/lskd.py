r"""Logit standardisation (KD + LS, DKD + LS) on CIFAR-100 for the 14 pairs of its README.

Citation: Sun, Ren, Li, Wang, Cao. "Logit Standardization in Knowledge Distillation", CVPR 2024
(sunshangquan/logit-standardization-KD: ``mdistiller/distillers/{KD,DKD}.py`` with
``logit_stand=True``, ``tools/train.py --logit-stand --base-temp τ --kd-weight w``). Loss terms
``lskd`` / ``lsdkd`` (:mod:`kdjax.methods.lskd`, losses in :mod:`kdjax.losses.standardize`):

* KD + LS: ``0.1 · CE + w · τ² · KL(softmax(Z(z_t)/τ) ‖ softmax(Z(z_s)/τ))`` (the repo's
  ``CFG.KD.LOSS.CE_WEIGHT`` 0.1; ``--kd-weight`` replaces ``KD_WEIGHT``, ``--base-temp`` the
  temperature);
* DKD + LS: ``1.0 · CE + min(epoch/20, 1) · τ² · (w·α₀ · TCKD + w·β₀ · NCKD)`` on ``Z(z)``, with
  mdistiller's α₀ = 1 and the pair's β₀ (``tools/train.py`` multiplies ``DKD.ALPHA`` and
  ``DKD.BETA`` by ``--kd-weight`` and sets ``DKD.T = --base-temp``);

``Z(z) = (z − mean(z)) / (1e-7 + std(z))`` per sample (unbiased std).

Per-pair (τ, w[, β₀]) come from the repo's log file names, documented as
``KD_TYPE,TEACHER,STUDENT,BASE_TEMPERATURE,KD_WEIGHT[,BETA]`` (``logs/KD``, ``logs/DKD``). Where a
DKD log name has no BETA, β₀ is the pair's ``configs/cifar100/dkd/*.yaml`` value (8.0 for
resnet32x4 → resnet8x4 and → ShuffleV2); reading the named BETA as the pre-multiplication
``DKD.BETA`` (e.g. β = 2.0 · 15 = 30 for vgg13 → vgg8) is our reading of ``tools/train.py``
(``merge_from_list(opts)`` runs before the multiplication). Recipe (the repo's yaml files):
batch 64, SGD 0.9, wd 5e-4, 240 epochs, lr ×0.1 at 150/180/210; lr 0.05, or 0.01 when the
student is MobileNetV2/ShuffleV1/ShuffleV2.

Launch (``ARG`` is ``kd:PAIR`` or ``dkd:PAIR``, ``PAIR`` a key of ``KD_PAIRS`` / ``DKD_PAIRS``)::

  python -m launch.distill --config configs/cifar100/lskd.py:kd:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/lskd_kd_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

Published top-1 (README tables; the repo says its logs may differ slightly "due to average
operation and randomness"; "log best" is the best epoch of the linked log, "KD"/"DKD" the
baselines the README prints):

  pair                     τ  w   KD+LS  (log best)  KD    |  τ  w   β₀   DKD+LS (log best)  DKD
  resnet32x4-resnet8x4     2  9   76.62  (76.66)   73.33   |  2  9   8.0  77.01  (77.14)   76.32
  vgg13-vgg8               3  9   74.36  (74.69)   72.98   |  2  15  2.0  74.81  (74.69)   74.68
  wrn_40_2-wrn_40_1        2  9   74.37  (74.56)   73.54   |  2  12  2.0  74.89  (74.93)   74.81
  wrn_40_2-wrn_16_2        2  9   76.11  (76.08)   74.92   |  2  12  2.0  76.39  (76.27)   76.24
  resnet56-resnet20        2  9   71.43  (71.53)   70.66   |  3  18  2.0  72.32  (72.24)   71.97
  resnet110-resnet32       2  9   74.17  (74.24)   73.08   |  2  15  2.0  74.29  (74.27)   74.11
  resnet110-resnet20       4  12  71.48  (71.46)   70.67   |  2  15  2.0  71.85  (71.86)   71.06
  resnet32x4-ShuffleV2     2  9   75.56  (75.79)   74.45   |  2  9   8.0  77.37  (77.45)   77.07
  resnet32x4-wrn_16_2      3  9   75.26  (75.94)   74.90   |  2  9   2.0  76.19  (76.08)   75.70
  resnet32x4-wrn_40_2      3  9   77.92  (78.42)   77.70   |  2  9   8.0  78.95  (78.97)   78.46
  wrn_40_2-resnet8x4       2  9   77.11  (77.03)   73.97   |  2  18  2.0  76.75  (76.94)   75.56
  wrn_40_2-MobileNetV2     3  9   69.23  (69.74)   68.36   |  2  15  2.0  70.01  (70.24)   69.28
  vgg13-MobileNetV2        3  9   68.61  (69.45)   67.37   |  3  9   2.0  69.98  (70.12)   69.71
  ResNet50-MobileNetV2     3  1   69.02  (69.21)   67.35   |  2  15  2.0  70.45  (70.91)   70.35

The README also prints CTKD+LS and MLKD+LS rows (e.g. resnet32x4 → resnet8x4: CTKD+LS 76.67,
MLKD+LS 78.28). kdjax has CTKD (configs/cifar100/ctkd.py) and MLKD (configs/cifar100/mlkd.py),
but their +LS combinations have no config here yet.
Runtime: 240 × 782 steps per run; use a GPU.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset

LOW_LR = common.LOW_LR

# pair -> (teacher, student, base temperature τ, kd weight w, published KD+LS top-1)
KD_PAIRS = {
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 2.0, 9.0, 76.62),
  "vgg13-vgg8": ("vgg13", "vgg8", 3.0, 9.0, 74.36),
  "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1", 2.0, 9.0, 74.37),
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2", 2.0, 9.0, 76.11),
  "resnet56-resnet20": ("resnet56", "resnet20", 2.0, 9.0, 71.43),
  "resnet110-resnet32": ("resnet110", "resnet32", 2.0, 9.0, 74.17),
  "resnet110-resnet20": ("resnet110", "resnet20", 4.0, 12.0, 71.48),
  "resnet32x4-ShuffleV2": ("resnet32x4", "ShuffleV2", 2.0, 9.0, 75.56),
  "resnet32x4-wrn_16_2": ("resnet32x4", "wrn_16_2", 3.0, 9.0, 75.26),
  "resnet32x4-wrn_40_2": ("resnet32x4", "wrn_40_2", 3.0, 9.0, 77.92),
  "wrn_40_2-resnet8x4": ("wrn_40_2", "resnet8x4", 2.0, 9.0, 77.11),
  "wrn_40_2-MobileNetV2": ("wrn_40_2", "MobileNetV2", 3.0, 9.0, 69.23),
  "vgg13-MobileNetV2": ("vgg13", "MobileNetV2", 3.0, 9.0, 68.61),
  "ResNet50-MobileNetV2": ("ResNet50", "MobileNetV2", 3.0, 1.0, 69.02),
}

# pair -> (teacher, student, τ, w, β₀, published DKD+LS top-1); α = w · 1, β = w · β₀
DKD_PAIRS = {
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 2.0, 9.0, 8.0, 77.01),
  "vgg13-vgg8": ("vgg13", "vgg8", 2.0, 15.0, 2.0, 74.81),
  "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1", 2.0, 12.0, 2.0, 74.89),
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2", 2.0, 12.0, 2.0, 76.39),
  "resnet56-resnet20": ("resnet56", "resnet20", 3.0, 18.0, 2.0, 72.32),
  "resnet110-resnet32": ("resnet110", "resnet32", 2.0, 15.0, 2.0, 74.29),
  "resnet110-resnet20": ("resnet110", "resnet20", 2.0, 15.0, 2.0, 71.85),
  "resnet32x4-ShuffleV2": ("resnet32x4", "ShuffleV2", 2.0, 9.0, 8.0, 77.37),
  "resnet32x4-wrn_16_2": ("resnet32x4", "wrn_16_2", 2.0, 9.0, 2.0, 76.19),
  "resnet32x4-wrn_40_2": ("resnet32x4", "wrn_40_2", 2.0, 9.0, 8.0, 78.95),
  "wrn_40_2-resnet8x4": ("wrn_40_2", "resnet8x4", 2.0, 18.0, 2.0, 76.75),
  "wrn_40_2-MobileNetV2": ("wrn_40_2", "MobileNetV2", 2.0, 15.0, 2.0, 70.01),
  "vgg13-MobileNetV2": ("vgg13", "MobileNetV2", 3.0, 9.0, 2.0, 69.98),
  "ResNet50-MobileNetV2": ("ResNet50", "MobileNetV2", 2.0, 15.0, 2.0, 70.45),
}


def get_config(arg: str = "kd:resnet32x4-resnet8x4"):
  base, _, pair = arg.partition(":")
  tables = {"kd": KD_PAIRS, "dkd": DKD_PAIRS}
  if base not in tables or not pair:
    raise ValueError(f"lskd config argument must be 'kd:PAIR' or 'dkd:PAIR', got {arg!r}.")
  row = common.parse_pair(pair, tables[base], f"{base}+LS")
  c = common.recipe(row[1], row[0])
  if base == "kd":  # CE 0.1 + w · lskd(τ)
    apply_preset(c.method, "lskd", base_temp=row[2], kd_weight=row[3])
  else:  # CE 1 + warm-up(20) · lsdkd(α = w, β = w·β₀, τ)
    apply_preset(c.method, "lsdkd", base_temp=row[2], kd_weight=row[3], beta=row[4])
  return c
