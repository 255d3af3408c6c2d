"""The CIFAR-100 recipe shared by the RepDistiller-style configs (like big_vision's ``common.py``).

RepDistiller's canonical schedule (methods.md §1; ``train_student.py``): SGD 0.9, wd 5e-4,
batch 64, 240 epochs, lr x0.1 at 150/180/210; lr 0.05, or 0.01 when the student is MobileNetV2,
ShuffleV1 or ShuffleV2 (the silent override in RepDistiller's, zkxufo/TTM's and mdistiller's
``train_student.py``). Checkpoints every 5 epochs of 782 steps. The method block comes from
:func:`kdjax.methods.preset` (or the config itself).
"""

from kdjax.config import base_config

LOW_LR = ("MobileNetV2", "ShuffleV1", "ShuffleV2")
STEPS_PER_EPOCH = 782  # ceil(50000 / 64)


def lr_for(student: str) -> float:
  """RepDistiller's learning rate for ``student`` (0.01 for the LOW_LR students, else 0.05)."""
  return 0.01 if student in LOW_LR else 0.05


def teacher_workdir(teacher: str) -> str:
  """Where ``configs/cifar100/teacher.py:<teacher>`` trains (``runs/cifar100/teacher_<arch>``)."""
  return f"runs/cifar100/teacher_{teacher}"


def parse_pair(pair: str, pairs, where: str = ""):
  """The ``pairs[pair]`` row of a config's ``PAIRS`` table; raises ValueError naming the pairs."""
  if pair not in pairs:
    prefix = f"{where}: " if where else ""
    raise ValueError(f"{prefix}Unknown pair {pair!r}; choose one of {sorted(pairs)}.")
  return pairs[pair]


def recipe(student: str, teacher: str = ""):
  """``base_config()`` with RepDistiller's CIFAR-100 schedule for ``student`` (and the teacher's
  workdir when ``teacher`` is given)."""
  c = base_config()
  c.model = student
  c.dataset.name = "cifar100"
  if teacher:
    c.teacher.workdir = teacher_workdir(teacher)
  c.optim.lr = lr_for(student)
  c.optim.milestones = (150, 180, 210)
  c.num_epochs = 240
  c.checkpoint_every_steps = STEPS_PER_EPOCH * 5
  return c
