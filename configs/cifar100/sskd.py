r"""SSKD on CIFAR-100: the 11 pairs of the SSKD paper's tables.

Citation: Xu, Liu, Li, Loy, "Knowledge Distillation Meets Self-Supervision", ECCV 2020
(xuguodong03/SSKD ``student.py``; methods.md §7.2 SSKD, kdjax ``kdjax.losses.selfsup``).
Every training image is seen in its 4 rotations (0/90/180/270°, one shared random flip, a
random crop per view; student and teacher run on all 4B rows)::

  loss = 0.1 CE(normal) + 0.9 KD_T4(normal) + 2.7 KD_T4(rotated, ratio_tf 1.0)
       + 10 KL_T0.5(similarity rows, ratio_ss 0.75)

Two stages, as ``student.py``:

* init (60 epochs): the teacher's projection head (``Linear-ReLU-Linear`` on its pooled
  feature) learns the self-supervision task (each rotated view finds its own normal view in the
  batch) on the frozen teacher in eval mode: term ``sskd_head`` under the key ``ss`` (it shares
  the ``sskd_ss`` term's connector), ``method.init.trainable = 'connectors/ss/teacher_head'``,
  SGD lr 0.05 (``--t-lr``), × 0.1 at stage epochs 30 and 45, momentum 0.9, wd 5e-4;
* main (240 epochs): the student + its own projection head, teacher head frozen
  (``method.trainable = 'student+connectors/ss/student_head'``), SGD lr 0.05 (0.01 for
  MobileNetV2 / ShuffleNet students, ``command.sh``), × 0.1 at 150/180/210, batch 64.

Launch (``PAIR`` one of ``PAIRS``)::

  python -m launch.distill --config configs/cifar100/sskd.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/sskd_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

  reference: python student.py --t-path ./experiments/teacher_resnet32x4_seed0/ \
      --s-arch resnet8x4 --lr 0.05

Published SSKD top-1 (xuguodong03/SSKD README, anchors.md §5; the paper trains its OWN teachers,
column "teacher", e.g. wrn_40_2 76.46 where RepDistiller's is 75.61 — with RepDistiller teachers
the numbers are not expected to match to the decimal). SSKD reports the best-epoch top-1 (its
``best_acc``; kdjax records last and best):

  pair                      teacher  student  SSKD
  wrn_40_2-wrn_16_2         76.46    73.64    76.04
  wrn_40_2-wrn_40_1         76.46    72.24    76.13
  resnet56-resnet20         73.44    69.63    71.49
  resnet32x4-resnet8x4      79.63    72.51    76.20
  vgg13-vgg8                75.38    70.68    75.33
  vgg13-MobileNetV2         75.38    65.79    71.53
  ResNet50-MobileNetV2      79.10    65.79    72.57
  ResNet50-vgg8             79.10    70.68    75.76
  resnet32x4-ShuffleV1      79.63    70.77    78.44
  resnet32x4-ShuffleV2      79.63    73.12    78.61
  wrn_40_2-ShuffleV1        76.46    70.77    77.40

Runtime: 60 x 782 head steps (teacher forward only) + 240 x 782 student steps on 4 x 64 images:
about 4x a KD run; use a GPU.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset

# pair -> (teacher, student, published SSKD top-1, SSKD's teacher, SSKD's student baseline)
PAIRS = {
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2", 76.04, 76.46, 73.64),
  "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1", 76.13, 76.46, 72.24),
  "resnet56-resnet20": ("resnet56", "resnet20", 71.49, 73.44, 69.63),
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 76.20, 79.63, 72.51),
  "vgg13-vgg8": ("vgg13", "vgg8", 75.33, 75.38, 70.68),
  "vgg13-MobileNetV2": ("vgg13", "MobileNetV2", 71.53, 75.38, 65.79),
  "ResNet50-MobileNetV2": ("ResNet50", "MobileNetV2", 72.57, 79.10, 65.79),
  "ResNet50-vgg8": ("ResNet50", "vgg8", 75.76, 79.10, 70.68),
  "resnet32x4-ShuffleV1": ("resnet32x4", "ShuffleV1", 78.44, 79.63, 70.77),
  "resnet32x4-ShuffleV2": ("resnet32x4", "ShuffleV2", 78.61, 79.63, 73.12),
  "wrn_40_2-ShuffleV1": ("wrn_40_2", "ShuffleV1", 77.40, 76.46, 70.77),
}


LOW_LR = common.LOW_LR  # command.sh: --lr 0.01


def sskd_method(c, *, head_epochs: int = 60, head_lr: float = 0.05, head_milestones=(30, 45)):
  """Fills ``c.method`` with SSKD's loss and its teacher-head init stage (preset ``'sskd'``; also
  used by the Fashion-MNIST smoke configs with fewer head epochs)."""
  apply_preset(
    c.method, "sskd", head_epochs=head_epochs, head_lr=head_lr, head_milestones=head_milestones
  )
  return c


def get_config(pair: str = "resnet32x4-resnet8x4"):
  teacher, student, _, _, _ = common.parse_pair(pair, PAIRS)
  c = common.recipe(student, teacher)
  sskd_method(c)
  return c
