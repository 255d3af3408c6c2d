r"""Shared pieces of the paper-table families of ``configs/tables/`` (the table runner's format:
``kdjax/tables.py``).

Every family takes ``get_config('<setting>[,<pair>][,tiny]')``:

* ``cifar100[,PAIR]``: the paper's CIFAR-100 setting (a GPU day): the cells are the configs of
  ``configs/cifar100/`` unchanged, the teacher is trained as the family's first cell with the
  recipe of ``configs/cifar100/teacher.py``, and each cell's published number is read from its
  config's ``PAIRS`` table (the numbers in that config's docstring);
* ``fmnist``: the CPU-sized variant on offline Fashion-MNIST with ``configs/fmnist_converge.py``'s
  settings: teacher resnet14 on all 60,000 training images x 15 epochs, students resnet8 on the
  first 5,000 images x 60 epochs (SGD lr 0.1 cosine, wd 5e-4, batch 128, crop + flip), every
  distilled cell with the method block of its CIFAR-100 cell (same terms, weights and
  hyper-parameters). Epoch counts inside the method (warm-ups, init stages and their milestones)
  are scaled by 60 / 240, and an init stage that ran at the CIFAR main lr runs at the
  Fashion-MNIST main lr (0.1). Fashion-MNIST is in none of the papers' tables: no published
  number;
* ``fmnist,tiny``: the same cells shrunk to a smoke test (``tiny_cnn`` teacher and students, 128
  training and 128 test images, 1 epoch): seconds per cell, for tests only.
"""

import ml_collections

from configs import fmnist_quickstart
from configs.cifar100 import teacher as cifar_teacher

STUDENT_SEEDS = (0, 1, 2)
FMNIST_TEACHER, FMNIST_STUDENT = "resnet14", "resnet8"
FMNIST_TEACHER_EPOCHS, FMNIST_STUDENT_EPOCHS = 15, 60
CIFAR_EPOCHS = 240  # the RepDistiller schedule the method blocks were written for


def parse(arg: str, pairs, default_pair: str, where: str):
  """``'<setting>[,<pair>][,tiny]'`` -> ``(setting, pair, tiny)``; setting 'cifar100' or 'fmnist'."""
  parts = [p.strip() for p in str(arg or "cifar100").split(",") if p.strip()]
  setting, rest = parts[0], parts[1:]
  tiny = "tiny" in rest
  rest = [p for p in rest if p != "tiny"]
  if setting not in ("cifar100", "fmnist") or len(rest) > 1 or (tiny and setting != "fmnist"):
    raise ValueError(
      f"{where}: expected 'cifar100[,PAIR]', 'fmnist' or 'fmnist,tiny', got {arg!r}."
    )
  pair = rest[0] if rest else default_pair
  if pair not in pairs:
    raise ValueError(f"{where}: unknown pair {pair!r}; choose one of {sorted(pairs)}.")
  return setting, pair, tiny


def cell(run, *, label="", teacher_cell="", published=None, source="", seeds=None, **extra):
  """One cell of a family (``kdjax/tables.py``'s cell format)."""
  d = dict(run=run, label=label, teacher_cell=teacher_cell, published_source=source, **extra)
  d["published"] = None if published is None else float(published)
  if seeds is not None:
    d["seeds"] = tuple(seeds)
  return ml_collections.ConfigDict(d)


def family(name: str, setting: str, cells: dict, *, seeds=STUDENT_SEEDS, tiny: bool = False):
  """The family ConfigDict; ``cells`` is an ordered ``{name: cell(...)}`` (teachers first)."""
  f = ml_collections.ConfigDict()
  f.name = name + ("_tiny" if tiny else "")
  f.setting = setting
  f.seeds = tuple(seeds)
  f.order = tuple(cells)
  f.cells = ml_collections.ConfigDict()
  for k, v in cells.items():
    if tiny:
      shrink(v.run)
    f.cells[k] = v
  return f


# ---- CIFAR-100 -----------------------------------------------------------------------------
def cifar_teacher_cell(arch: str, label: str = "teacher"):
  """A teacher trained with ``configs/cifar100/teacher.py:<arch>`` (seed 0)."""
  return cell(
    cifar_teacher.get_config(arch),
    label=f"{label} {arch}",
    published=cifar_teacher.PUBLISHED.get(arch),
    source="configs/cifar100/teacher.py PUBLISHED (RepDistiller README)",
    seeds=(0,),
  )


