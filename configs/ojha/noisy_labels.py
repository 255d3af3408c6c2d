r"""The teacher-free noisy-soft-label control of Ojha et al. (NeurIPS 2023, App. 11.2).

Citation: Ojha, Li, Sundara Rajan, Liang, Lee. "What Knowledge Gets Distilled in Knowledge
Distillation?", NeurIPS 2023 (arXiv 2205.16004), App. 11.2: a student trained on soft labels
``softmax((one-hot + N(0, 0.2)) / 0.15)`` instead of a teacher's outputs gains only marginally,
so the transferred properties come from the teacher, not from soft labels as such. Term
``noisy_labels`` (:mod:`kdjax.methods.noisy_labels`), preset ``noisy_labels``: CE 0.5 + 0.5 x the
paper's cross-entropy-form L_KL against the soft labels (the R50 -> R18 KL weights; design
decision), student temperature 1 (design decision), one fixed noise draw per training image.

Cells (``ARG``): ``imagenet`` (ResNet18, the distilled students' 100-epoch torchvision recipe of
methods.md §6.2, design decision for the optimizer) and ``fashion_mnist[,quick]`` (the offline
stand-in of ``configs/fashion_mnist.py``, not a paper setting). No teacher is loaded.

Launch::

  python -m launch.distill --config configs/ojha/noisy_labels.py:imagenet \
      --workdir runs/ojha/r18_noisy_labels

Published: the appendix reports "marginal" gains without a table number methods.md records.
"""

from configs import quickstart
from configs.ojha import jitter_teacher
from kdjax.methods import apply_preset


def get_config(arg: str = "imagenet"):
  role, _, size = arg.partition(",")
  if role == "imagenet":
    c = jitter_teacher.imagenet_teacher("resnet18_imagenet")
    c.num_epochs = 100
  elif role == "fashion_mnist":
    c = quickstart.apply_size(quickstart.get_config().student, size, "configs/ojha/noisy_labels.py")
  else:
    raise ValueError(
      f"configs/ojha/noisy_labels.py: unknown cell {arg!r}; use imagenet or fashion_mnist[,quick]."
    )
  apply_preset(c.method, "noisy_labels")
  return c
