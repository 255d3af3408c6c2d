r"""Checkpoint KD on CIFAR-100: the paper's teacher and student recipe, intermediate and ensemble
teachers.

Citation: Wang, Yang, Huang, Song, Huang et al., "Efficient Knowledge Distillation from Model
Checkpoints", NeurIPS 2022 (LeapLabTHU/CheckpointKD, "Don't Throw Your Model Checkpoints Away";
``args.py``, ``teacher.py``, ``student.py``; methods.md §5).

Recipe (teacher and student alike, ``args.py`` defaults): 200 epochs, batch 128, SGD **Nesterov**
momentum 0.9, wd 5e-4, lr 0.1 x0.1 every 60 epochs (``StepLR(step_size=60, gamma=0.1)``: 60, 120,
180), RandomCrop(32, 4) + flip. Teachers keep a checkpoint every 20 epochs (``--epo 20``):
epochs 20, 40, ..., 180 are ``kept/``, the full teacher is epoch 200 (``final``). Student loss
(``student.py``): ``α·CE + (1−α)·T²·KL_batchmean(softmax(z̄_t/T) ‖ softmax(z_s/T))`` with the code
defaults **T = 5, α = 0.5** (CE weight 0.5, ``kd`` weight 0.5); the per-pair α/T the paper
searched are not published in the code (unverified).

Argument:
  ``teacher:<arch>``                 train a teacher (wrn_40_2, resnet110) with kept checkpoints.
  ``<pair>``                         KD from the full teacher (epoch 200, ``T_full``).
  ``<pair>,inter``                   KD from the half-way checkpoint, epoch 100 (``T_inter``).
  ``<pair>,epoch:N``                 KD from the kept checkpoint of epoch N (N in 20..180).
  ``<pair>,snapshot:E1+E2[+...]``    snapshot ensemble of the kept epochs E1, E2, ... (logits
                                     averaged, ``--avg_teacher``; ``teacher.ensemble_mode
                                     ='logit_mean'``).
  ``<pair>,full_ensemble``           ensemble of 2 independently trained full teachers (the second
                                     trained with ``--config.seed=1`` into ``<workdir>_seed1``).
  append ``,kl_mean`` to an ensemble: the per-teacher-KL mode (mean over members of
  ``T²·KL(p_m^T ‖ p_s^T)``, term ``ensemble_kd`` of ``kdjax/methods/ckd.py``, the code's
  non-``avg_teacher`` branch) instead of KD to the mean logits.
``<pair>`` is ``teacher-student`` from ``PAIRS``: the README's teachers (wrn_40_2, resnet110) and
students (wrn_40_1, resnet32, mobilenetv2_075); which teacher taught which student is our reading
(the paper's Table 1 pairs are not transcribed).

Launch::

  python -m launch.train_teacher --config configs/cifar100/ckd.py:teacher:wrn_40_2 \
      --workdir runs/cifar100/ckd_teacher_wrn_40_2
  python -m launch.distill --config configs/cifar100/ckd.py:wrn_40_2-wrn_40_1,inter \
      --workdir runs/cifar100/ckd_wrn_40_2-wrn_40_1_inter

Published numbers: NONE for any cell. The official README (LeapLabTHU/CheckpointKD ``README.md``,
checked) prints no result table, only the commands above; the paper's Tables 1-3 (full vs
intermediate teacher, full vs snapshot ensemble, Algorithm 1's selection) are not in methods.md
or mission_audit.md (methods.md §5.5: still to be copied from the paper's PDF), so no cell cites
a number. Orientation only (unverified: our reading): intermediate over full teachers +0.15 to
+0.96 points, snapshot over full ensembles about +0.52 points.
"""

from configs.cifar100 import common
from kdjax.config import base_config

TEACHERS = ("wrn_40_2", "resnet110")
# pair -> (teacher, student)
PAIRS = {
  "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1"),
  "resnet110-resnet32": ("resnet110", "resnet32"),
  "wrn_40_2-mobilenetv2_075": ("wrn_40_2", "mobilenetv2_075"),
  "resnet110-mobilenetv2_075": ("resnet110", "mobilenetv2_075"),
}
EPOCHS, BATCH, KEEP_EVERY = 200, 128, 20
KEPT = tuple(range(KEEP_EVERY, EPOCHS, KEEP_EVERY))  # 20..180; 200 is the full teacher
TEMPERATURE, ALPHA = 5.0, 0.5
PUBLISHED = {}  # none: no source at hand prints a number (docstring)


