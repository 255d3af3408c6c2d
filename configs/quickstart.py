r"""Offline quickstart on Fashion-MNIST: a teacher, the student alone, the student with KD.

Runs on the 2-core CPU machines in under 10 minutes, with no download (Fashion-MNIST's original
IDX files from the Debian package ``dataset-fashion-mnist`` or ``--config.*.dataset.idx_dir``).
Not a paper setting: it demonstrates the pipeline end to end and prints whatever accuracies the
short schedule honestly reaches. KD follows Hinton et al. (2015) with RepDistiller's weights
(0.1 CE + 0.9 T^2 KL, T = 4).

  python -m launch.quickstart --workdir runs/quickstart
"""

import ml_collections

from kdjax.config import base_config

TEACHER, STUDENT = "resnet20", "resnet8"


def _common(model, epochs, train_limit):
  c = base_config()
  c.model = model
  c.dataset.name = "fashion_mnist"
  c.dataset.train_limit = train_limit
  c.dataset.crop_pad = 2
  c.dataset.flip = True
  c.batch_size = 128
  c.optim.reference_batch_size = 128
  c.optim.lr = 0.1
  c.optim.schedule = "cosine"
  c.optim.epochs = epochs
  c.num_epochs = epochs
  c.log_every_steps = 50
  return c


def get_config(arg: str = ""):
  del arg
  c = ml_collections.ConfigDict()
  c.teacher = _common(TEACHER, epochs=2, train_limit=10000)
  c.student = _common(STUDENT, epochs=2, train_limit=10000)
  c.kd = _common(STUDENT, epochs=2, train_limit=10000)
  c.kd.method.name = "kd"
  c.kd.method.ce_weight = 0.1
  c.kd.method.terms.kd = dict(weight=0.9, temperature=4.0)
  return c


def apply_size(c, size: str, where: str):
  """``size`` suffix of the Fashion-MNIST configs: '' (as is) or 'quick' (2,000 training and
  1,000 test examples, 1 epoch, no progress bar: a smoke test)."""
  if size == "quick":
    c.dataset.train_limit = 2000
    c.dataset.eval_limit = 1000
    c.num_epochs = 1
    c.optim.epochs = 1
    c.progress = False
  elif size:
    raise ValueError(f"{where}: unknown size {size!r}; use ',quick' or nothing.")
  return c
