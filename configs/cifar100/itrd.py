r"""ITRD alone on CIFAR-100 for the 13 RepDistiller pairs (the "ITRD" row of the TTM paper).

Citation: Miles, Lopez-Rodriguez, Mikolajczyk, "Information Theoretic Representation
Distillation", BMVC 2022 (roymiles/ITRD ``train_student.py``; the loss as zkxufo/TTM
``distiller_zoo/itrd.py``, kdjax ``kdjax.losses.itrd``). ``loss = CE + 1·(λ_corr·L_corr +
λ_mi·L_mi)`` on the ``pooled`` features (``feat[-1]`` of a ``preact=True`` forward, the same
tensor), the student mapped by a trainable Linear(s_dim -> t_dim) embed; λ_corr = 2, λ_mi = 0 for
ResNet50-MobileNetV2, ResNet50-vgg8 and wrn_40_2-ShuffleV1 (1 otherwise), α_it = 1.01 for
same-architecture pairs and 1.5 for different-architecture pairs (TTM paper Appendix A.5,
methods.md §3.2). Reference command per pair::

  python train_student.py --path_t ./save/models/TEACHER_vanilla/ckpt_epoch_240.pth \
      --model_s STUDENT -r 1.0 -b 1.0 --lambda_corr 2.0 --lambda_mutual LAMBDA_MI \
      --alpha_it ALPHA_IT
  (zkxufo/TTM: --distill itrd -r 1 -a 0 -b 1 with the same three ITRD flags)

This is ``configs/cifar100/wttm_itrd.py:itrd:PAIR`` (same schedule, teacher paths, embed and
hyper-parameters; canonical 240-epoch recipe, lr 0.01 for MobileNetV2/ShuffleNet students). Known
deviation: with a WRN student the reference's ``preact=True`` forward updates three BNs' running
statistics twice per step (anchors.md §4.2); kdjax runs each BN once.

Launch::

  python -m launch.distill --config configs/cifar100/itrd.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/itrd_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

Published top-1: the TTM paper's Tables 1/3 (methods.md §3.5, anchors.md §5.4, "as cited"); the
roymiles/ITRD README prints five cells differently (last column, "=" where equal):

  pair                     λ_mi  α_it   ITRD top-1   roymiles/ITRD README
  wrn_40_2-wrn_16_2        1     1.01   76.12        =
  wrn_40_2-wrn_40_1        1     1.01   75.18        =
  resnet56-resnet20        1     1.01   71.47        =
  resnet110-resnet20       1     1.01   71.99        =
  resnet110-resnet32       1     1.01   74.26        =
  resnet32x4-resnet8x4     1     1.01   76.19        76.69
  vgg13-vgg8               1     1.01   74.93        =
  vgg13-MobileNetV2        1     1.5    70.39        =
  ResNet50-MobileNetV2     0     1.5    71.41        71.34
  ResNet50-vgg8            0     1.5    75.71        75.49
  resnet32x4-ShuffleV1     1     1.5    76.91        76.69
  resnet32x4-ShuffleV2     1     1.5    77.40        =
  wrn_40_2-ShuffleV1       0     1.5    77.35        77.09

Runtime: 240 x 782 steps per run; use a GPU.
"""

from configs.cifar100 import wttm_itrd

PAIRS = {pair: v[3] for pair, v in wttm_itrd.PAIRS.items()}  # pair -> published ITRD top-1
README_ITRD = {
  "resnet32x4-resnet8x4": 76.69,
  "ResNet50-MobileNetV2": 71.34,
  "ResNet50-vgg8": 75.49,
  "resnet32x4-ShuffleV1": 76.69,
  "wrn_40_2-ShuffleV1": 77.09,
}


def get_config(pair: str = "resnet32x4-resnet8x4"):
  if pair not in PAIRS:
    raise ValueError(f"Unknown pair {pair!r}; choose one of {sorted(PAIRS)}.")
  return wttm_itrd.get_config("itrd:" + pair)
