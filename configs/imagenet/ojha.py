r"""Ojha et al.'s ImageNet ResNet-50 -> ResNet-18 setting: the independent student and the KL,
Hint and CRD students whose implicit properties the paper compares.

Citation: Ojha, Li, Sankaranarayanan, Goldstein, Lee. "What Knowledge Gets Distilled in Knowledge
Distillation?", NeurIPS 2023 (§3, Table 5; loss weights of its App. table, methods.md §6.2).
Every loss is added to ``γ·CE``:

* ``kl``: ``γ·CE + α·L_KL``, ``L_KL = −τ² Σ_j σ_j(z_t/τ) log σ_j(z_s/τ)`` (the cross-entropy
  form), γ 0.5, α 0.5, τ 4; term ``kl`` with ``form='cross_entropy'``.
* ``hint``: ``γ·CE + β·L_Hint`` after the second stage (28x28: ResNet-50 512 channels, ResNet-18
  128), regressor = kdjax's ConvReg (conv + BN + ReLU), γ 1, β 5; term ``fitnet`` with
  ``hint_layer=2``. The paper writes ``½‖f_t − r(f_s)‖²``; ``fitnet`` is the per-element mean of
  squares (RepDistiller's ``HintLoss``), so β 5 here is our reading (design decision: a ½·sum
  over the 28x28x512 map would multiply the term by 200,704).
* ``crd``: ``γ·CE + β·L_CRD`` on the penultimate (pooled) features, γ 1, β 0.8, τ 0.07,
  N 16384 negatives (term ``crd``, RepDistiller's memory banks over the 1.28M training images).
* ``independent``: the ResNet-18 trained alone (cross-entropy only), 90 epochs.

Schedule: "the official PyTorch ImageNet recipe": independent students 90 epochs, distilled
students 100 epochs; lr 0.1 at batch 256, momentum 0.9, wd 1e-4, x0.1 every 30 epochs (the exact
optimizer values are a design decision, methods.md §6.2 / §9 item 5). The paper trains two
student seeds per setting (``--config.seed 0`` and ``1``).

Launch (``CELL`` is ``method:resnet50-resnet18``)::

  python -m launch.import_teacher --arch resnet50_imagenet --pth resnet50-0676ba61.pth \
      --workdir runs/imagenet/teacher_resnet50 --dataset imagenet2012
  python -m launch.distill --config configs/imagenet/ojha.py:kl:resnet50-resnet18 \
      --workdir runs/imagenet/ojha_kl_resnet50-resnet18_s0 --config.seed 0 \
      --config.dataset.data_dir ~/tensorflow_datasets
  python -m launch.train_teacher --config configs/imagenet/ojha.py:independent:resnet50-resnet18 \
      --workdir runs/imagenet/ojha_independent_resnet18_s0 --config.seed 0

Published top-1 (%), ImageNet val (paper Table 5; teacher ResNet-50 76.13):

  cell                            top-1
  independent:resnet50-resnet18   70.04
  kl:resnet50-resnet18            70.98
  hint:resnet50-resnet18          70.56
  crd:resnet50-resnet18           70.73

Runtime: 90-100 x 5005 steps; use GPUs.
"""

from configs.imagenet import common
from kdjax.methods import apply_preset

PAIR = "resnet50-resnet18"
CELLS = {
  ("independent", PAIR): 70.04,
  ("kl", PAIR): 70.98,
  ("hint", PAIR): 70.56,
  ("crd", PAIR): 70.73,
}
TEACHER_TOP1 = 76.13


def get_config(cell: str = "kl:resnet50-resnet18"):
  method, teacher, student, _ = common.parse(cell, CELLS, "configs/imagenet/ojha.py")
  if method == "independent":
    return common.recipe(student, "", "pytorch_example")  # 90 epochs, CE only
  c = common.recipe(student, teacher, "pytorch_example", epochs=100)
  m = c.method
  if method == "kl":
    m.name, m.ce_weight = "kl", 0.5
    m.terms.kl = dict(
      weight=0.5,
      teacher_temperature=4.0,
      student_temperature=4.0,
      t2_scale=True,
      form="cross_entropy",
    )
  elif method == "hint":
    m.name, m.ce_weight = "fitnet", 1.0
    m.terms.fitnet = dict(weight=5.0, hint_layer=2)
  else:
    apply_preset(m, "crd")  # γ 1, β 0.8, τ 0.07, N 16384
  return c
