r"""SFTN stage 1 (student-aware teacher training) with the paper's learning rate for ShuffleNet
pairs.

Citation: Park et al., "Learning Student-Friendly Teacher Networks for Knowledge Distillation",
NeurIPS 2021: "the learning rate is 0.01 in the ShuffleNet experiments" (mission_audit A.3).
``configs/sftn.py`` follows kimyuji/SFTN_kd (unofficial), which trains every pair at lr 0.05; this
config is ``configs/sftn.py:<pair>`` (same loss λ_T 1, λ_R^CE 1, λ_R^KL 3, τ 1; same 240-epoch
schedule x0.1 at 150/180/210, batch 64) with **lr 0.01 when the branch student is ShuffleV1 or
ShuffleV2**, as the paper says, and 0.05 otherwise.

Unknown-student setting: train the teacher here with the branches of student A, export it, then
distil into another student B with ``configs/cifar100/sftn_stage2.py:<method>:<teacher>-<B>,branch:<A>``.

Launch::

  python -m launch.train_teacher --config configs/cifar100/sftn_stage1.py:resnet32x4-ShuffleV2 \
      --workdir runs/cifar100/sftn_resnet32x4-ShuffleV2
  python -m launch.export_teacher --workdir runs/cifar100/sftn_resnet32x4-ShuffleV2 \
      --out runs/cifar100/sftn_teacher_resnet32x4-ShuffleV2

Published numbers: NONE for any pair. SFTN has no official code or README; its teacher
accuracies (and Tables 1-3 per pair) are not in methods.md or mission_audit.md (methods.md §4.4:
still to be copied from the paper's PDF). Orientation only, not a paper number: the SFTN teacher
is expected below the standard one (unofficial kimyuji/SFTN_kd logs: resnet32x4 77.96 / 78.40 at
epoch 240 vs RepDistiller's standard 79.42)."""

from configs import sftn

PAIRS = sftn.PAIRS
SHUFFLENETS = ("ShuffleV1", "ShuffleV2")
PUBLISHED = {}


def lr_for(student: str) -> float:
  return 0.01 if student in SHUFFLENETS else 0.05


def get_config(pair: str = "resnet32x4-ShuffleV1"):
  c = sftn.get_config(pair)
  _, student = PAIRS[pair]
  c.optim.lr = lr_for(student)
  return c
