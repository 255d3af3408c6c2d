r"""Table family: checkpoint KD (Wang et al., "Efficient Knowledge Distillation from Model
Checkpoints", NeurIPS 2022): the full teacher vs its intermediate checkpoints vs snapshot
ensembles, as teachers of the same student.

Cells: the teacher (``configs/cifar100/ckd.py:teacher:<arch>``: 200 epochs, a kept checkpoint
every 20), the student alone (the same recipe, CE), then KD (α 0.5, T 5) from the full teacher
(``full``), from every kept epoch (``epoch_<N>``: the curve Algorithm 1 selects on;
``epoch_100`` is the paper's half-way teacher T_inter), from a snapshot ensemble of the half-way
and the final checkpoints (100 + 200, logit mean: ``snapshot``) and the same with the
per-teacher-KL mode (``snapshot_kl_mean``). The ensemble of two
independent full teachers (``ckd.py:<pair>,full_ensemble``) needs a second teacher run and is
not a cell here. Published numbers: NONE (``configs/cifar100/ckd.py``: the paper's Tables 1-3
are not transcribed).

  python -m launch.table --config configs/tables/checkpoint_kd.py:cifar100 --out runs/tables/ckd
  python -m launch.table --config configs/tables/checkpoint_kd.py:fmnist --out runs/tables/ckd_fm

``ARG``: ``cifar100[,PAIR]`` (a key of ``configs/cifar100/ckd.py``'s ``PAIRS``, default
wrn_40_2-wrn_40_1), ``fmnist`` (teacher kept every 3 of its 15 epochs; half-way = epoch 6) or
``fmnist,tiny`` (a 2-epoch teacher keeping epoch 1).
"""

from configs.cifar100 import ckd
from configs.tables import common

FMNIST_KEEP = 3


def _student(pair: str):
  c = ckd.get_config(pair)
  c.method = ckd.recipe(c.model).method  # CE alone
  c.teacher.workdir = ""
  return c


def get_config(arg: str = "cifar100"):
  setting, pair, tiny = common.parse(arg, ckd.PAIRS, "wrn_40_2-wrn_40_1", "tables/checkpoint_kd")
  teacher, _ = ckd.PAIRS[pair]
  cifar = setting == "cifar100"
  kept = ckd.KEPT if cifar else tuple(range(FMNIST_KEEP, common.FMNIST_TEACHER_EPOCHS, FMNIST_KEEP))
  last = ckd.EPOCHS if cifar else common.FMNIST_TEACHER_EPOCHS
  if tiny:  # a 2-epoch teacher keeping epoch 1
    kept, last = (1,), 2
  mid = max(e for e in kept if e <= last // 2)  # the half-way teacher (T_inter)
  if cifar:
    t_cell = common.cell(
      ckd.get_config(f"teacher:{teacher}"), label=f"teacher {teacher}", seeds=(0,)
    )
  else:
    t_cell = common.fmnist_teacher_cell(keep_every=FMNIST_KEEP)
  srcs = {"full": (ckd.get_config(pair), "full teacher")}
  for e in kept:
    c = ckd.get_config(pair)
    c.teacher.which = f"epoch:{e}"
    srcs[f"epoch_{e}"] = (c, f"teacher epoch {e}")
  for key, suffix in (("snapshot", ""), ("snapshot_kl_mean", ",kl_mean")):
    c = ckd.get_config(f"{pair},snapshot:{ckd.KEPT[0]}+{ckd.KEPT[1]}{suffix}")
    c.teacher.members = (f"@epoch:{mid}", "@final")  # the teacher cell's checkpoints
    srcs[key] = (c, f"snapshot {mid}+{last}" + (" (per-teacher KL)" if suffix else ""))
  cells = {"teacher": t_cell}
  if cifar:
    cells["student"] = common.cell(_student(pair), label="student alone")
    for k, (c, label) in srcs.items():
      cells[k] = common.cell(c, label=label, teacher_cell="teacher")
    return common.family(f"checkpoint_kd_{pair}", f"CIFAR-100 {pair}, CheckpointKD's recipe", cells)
  cells["student"] = common.fmnist_student_cell()
  for k, (c, label) in srcs.items():
    cells[k] = common.fmnist_distill_cell(c, label)
  fam = common.family("checkpoint_kd_fmnist", common.FMNIST_SETTING, cells, tiny=tiny)
  if tiny:
    t = fam.cells.teacher.run
    t.num_epochs = t.optim.epochs = last
    t.keep_every_epochs = 1
  return fam
