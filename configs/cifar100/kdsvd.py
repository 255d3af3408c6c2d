r"""KDSVD on CIFAR-100: mdistiller's recipe, on its pair and on the same-width RepDistiller pairs.

Citation: Lee, Kim, Song, "Self-supervised Knowledge Distillation Using Singular Value
Decomposition", ECCV 2018 (original TensorFlow code sseung0703/SSKD_SVD; PyTorch
reimplementations HobbitLong/RepDistiller ``distiller_zoo/KDSVD.py`` and megvii-research/mdistiller
``mdistiller/distillers/KDSVD.py``, ``configs/cifar100/kdsvd.yaml``). Loss term ``kdsvd``
(:mod:`kdjax.methods.kdsvd`, loss :mod:`kdjax.losses.kdsvd`)::

  loss = 1.0 · CE + 1.0 · Σ_{l=2..N} Σ_{c,c',j} (G_s^l − G_t^l)²,
  G^l[c, c', j] = exp(−(W^l[c, j] − W^{l−1}[c', j])² / 8)

with ``W^l`` the top ``K = 1`` right singular vector of stage l's ``(H·W, C)`` map (the student's
chosen among its top 4 and sign-aligned to the teacher's), taps ``stage1..N`` (mdistiller
``feats[1:]``; RepDistiller ``feat[1:-1]``). mdistiller's ``CFG.KDSVD``: ``K 1``, CE weight 1,
feature weight 1 (the preset ``kdsvd``). The loss needs equal student and teacher channel counts
at every stage, so only same-width pairs are offered.

Recipe (mdistiller ``kdsvd.yaml`` = ``configs/cifar100/common.py``): SGD 0.9, wd 5e-4, batch 64,
240 epochs, lr 0.05 ×0.1 at 150/180/210.

Launch (``ARG`` is a key of ``PAIRS``)::

  python -m launch.distill --config configs/cifar100/kdsvd.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/kdsvd_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

Published top-1: **no published CIFAR-100 number for any of these pairs**: mdistiller ships the
config (resnet32x4 → resnet8x4) but its README tables print no KDSVD row, RepDistiller
(CRD, ICLR 2020) implements KDSVD but reports no KDSVD number, and the other pairs below are
ours (RepDistiller's pairs whose stage widths match). The CIFAR-100 numbers that exist are for
pairs kdjax does not build: the ECCV paper's own VGG pair (SSKD_SVD ``nets/VGG.py``: a
VGG-16-style teacher of 10 convolutions in 4 blocks, a student of 4; the paper's table was not
available to transcribe here)
and the first author's TF2 benchmark (sseung0703/Knowledge_distillation_via_TF2.0 README:
WResNet40-4 → WResNet16-4, KD_SVD 76.85 top-1, mean of five runs, teacher 77.80, student 76.37;
its own recipe and a 1×1-conv+BN connector, and kdjax registers no wrn_40_4 / wrn_16_4).

  pair                   published
  resnet32x4-resnet8x4   none (mdistiller's kdsvd.yaml pair)
  resnet56-resnet20      none
  resnet110-resnet32     none
  resnet110-resnet20     none
  wrn_40_2-wrn_16_2      none
  vgg13-vgg8             none

Runtime: 240 × 782 steps per run plus a batched SVD of every stage map of both networks per step;
use a GPU.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset

# pair -> (teacher, student, published top-1 or None)
PAIRS = {
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", None),
  "resnet56-resnet20": ("resnet56", "resnet20", None),
  "resnet110-resnet32": ("resnet110", "resnet32", None),
  "resnet110-resnet20": ("resnet110", "resnet20", None),
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2", None),
  "vgg13-vgg8": ("vgg13", "vgg8", None),
}


def get_config(arg: str = "resnet32x4-resnet8x4"):
  """KDSVD (CE 1 + 1 · kdsvd(K = 1) over all stages) on the pair ``arg`` (a key of ``PAIRS``),
  with mdistiller's / RepDistiller's CIFAR-100 recipe; see the module docstring for the citation,
  the launch command and the published numbers (none for these pairs)."""
  teacher, student, _ = common.parse_pair(arg, PAIRS, "kdsvd")
  c = common.recipe(student, teacher)
  apply_preset(c.method, "kdsvd")
  return c