def teacher_workdir(arch: str) -> str:
  return f"runs/cifar100/ckd_teacher_{arch}"


def recipe(model: str):
  """base_config() with CheckpointKD's schedule (teacher and student)."""
  c = base_config()
  c.model = model
  c.dataset.name = "cifar100"
  c.batch_size = BATCH
  c.num_epochs = EPOCHS
  o = c.optim
  o.lr, o.momentum, o.nesterov, o.weight_decay = 0.1, 0.9, True, 5e-4
  o.schedule, o.step_epochs, o.decay = "step", 60, 0.1
  o.epochs = EPOCHS
  o.reference_batch_size = BATCH
  c.checkpoint_every_steps = -(-50000 // BATCH) * 5
  return c


def _epoch(spec: str, where: str) -> int:
  try:
    e = int(spec)
  except ValueError:
    e = -1
  if e not in KEPT:
    raise ValueError(
      f"{where}: kept teacher epochs are {list(KEPT)} (200 is the full teacher: "
      f"omit the teacher option), got {spec!r}."
    )
  return e


def get_config(arg: str = "wrn_40_2-wrn_40_1"):
  arg = str(arg)
  if arg.startswith("teacher:"):
    arch = arg.partition(":")[2]
    if arch not in TEACHERS:
      raise ValueError(f"ckd: unknown teacher {arch!r}; choose one of {list(TEACHERS)}.")
    c = recipe(arch)
    c.keep_every_epochs = KEEP_EVERY
    return c
  parts = [p.strip() for p in arg.split(",")]
  teacher, student = common.parse_pair(parts[0], PAIRS, "ckd")
  opts = parts[1:]
  kl_mean = "kl_mean" in opts
  opts = [o for o in opts if o != "kl_mean"]
  if len(opts) > 1:
    raise ValueError(
      f"ckd: give at most one teacher option (inter, epoch:N, snapshot:E1+E2, "
      f"full_ensemble) plus kl_mean, got {arg!r}."
    )
  which = opts[0] if opts else "full"
  c = recipe(student)
  wd = teacher_workdir(teacher)
  c.teacher.workdir = wd
  members = ()
  if which == "full":
    c.teacher.which = "final"
  elif which == "inter":
    c.teacher.which = f"epoch:{EPOCHS // 2}"
  elif which.startswith("epoch:"):
    c.teacher.which = f"epoch:{_epoch(which[6:], 'ckd')}"
  elif which.startswith("snapshot:"):
    epochs = [_epoch(e, "ckd snapshot") for e in which[9:].split("+")]
    if len(epochs) < 2 or len(set(epochs)) != len(epochs):
      raise ValueError(f"ckd: a snapshot ensemble needs >= 2 distinct kept epochs, got {which!r}.")
    members = tuple(f"{wd}@epoch:{e}" for e in epochs)
  elif which == "full_ensemble":
    members = (f"{wd}@final", f"{wd}_seed1@final")
  else:
    raise ValueError(
      f"ckd: unknown teacher option {which!r}; use inter, epoch:N, "
      f"snapshot:E1+E2, full_ensemble (and kl_mean)."
    )
  if kl_mean and not members:
    raise ValueError(
      "ckd: kl_mean averages per-teacher KLs and needs an ensemble "
      "(snapshot:E1+E2 or full_ensemble)."
    )
  c.teacher.members = members
  c.teacher.ensemble_mode = "logit_mean"
  c.method.name = "ckd_kl_mean" if kl_mean else "ckd"
  c.method.ce_weight = ALPHA
  if kl_mean:
    c.method.terms.ensemble_kd = dict(weight=1.0 - ALPHA, temperature=TEMPERATURE)
  else:
    c.method.terms.kd = dict(weight=1.0 - ALPHA, temperature=TEMPERATURE, t2_scale=True)
  return c
