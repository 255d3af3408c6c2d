r"""KD + DOT (Distillation-Oriented Trainer) on CIFAR-100, the three pairs of mdistiller's README.

Citation: Zhao, Cui, Song, Liang. "DOT: A Distillation-Oriented Trainer", ICCV 2023
(arXiv:2307.08436; megvii-research/mdistiller ``configs/cifar100/dot/{res32x4_res8x4,vgg13_vgg8,
res32x4_shuv2}.yaml``, ``SOLVER.TRAINER: dot``, ``mdistiller/engine/dot.py``). DOT keeps KD's
loss, ``0.1 · CE + 0.9 · KD(T = 4)`` (``DISTILLER.TYPE: KD`` with ``CFG.KD``'s defaults; preset
``dot``, :mod:`kdjax.methods.dot`), and changes the optimiser (``optim.name = 'dot'``,
:func:`kdjax.train.optim.dot_sgd`): separate momentum buffers for the CE gradient (momentum
β − Δ, plus the weight decay) and the KD gradient (β + Δ), β = 0.9, Δ = ``optim.dot_delta`` =
0.075 (``SOLVER.DOT.DELTA``). Recipe (the yaml files): batch 64, 240 epochs, lr ×0.1 at
150/180/210, wd 5e-4, lr 0.05 (0.01 for ShuffleV2).

Launch (``PAIR`` a key of ``PAIRS``)::

  python -m launch.distill --config configs/cifar100/dot.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/dot_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

``--config.optim.name=sgd`` runs the same config as the KD baseline (the gradient groups only
matter to DOT; the step is then plain KD's, bit for bit).

Published top-1 (mdistiller README, "Main Benchmark Results"; KD is the README's baseline row):

  pair                     KD     KD+DOT
  resnet32x4-resnet8x4     73.33  75.12
  vgg13-vgg8               72.98  73.77
  resnet32x4-ShuffleV2     74.45  75.55

(The README's Tiny-ImageNet and ImageNet rows -- R18→MobileNetV2 64.01, R18→ShuffleV2 65.75;
R34→R18 71.72 and R50→MobileNetV1 73.09 with Δ 0.09, lr 0.2, batch 512, 100 epochs -- have no
config here.) Runtime: 240 × 782 steps per run, two backward passes per step; use a GPU.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset

DELTA = 0.075  # mdistiller SOLVER.DOT.DELTA (CIFAR-100 yaml files)

# pair -> (teacher, student, published KD top-1, published KD+DOT top-1)
PAIRS = {
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 73.33, 75.12),
  "vgg13-vgg8": ("vgg13", "vgg8", 72.98, 73.77),
  "resnet32x4-ShuffleV2": ("resnet32x4", "ShuffleV2", 74.45, 75.55),
}


def get_config(pair: str = "resnet32x4-resnet8x4"):
  teacher, student, _, _ = common.parse_pair(pair, PAIRS, "dot")
  c = common.recipe(student, teacher)
  apply_preset(c.method, "dot")
  c.optim.name = "dot"
  c.optim.momentum = 0.9
  c.optim.dot_delta = DELTA
  c.optim.weight_decay = 5e-4
  return c
