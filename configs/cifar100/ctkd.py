r"""CTKD (curriculum temperature) and CTKD + logit standardisation on CIFAR-100.

Citation: Li, Li, Yang, Zhao, Song, Luo, Li, Yang. "Curriculum Temperature for Knowledge
Distillation", AAAI 2023 (zhengli97/CTKD ``scripts/run_cifar_distill.sh``: ``--distill kd -r 0.1
-a 0.9 -b 0 --have_mlp 1 --mlp_name global --cosine_decay 1 --decay_max 0 --decay_min -1
--decay_loops 10``, ``t_start`` 1, ``t_end`` 20, batch 64, lr 0.05); term ``ctkd``
(:mod:`kdjax.methods.ctkd`, losses :mod:`kdjax.losses.ctkd`)::

  L = 0.1 · CE + w · τ² · KL(softmax(z_t/τ) ‖ softmax(z_s/τ)),  τ = 1 + 20 · sigmoid(GRL_λ(θ))

with ``λ`` the cosine curriculum 0 -> −1 over epochs 1..10. ``ARG`` ``kd:PAIR`` is CTKD (w = 0.9);
``ls:PAIR`` is CTKD + logit standardisation (Sun et al., CVPR 2024; logit-standardization-KD
``CTKD/scripts/run_cifar_distill.sh``: ``-r 0.1 -a 9``, logits Z-scored; its log names
``ctkd,T,S,2,9`` give w = 9, and its ``--kd_T 2`` is unused with the learned temperature).
Recipe: RepDistiller's (batch 64, SGD 0.9, wd 5e-4 -- also on θ, as the reference's single
optimiser -- 240 epochs, lr ×0.1 at 150/180/210, lr 0.05 or 0.01 for MobileNetV2/ShuffleV1/V2).

Launch::

  python -m launch.distill --config configs/cifar100/ctkd.py:kd:resnet56-resnet20 \
      --workdir runs/cifar100/ctkd_resnet56-resnet20 \
      --config.teacher.workdir runs/cifar100/teacher_resnet56

Published top-1 (logit-standardization-KD README tables; its CTKD row agrees with zhengli97/CTKD's
README on the six pairs that README lists: resnet56-resnet20, resnet110-resnet32,
resnet110-resnet20, wrn_40_2-wrn_16_2, wrn_40_2-wrn_40_1, vgg13-vgg8):

  pair                     CTKD   CTKD+LS
  resnet32x4-resnet8x4     73.39  76.67
  vgg13-vgg8               73.52  74.47
  wrn_40_2-wrn_40_1        73.93  74.58
  wrn_40_2-wrn_16_2        75.45  76.08
  resnet56-resnet20        71.19  71.34
  resnet110-resnet32       73.52  74.01
  resnet110-resnet20       70.99  71.39
  resnet32x4-ShuffleV2     75.37  76.18
  resnet32x4-wrn_16_2      74.57  75.16
  resnet32x4-wrn_40_2      77.66  77.99
  wrn_40_2-resnet8x4       74.61  77.03
  wrn_40_2-MobileNetV2     68.34  69.53
  vgg13-MobileNetV2        68.50  68.98
  ResNet50-MobileNetV2     68.67  69.36
Runtime: 240 × 782 steps per run; use a GPU.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset

LOW_LR = common.LOW_LR

# pair -> (teacher, student, published CTKD top-1, published CTKD+LS top-1)
PAIRS = {
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 73.39, 76.67),
  "vgg13-vgg8": ("vgg13", "vgg8", 73.52, 74.47),
  "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1", 73.93, 74.58),
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2", 75.45, 76.08),
  "resnet56-resnet20": ("resnet56", "resnet20", 71.19, 71.34),
  "resnet110-resnet32": ("resnet110", "resnet32", 73.52, 74.01),
  "resnet110-resnet20": ("resnet110", "resnet20", 70.99, 71.39),
  "resnet32x4-ShuffleV2": ("resnet32x4", "ShuffleV2", 75.37, 76.18),
  "resnet32x4-wrn_16_2": ("resnet32x4", "wrn_16_2", 74.57, 75.16),
  "resnet32x4-wrn_40_2": ("resnet32x4", "wrn_40_2", 77.66, 77.99),
  "wrn_40_2-resnet8x4": ("wrn_40_2", "resnet8x4", 74.61, 77.03),
  "wrn_40_2-MobileNetV2": ("wrn_40_2", "MobileNetV2", 68.34, 69.53),
  "vgg13-MobileNetV2": ("vgg13", "MobileNetV2", 68.50, 68.98),
  "ResNet50-MobileNetV2": ("ResNet50", "MobileNetV2", 68.67, 69.36),
}


def get_config(arg: str = "kd:resnet32x4-resnet8x4"):
  variant, _, pair = arg.partition(":")
  if variant not in ("kd", "ls") or not pair:
    raise ValueError(
      f"ctkd config argument must be 'kd:PAIR' (CTKD) or 'ls:PAIR' (CTKD + logit "
      f"standardisation), got {arg!r}."
    )
  teacher, student, _, _ = common.parse_pair(pair, PAIRS, "ctkd")
  c = common.recipe(student, teacher)
  apply_preset(c.method, "ctkd" if variant == "kd" else "ctkd_ls")
  return c
