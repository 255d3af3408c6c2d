r"""RCO (route-constrained optimisation) on CIFAR-100: KD from a sequence of teacher checkpoints.

Citation: Jin et al., "Knowledge Distillation via Route Constrained Optimization", ICCV 2019 (the
SFTN paper's Table 4 comparison). No public code: a re-derivation (methods.md §7.2 RCO,
unverified: our reading). The student is trained with KD (RepDistiller's KD: CE 0.1, KD 0.9,
T = 4) on the canonical 240-epoch recipe, and the teacher changes along its own training route:
``ANCHORS`` = 4 anchors chosen by the paper's "equal epoch interval" strategy from the teacher
run's kept checkpoints (``configs/cifar100/teacher.py`` keeps epochs 20, 40, ..., 240), the 240
student epochs split into 4 equal segments: epochs 1-60 from the teacher's epoch 60, 61-120 from
120, 121-180 from 180, 181-240 from the final teacher (240). The schedule is
``kdjax.teachers.rco.rco_anchors(kept, num_anchors, total_epochs)``: :func:`schedule`.

``get_config('<pair>')`` sets ``config.teacher.rco`` (``num_anchors = 4``, strategy
``equal_epoch``): the loop (:class:`kdjax.train.distill.DistillTask`) reads the teacher run's
kept epochs, computes this same schedule and runs one main-stage segment per anchor, each with
that anchor's checkpoint (one optimiser and lr schedule throughout; ``summary.json`` lists the
anchors). ``--config.teacher.rco.num_anchors=N`` changes the number of anchors.

Launch::

  python -m launch.distill --config configs/cifar100/rco.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/rco_resnet32x4-resnet8x4

Published numbers: NONE for any pair. RCO has no reference code and no README; the RCO paper's
CIFAR-100 results and SFTN's Table 4 RCO row ("SFTN-4", mission_audit.md A.3) are not in
methods.md or mission_audit.md, so no cell here cites a number.
"""

from configs.cifar100 import common, kd, teacher
from kdjax.methods import apply_preset
from kdjax.teachers import rco

PAIRS = kd.PAIRS
# the anchor schedule, as data: strategy, number of anchors (design decision: 4, methods.md §7.2)
ANCHORS = dict(strategy="equal_epoch", num_anchors=4)
TEACHER_EPOCHS, KEEP_EVERY = 240, 20  # configs/cifar100/teacher.py
PUBLISHED = {}


def kept_epochs():
  """The epochs a ``configs/cifar100/teacher.py`` run keeps (its kept/ checkpoints + final)."""
  t = teacher.get_config("resnet32x4")
  assert (t.num_epochs, t.keep_every_epochs) == (TEACHER_EPOCHS, KEEP_EVERY)
  return tuple(range(KEEP_EVERY, TEACHER_EPOCHS + 1, KEEP_EVERY))


def schedule(total_epochs: int = 240):
  """The RCO :class:`kdjax.teachers.rco.Anchor` segments for a student of ``total_epochs``."""
  return rco.rco_anchors(
    kept_epochs(), ANCHORS["num_anchors"], total_epochs, strategy=ANCHORS["strategy"]
  )


def get_config(pair: str = "resnet32x4-resnet8x4"):
  row = common.parse_pair(pair, PAIRS, "rco")
  t_arch, student = row[0], row[1]
  c = common.recipe(student, t_arch)
  apply_preset(c.method, "kd")
  c.method.name = "rco"
  c.teacher.rco.num_anchors = ANCHORS["num_anchors"]
  c.teacher.rco.strategy = ANCHORS["strategy"]
  return c
