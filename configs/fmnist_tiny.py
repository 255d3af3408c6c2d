r"""A tiny Fashion-MNIST table family (smoke test of the table runner): teacher, student, KD.

  python -m launch.table --config configs/fmnist_tiny.py --out /tmp/fmnist_tiny

Not a paper setting and far too short to mean anything: tiny_cnn on 256 training and 256 test
images, 4 steps per run. Cells: ``teacher`` (seed 0), ``student`` (CE alone, seeds 0 and 1) and
``kd`` (0.1 CE + 0.9 KD, T = 4, from the seed-0 teacher, seeds 0 and 1 trained as members of one
vmapped step). No published number (Fashion-MNIST is not in the papers' tables).
"""

import ml_collections

from kdjax.config import base_config


def _run(model="tiny_cnn"):
  c = base_config()
  c.model = model
  c.dataset.name = "fashion_mnist"
  c.dataset.train_limit = 256
  c.dataset.eval_limit = 256
  c.dataset.crop_pad = 2
  c.batch_size = 64
  c.eval_batch_size = 256
  c.optim.reference_batch_size = 64
  c.optim.lr = 0.1
  c.optim.schedule = "cosine"
  c.optim.epochs = 1
  c.num_epochs = 1
  c.log_every_steps = 2
  c.progress = False
  c.tensorboard = False
  c.async_checkpoint = False
  return c


def get_config(arg: str = ""):
  del arg
  f = ml_collections.ConfigDict()
  f.name = "fmnist_tiny"
  f.setting = (
    "Fashion-MNIST, 256 train / 256 test images, tiny_cnn, 1 epoch of 4 steps (smoke test only)"
  )
  f.seeds = (0, 1)
  f.order = ("teacher", "student", "kd")
  f.cells = ml_collections.ConfigDict()
  f.cells.teacher = ml_collections.ConfigDict(dict(run=_run(), seeds=(0,), label="teacher"))
  f.cells.student = ml_collections.ConfigDict(dict(run=_run(), label="student alone"))
  kd = _run()
  kd.method.name = "kd"
  kd.method.ce_weight = 0.1
  kd.method.terms.kd = dict(weight=0.9, temperature=4.0)
  f.cells.kd = ml_collections.ConfigDict(
    dict(run=kd, teacher_cell="teacher", members=True, label="student + KD")
  )
  return f