def cifar_student_cell(arch: str):
  """The student alone (CE), RepDistiller's recipe (``configs/cifar100/teacher.py:<arch>``)."""
  c = cell(
    cifar_teacher.get_config(arch),
    label=f"student {arch} alone",
    published=cifar_teacher.PUBLISHED.get(arch),
    source="configs/cifar100/teacher.py PUBLISHED (RepDistiller README)",
  )
  c.run.keep_every_epochs = 0
  return c


# ---- Fashion-MNIST -------------------------------------------------------------------------
def fmnist_teacher_run(model: str = FMNIST_TEACHER, keep_every: int = 5):
  """``configs/fmnist_converge.py``'s teacher: 60,000 images x 15 epochs, kept every 5."""
  c = fmnist_quickstart.run_config(model, train_limit=0, epochs=FMNIST_TEACHER_EPOCHS, eval_every=1)
  c.keep_every_epochs = keep_every
  c.checkpoint_every_steps = 200
  return c


def fmnist_student_run(model: str = FMNIST_STUDENT):
  """``configs/fmnist_converge.py``'s student: the first 5,000 images x 60 epochs."""
  c = fmnist_quickstart.run_config(
    model, train_limit=5000, epochs=FMNIST_STUDENT_EPOCHS, eval_every=5
  )
  c.checkpoint_every_steps = 200
  return c


def _scale_epochs(n, epochs: int) -> int:
  return max(1, round(n * epochs / CIFAR_EPOCHS)) if n else 0


def transplant(src, dst, *, epochs: int = FMNIST_STUDENT_EPOCHS):
  """``dst`` with the method block (and teacher options) of the CIFAR-100 config ``src``;
  epoch counts inside the method (warm-ups, the init stage) scaled by ``epochs / 240``."""
  dst.method = src.method.copy_and_resolve_references()
  m = dst.method
  for term in m.terms.values():
    if "warmup_epochs" in term:
      term.warmup_epochs = _scale_epochs(term.warmup_epochs, epochs)
  if m.init.epochs:
    if m.init.lr == src.optim.lr:  # RepDistiller: the init stage at the main lr
      m.init.lr = dst.optim.lr
    m.init.epochs = _scale_epochs(m.init.epochs, epochs)
    m.init.milestones = tuple(_scale_epochs(e, epochs) for e in m.init.milestones)
  for k in ("which", "members", "ensemble_mode", "temperature"):
    dst.teacher[k] = src.teacher[k]
  return dst


def fmnist_teacher_cell(label: str = "teacher", **kw):
  return cell(fmnist_teacher_run(**kw), label=label, seeds=(0,))


def fmnist_student_cell():
  return cell(fmnist_student_run(), label="student alone")


def fmnist_distill_cell(src, label: str, teacher_cell: str = "teacher", **extra):
  """A Fashion-MNIST student with the method of the CIFAR-100 cell config ``src``."""
  run = transplant(src, fmnist_student_run())
  return cell(run, label=label, teacher_cell=teacher_cell, **extra)


FMNIST_SETTING = (
  "Fashion-MNIST (configs/fmnist_converge.py): teacher resnet14 on 60,000 images x 15 epochs; "
  "students resnet8 on the first 5,000 images x 60 epochs, the CIFAR-100 cells' method blocks; "
  "same budget and seeds; full 10k test set; no published number (not a paper setting)"
)


def shrink(run):
  """The ``tiny`` size: tiny_cnn (two stages, the model protocol's taps), 128 training / 128
  test images, 1 epoch (a smoke test)."""
  if run.model == "sftn":
    run.model_kwargs.teacher = run.model_kwargs.student = "tiny_cnn"
  else:
    run.model = "tiny_cnn"
  d = run.dataset
  d.train_limit, d.eval_limit = 128, 128
  run.batch_size = 64
  run.eval_batch_size = 128
  run.optim.reference_batch_size = 64
  run.num_epochs = run.optim.epochs = 1
  run.eval_every_epochs = 1
  run.keep_every_epochs = 0
  run.checkpoint_every_steps = 0
  run.async_checkpoint = False
  run.progress = False
  run.tensorboard = False
  if run.method.init.epochs:
    run.method.init.epochs = 1
    run.method.init.milestones = ()
  return run
