r"""KD on Tiny-ImageNet (200 classes, 64x64) with mdistiller's Tiny-ImageNet recipe.

Citation: Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015; recipe of
megvii-research/mdistiller ``configs/tiny_imagenet/dot/r18_shuv2.yaml`` (the KD baseline row of
its DOT table, Zhao et al., "DOT: A Distillation-Oriented Trainer", ICCV 2023) with mdistiller's
KD defaults (``mdistiller/engine/cfg.py``): ``0.1·CE + 0.9·T²·KL``, T 4; batch 256, SGD lr 0.2,
momentum 0.9, wd 5e-4, 200 epochs, x0.1 at 60/120/160. Data: ``kdjax.data.tiny_imagenet`` (the
original ``tiny-imagenet-200`` folder; train 100,000, validation 10,000).

Differences from mdistiller, stated: mdistiller augments with RandomRotation(20) + flip and no
crop; kdjax has no rotation augmentation, so this config uses flip only (``crop_pad`` 0).
mdistiller's teacher ``ResNet18`` is RepDistiller's ``resnetv2.ResNet18`` (CIFAR stem, BasicBlock
[2, 2, 2, 2]), which kdjax does not have yet; its ``MobileNetV2`` is a full-width Tiny-ImageNet
variant (``mv2_tinyimagenet.py``), not kdjax's ``MobileNetV2`` (RepDistiller's x0.5). So the
published pair ``ResNet18-ShuffleV2`` is listed but raises until ``ResNet18`` is registered, and
the runnable pair ``ResNet50-ShuffleV2`` (RepDistiller's CIFAR ResNet50 as teacher) has no
published number.

Launch (``PAIR`` is a key of ``PAIRS``; the teacher is trained first on the same data)::

  python -m launch.train_teacher --config configs/tiny_imagenet/kd.py:teacher:ResNet50 \
      --workdir runs/tiny_imagenet/teacher_ResNet50 \
      --config.dataset.data_dir ~/data     # holds tiny-imagenet-200/
  python -m launch.distill --config configs/tiny_imagenet/kd.py:ResNet50-ShuffleV2 \
      --workdir runs/tiny_imagenet/kd_ResNet50-ShuffleV2 \
      --config.dataset.data_dir ~/data

Published KD top-1 (%), Tiny-ImageNet validation (mdistiller README, DOT table, KD row):

  pair                 KD top-1
  ResNet18-ShuffleV2   62.26
  ResNet50-ShuffleV2   --        (no published number)

Runtime: 200 x 391 steps; use a GPU.
"""

from kdjax import models
from kdjax.config import base_config
from kdjax.errors import UserError
from kdjax.methods import apply_preset

# pair -> (teacher, student, published KD top-1 or None)
PAIRS = {
  "ResNet18-ShuffleV2": ("ResNet18", "ShuffleV2", 62.26),
  "ResNet50-ShuffleV2": ("ResNet50", "ShuffleV2", None),
}


def recipe(arch: str):
  c = base_config()
  c.model = arch
  c.dataset.name = "tiny_imagenet"
  c.dataset.crop_pad = 0  # mdistiller: RandomRotation(20) + flip, no crop; no rotation
  c.dataset.flip = True
  c.batch_size = 256
  c.eval_batch_size = 500
  o = c.optim
  o.lr, o.momentum, o.weight_decay = 0.2, 0.9, 5e-4
  o.schedule, o.milestones, o.reference_batch_size = "multistep", (60, 120, 160), 256
  c.num_epochs = 200
  c.keep_every_epochs = 20
  return c


def get_config(arg: str = "ResNet50-ShuffleV2"):
  if arg.startswith("teacher:"):
    return recipe(arg[len("teacher:") :])
  if arg not in PAIRS:
    raise ValueError(
      f"configs/tiny_imagenet/kd.py: unknown pair {arg!r}; choose one of "
      f"{sorted(PAIRS)} or 'teacher:<arch>'."
    )
  teacher, student, _ = PAIRS[arg]
  if teacher not in models.names():
    raise UserError(
      f"configs/tiny_imagenet/kd.py:{arg}: the teacher {teacher!r} (RepDistiller's "
      "resnetv2.ResNet18) is not a registered kdjax model yet; use "
      "'ResNet50-ShuffleV2'."
    )
  c = recipe(student)
  c.teacher.workdir = f"runs/tiny_imagenet/teacher_{teacher}"
  apply_preset(c.method, "kd")  # 0.1·CE + 0.9·KD, T 4 (mdistiller defaults)
  return c
