r"""Calibration-and-KD analysis baseline on CIFAR-100: pure-KL KD and its ranking-loss swaps.

Citation: Fan et al., "Revisit the Essence of Distilling Knowledge through Calibration",
ICML 2024 (PMLR v235 ``fan24d``; no code released). methods.md §2.2-§2.4.

Argument ``'<student>,<loss>[,<teacher>]'`` with ``loss`` one of:
  kl                ``α·τ²·KL(p_t^τ ‖ p_s^τ)``, τ = 1.8 on both sides, ``t2_scale=True``
                    (term ``kl``, teacher_temperature = student_temperature = 1.8).
  listmle           ListMLE / Plackett-Luce on the teacher's full class order (candidate 1).
  pairwise_ranking  pairwise logistic ranking loss, τ_r = 1, all pairs (candidate 3).
  pld               teacher-weighted list-wise loss of Bassam et al. 2025, τ_T = 1 (candidate 4).
All variants: α = 1 (term weight) and CE weight 0 (CE excluded). The ranking losses are
candidates for the paper's calibration-insensitive loss, **not verified as the paper's loss**
(its formula is unpublished as code). τ = 1.8, α = 1 / CE 0, τ² scaling and the student
temperature are our reading / design decisions (methods.md §2.2, §9 item 1).

Schedule (unverified: our reading of methods.md §2.4): students 200 epochs, lr 0.03 for every
student (the paper's value; the RepDistiller 0.01 rule for MobileNetV2/ShuffleNets is not
applied). Design decisions: the canonical SGD 0.9, wd 5e-4, batch 64, decay x0.1, with the
canonical 150/180/210-of-240 milestones scaled to 125/150/175 of 200.

Teachers: the analysis sweeps a teacher population (capacity x training length, methods.md
§2.3), so the teacher is chosen per run: give ``<teacher>`` (-> ``runs/cifar100/teacher_<teacher>``)
or pass ``--config.teacher.workdir``; with neither, distillation refuses to start.

Launch::

  python -m launch.distill --config configs/cifar100/calibration_kd.py:resnet8x4,kl \
      --workdir runs/cifar100/calib_kl_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

Published numbers: NONE. The per-teacher ECE values, correlation coefficients and ranking-loss
accuracies have not been transcribed from the PMLR PDF (methods.md §2.5), so no config here
claims a paper number.
"""

from kdjax.config import base_config

# CIFAR model zoo (RepDistiller models/) usable as students.
STUDENTS = (
  "resnet8",
  "resnet14",
  "resnet20",
  "resnet32",
  "resnet44",
  "resnet56",
  "resnet110",
  "resnet8x4",
  "resnet32x4",
  "wrn_16_1",
  "wrn_16_2",
  "wrn_40_1",
  "wrn_40_2",
  "vgg8",
  "vgg11",
  "vgg13",
  "vgg16",
  "vgg19",
  "ResNet50",
  "MobileNetV2",
  "ShuffleV1",
  "ShuffleV2",
)
TAU = 1.8
# loss -> term hyper-parameters (weight α = 1 for all)
LOSSES = {
  "kl": dict(teacher_temperature=TAU, student_temperature=TAU, t2_scale=True),
  "listmle": dict(),  # top_k None: the full order
  "pairwise_ranking": dict(temperature=1.0),  # top_k None: all pairs
  "pld": dict(teacher_temperature=1.0),
}
PUBLISHED = {}  # none transcribed (methods.md §2.5)


def get_config(arg: str = "resnet8x4,kl"):
  parts = [p.strip() for p in str(arg).split(",")]
  if len(parts) not in (2, 3):
    raise ValueError(f"Expected '<student>,<loss>[,<teacher>]', got {arg!r}.")
  student, loss = parts[0], parts[1]
  teacher = parts[2] if len(parts) == 3 else ""
  if student not in STUDENTS:
    raise ValueError(f"Unknown student {student!r}; choose one of {list(STUDENTS)}.")
  if loss not in LOSSES:
    raise ValueError(f"Unknown loss {loss!r}; choose one of {sorted(LOSSES)}.")
  if teacher and teacher not in STUDENTS:
    raise ValueError(f"Unknown teacher {teacher!r}; choose one of {list(STUDENTS)}.")
  c = base_config()
  c.model = student
  c.dataset.name = "cifar100"
  c.teacher.workdir = f"runs/cifar100/teacher_{teacher}" if teacher else ""
  c.method.name = f"calibration_{loss}"
  c.method.ce_weight = 0.0  # CE excluded (α = 1 on the distillation term)
  c.method.terms[loss] = dict(weight=1.0, **LOSSES[loss])
  c.optim.lr = 0.03
  c.optim.milestones = (125, 150, 175)
  c.optim.epochs = 200
  c.num_epochs = 200
  c.checkpoint_every_steps = 782 * 5
  return c
