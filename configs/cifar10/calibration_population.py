r"""Calibration-and-KD teacher population and students on **CIFAR-10** (10 classes).

Citation: Fan et al., "Revisit the Essence of Distilling Knowledge through Calibration", ICML 2024
(CIFAR-10 is one of the paper's datasets; methods.md §2). Same arguments, schedules, losses and
caveats as ``configs/cifar100/calibration_population.py`` with ``dataset.name = 'cifar10'`` (TFDS
``cifar10``, or the binary tarball ``cifar-10-binary.tar.gz``; kdjax/data/registry.py) and
workdirs under ``runs/cifar10/``. Every ranking loss is a **CANDIDATE**. The teachers hold 5,000
training examples out (``dataset.val_examples``) for the temperature-scaled control; τ = 1.8 is
the paper's CIFAR-100 value, used here too (the CIFAR-10 τ is not known to us: design decision).

Launch::

  python -m launch.train_teacher \
      --config configs/cifar10/calibration_population.py:teacher:resnet56,full \
      --workdir runs/cifar10/calib_teacher_resnet56_full
  python -m launch.distill \
      --config configs/cifar10/calibration_population.py:resnet20,kl,resnet56,full \
      --workdir runs/cifar10/calib_kl_resnet56_full-resnet20
  python -m launch.calibration_study \
      --config configs/cifar10/calibration_population.py:resnet20,kl,resnet56,full \
      --teachers runs/cifar10/calib_teacher_resnet56_full,runs/cifar10/calib_teacher_resnet56_short100 \
      --out runs/cifar10/calib_study --temperature_scaled

Published numbers: NONE. The paper reports CIFAR-10 results (its Table 1), which have not been
transcribed (methods.md §2.5); no cell here claims a paper number.
"""

from configs.cifar100 import calibration_population as pop

CAPACITY, SCHEDULES, LOSSES, STUDENTS = pop.CAPACITY, pop.SCHEDULES, pop.LOSSES, pop.STUDENTS
DATASET = "cifar10"
PUBLISHED = {}


def get_config(arg: str = "teacher:resnet56,full"):
  return pop.get_config(arg, dataset=DATASET)
