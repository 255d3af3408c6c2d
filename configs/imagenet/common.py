"""The ImageNet recipes shared by ``configs/imagenet/*`` (like big_vision's ``common.py``).

Data: ``imagenet2012`` through the streamed host pipeline (``kdjax.data.HostStream``: train
RandomResizedCrop(224) + flip, eval Resize(256) + CenterCrop(224), ImageNet mean/std), prepared
once with ``python -m kdjax.data.prepare imagenet2012 --data_dir DIR``.

Schedules (all SGD momentum 0.9, no Nesterov, lr x0.1 at the milestones):

* ``torchdistill`` — torchdistill's "standard" ImageNet setting (yoshitomo-matsubara/torchdistill
  ``configs/official/ilsvrc2012/yoshitomo-matsubara/rrpr2020/kd-resnet18_from_resnet34.yaml``,
  ``configs/sample/ilsvrc2012/dist/resnet18_from_resnet34.yaml``): batch 256, lr 0.1, wd 1e-4,
  100 epochs, milestones 30/60/90. The TTM paper (ICLR 2024, §5 / App.) trained its ImageNet
  students "with torchdistill's standard settings".
* ``mdistiller_512`` — megvii-research/mdistiller ``configs/imagenet/*/{kd,dkd,at}.yaml``: batch
  512, lr 0.2, wd 1e-4, 100 epochs, milestones 30/60/90.
* ``mdistiller_256`` — mdistiller ``configs/imagenet/*/{crd,reviewkd}.yaml``: batch 256, lr 0.1
  (otherwise as above).
* ``pytorch_example`` — the PyTorch ImageNet example (pytorch/examples ``imagenet/main.py``):
  batch 256, lr 0.1, wd 1e-4, 90 epochs, lr x0.1 every 30 epochs (SFTN's stated ImageNet setup;
  Ojha et al.'s, with 100 epochs for distilled students: design decision, methods.md §6.2).

Teachers are torchvision's pretrained weights imported once with ``launch/import_teacher.py``
into ``runs/imagenet/teacher_<arch>`` (:func:`teacher_workdir`), e.g.::

  python -m launch.import_teacher --arch resnet34_imagenet --pth resnet34-b627a593.pth \\
      --workdir runs/imagenet/teacher_resnet34 --dataset imagenet2012

(torchvision top-1: resnet34 73.31, resnet50 76.13, resnet101 77.37, resnet152 78.31).
"""

from kdjax.config import base_config

NUM_TRAIN = 1_281_167
# kdjax model names of the short names used in pair keys ('resnet34-resnet18').
ARCHS = {
  "resnet18": "resnet18_imagenet",
  "resnet34": "resnet34_imagenet",
  "resnet50": "resnet50_imagenet",
  "resnet101": "resnet101_imagenet",
  "resnet152": "resnet152_imagenet",
  "mobilenetv1": "mobilenetv1_imagenet",
}
# name -> (batch, lr, epochs, milestones or None for "every step_epochs", step_epochs)
SCHEDULES = {
  "torchdistill": (256, 0.1, 100, (30, 60, 90), 0),
  "mdistiller_512": (512, 0.2, 100, (30, 60, 90), 0),
  "mdistiller_256": (256, 0.1, 100, (30, 60, 90), 0),
  "pytorch_example": (256, 0.1, 90, None, 30),
}


def arch(short: str) -> str:
  if short not in ARCHS:
    raise ValueError(f"Unknown ImageNet architecture {short!r}; choose one of {sorted(ARCHS)}.")
  return ARCHS[short]


def teacher_workdir(teacher: str) -> str:
  """Where the imported torchvision teacher lives (``runs/imagenet/teacher_<short name>``)."""
  return f"runs/imagenet/teacher_{teacher}"


def steps_per_epoch(batch_size: int) -> int:
  return -(-NUM_TRAIN // batch_size)


def recipe(student: str, teacher: str = "", schedule: str = "torchdistill", *, epochs: int = 0):
  """``base_config()`` for ImageNet with ``schedule`` (a key of SCHEDULES) for the student
  ``student`` (short name), the teacher's workdir when ``teacher`` is given; ``epochs`` overrides
  the schedule's length (Ojha's 100-epoch distilled students on the 90-epoch example)."""
  if schedule not in SCHEDULES:
    raise ValueError(f"Unknown ImageNet schedule {schedule!r}; choose one of {sorted(SCHEDULES)}.")
  batch, lr, n_epochs, milestones, step_epochs = SCHEDULES[schedule]
  c = base_config()
  c.model = arch(student)
  if teacher:
    arch(teacher)
    c.teacher.workdir = teacher_workdir(teacher)
  d = c.dataset
  d.name = "imagenet2012"
  d.image_size = 0  # 224 (kdjax.data.info('imagenet2012'))
  d.crop_pad = 0  # no CIFAR-style padded crop: HostStream does RandomResizedCrop
  d.stream_threads = 16
  c.batch_size = batch
  c.eval_batch_size = 250
  c.drop_remainder = False  # torchdistill / mdistiller: drop_last False
  o = c.optim
  o.lr = lr
  o.momentum = 0.9
  o.weight_decay = 1e-4
  o.reference_batch_size = batch
  if milestones is None:
    o.schedule = "step"
    o.step_epochs = step_epochs
  else:
    o.schedule = "multistep"
    o.milestones = milestones
  c.num_epochs = epochs or n_epochs
  c.log_every_steps = 500
  c.checkpoint_every_steps = 2000
  c.keep_every_epochs = 10  # mdistiller SAVE_CHECKPOINT_FREQ 10
  return c


def parse(arg: str, cells, where: str):
  """``'method:teacher-student'`` -> ``(method, teacher, student, cells[(method, pair)])``."""
  method, sep, pair = str(arg).partition(":")
  if not sep or (method, pair) not in cells:
    raise ValueError(
      f"{where}: unknown cell {arg!r}; choose one of {sorted(f'{m}:{p}' for m, p in cells)}."
    )
  teacher, student = pair.split("-")
  return method, teacher, student, cells[(method, pair)]
