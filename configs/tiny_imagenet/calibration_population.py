r"""Calibration-and-KD teacher population and students on **Tiny-ImageNet** (200 classes, 64x64).

Citation: Fan et al., "Revisit the Essence of Distilling Knowledge through Calibration", ICML 2024
(Tiny-ImageNet is one of the paper's three datasets; methods.md §2; no code released). Same
arguments, capacity ladder, schedules, losses and caveats as
``configs/cifar100/calibration_population.py`` with ``dataset.name = 'tiny_imagenet'`` (the
original ``tiny-imagenet-200`` folder under ``dataset.data_dir``, :mod:`kdjax.data.tiny_imagenet`;
train 100,000, validation 10,000 = the evaluation split) and workdirs under
``runs/tiny_imagenet/``:

* teachers ``teacher:<arch>,short100|full``: the paper's 100-epoch schedule with the decay after
  epoch 50 (x0.1 at 50/75: the second milestone and the factor are **design decisions**), or the
  canonical 240-epoch one; each holds 10,000 training examples out (``dataset.val_examples``,
  stratified over the 200 classes, ``kdjax/data/holdout.py``) for the temperature-scaled control;
* students ``<student>,<loss>,<arch>,<schedule>``: 200 epochs, lr 0.03, CE weight 0, α = 1;
  ``kl`` with τ = 1.8 (the paper's CIFAR-100 value; its Tiny-ImageNet τ is not known to us) or a
  ranking **CANDIDATE** (the paper's loss formula is unknown).

Design decisions, stated: the CIFAR recipe is kept as is (batch 64, SGD 0.9, wd 5e-4,
RandomCrop(64, padding 4) + flip), not mdistiller's Tiny-ImageNet recipe
(``configs/tiny_imagenet/kd.py``: batch 256, lr 0.2), because the paper quotes one schedule for
all its datasets; the RepDistiller CIFAR networks are used at 64x64 (global average pooling, so
they run unchanged).

Launch::

  python -m launch.train_teacher \
      --config configs/tiny_imagenet/calibration_population.py:teacher:resnet56,short100 \
      --workdir runs/tiny_imagenet/calib_teacher_resnet56_short100 \
      --config.dataset.data_dir ~/data     # holds tiny-imagenet-200/
  python -m launch.distill \
      --config configs/tiny_imagenet/calibration_population.py:resnet20,kl,resnet56,short100 \
      --workdir runs/tiny_imagenet/calib_kl_resnet56_short100-resnet20 \
      --config.dataset.data_dir ~/data
  python -m launch.calibration_study \
      --config configs/tiny_imagenet/calibration_population.py:resnet20,kl,resnet56,short100 \
      --teachers runs/tiny_imagenet/calib_teacher_resnet56_short100,runs/tiny_imagenet/calib_teacher_resnet56_full \
      --out runs/tiny_imagenet/calib_study --temperature_scaled --config.dataset.data_dir ~/data

Published numbers: NONE. The paper reports Tiny-ImageNet results (its Table 1), which have not
been transcribed (methods.md §2.5); no cell here claims a paper number.

Runtime: 1,563 steps per epoch at batch 64 (x100 or x240 for a teacher, x200 for a student); use
a GPU.
"""

from configs.cifar100 import calibration_population as pop

CAPACITY, SCHEDULES, LOSSES, STUDENTS = pop.CAPACITY, pop.SCHEDULES, pop.LOSSES, pop.STUDENTS
DATASET = "tiny_imagenet"
PUBLISHED = {}


def get_config(arg: str = "teacher:resnet56,short100"):
  return pop.get_config(arg, dataset=DATASET)
