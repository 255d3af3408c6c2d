r"""Domain knowledge transfers "for free" (Ojha et al., NeurIPS 2023, §4.3, Tables 3, 4, 13).

Citation: Ojha, Li, Sundara Rajan, Liang, Lee. "What Knowledge Gets Distilled in Knowledge
Distillation?", NeurIPS 2023 (arXiv 2205.16004): a teacher trained on several domains is
distilled into a student that sees only one (or all but one); the student's accuracy on the
domains it never saw rises with distillation. MNIST setting: teacher on MNIST ∪ MNIST-Color ∪
MNIST-M, students on MNIST only, evaluated on each of the three (Table 13). PACS / VLCS:
students without Photo / Caltech-101 (Tables 4 / 3).

Data (``kdjax.data``, built offline by :mod:`kdjax.data.domains`): ``mnist_domains`` (the union,
3 renderings per digit), ``mnist_rgb`` (MNIST, grey replicated to RGB), ``mnist_color``,
``mnist_m`` (MNIST-M-*style*: procedural colour textures replace BSDS500, so its numbers are not
comparable with the paper's MNIST-M column). They need MNIST's four IDX files
(``--config.dataset.idx_dir=DIR`` or ``$KDJAX_MNIST_DIR``); all four share MNIST's normalisation,
so teacher and students see identical inputs. ``pacs`` / ``vlcs`` read ``<root>/<domain>/<class>/``
(``--config.dataset.data_dir=ROOT``); the split is a ``+``-joined list of domains.

Cells (``ARG`` = ``ROLE[,quick]``):

* MNIST: ``teacher`` (``mnist_domains``, supervised), ``student`` (``mnist_rgb`` alone: the
  paper's "Ind"), ``kl`` / ``hint`` / ``crd`` (``mnist_rgb`` distilled with the paper's MNIST
  weights, methods.md §6.2: KL γ 0.1, α 0.9, τ 8 in the τ²·cross-entropy form; Hint γ 1, β 2 at
  the student's/teacher's ``stage2`` output (the paper's Conv(64); kdjax's FitNet is the mean of
  squares, not ½·sum, so β's scale differs); CRD γ 1, β 0.1, τ 0.1, N 32).
* PACS / VLCS: ``pacs_teacher`` / ``vlcs_teacher`` (all four domains), ``pacs_student`` /
  ``vlcs_student`` (without the held-out domain), ``pacs_kl`` / ``vlcs_kl`` (KL as the R50→R18
  ImageNet weights γ 0.5, α 0.5, τ 4: the paper gives no PACS/VLCS weights, design decision);
  test split: the held-out domain. ResNet18 (ImageNet layout) for teacher and student.
* ``,quick``: 3,000 training / 999 test rows, 1 epoch (a smoke test, not a result).

Model and schedule (design decisions): the paper uses the PyTorch MNIST-example CNN for teacher
and student (Adadelta, 14 epochs); kdjax has no such model, so both are ``resnet8`` (override
``--config.model``), SGD momentum 0.9, lr 0.05 at batch 64, cosine over 14 epochs, wd 5e-4, crop
padding 2, no flips (digits); PACS/VLCS: SGD lr 0.01 at batch 32, cosine, 30 epochs, crop
padding 16 and flips.

Launch (MNIST)::

  python -m launch.train_teacher --config configs/ojha/domains.py:teacher \
      --config.dataset.idx_dir=DIR --workdir runs/ojha/domains/teacher
  python -m launch.train_teacher --config configs/ojha/domains.py:student \
      --config.dataset.idx_dir=DIR --workdir runs/ojha/domains/ind
  python -m launch.distill --config configs/ojha/domains.py:kl --config.dataset.idx_dir=DIR \
      --config.teacher.workdir=runs/ojha/domains/teacher --workdir runs/ojha/domains/kl

then per-domain top-1 with :func:`evaluate_domains` (``python -c "from configs.ojha import
domains; print(domains.evaluate_domains('runs/ojha/domains/kl', idx_dir='DIR'))"``); the
runs' own test numbers are on their training dataset's test split only.

Published (methods.md §6.4; top-1 %, MNIST / MNIST-Color / MNIST-M): :data:`PUBLISHED`. The paper
gives no teacher accuracies for these settings.
"""

import functools

import numpy as np

from kdjax import data as kdata
from kdjax import models
from kdjax.config import base_config, parse_which
from kdjax.data import augment
from kdjax.eval.predict import predict_logits
from kdjax.methods.crd import CRD_HPARAMS
from kdjax.train import checkpoint as ckpt_lib

# Table 13 (MNIST / Color / M), Table 3 (VLCS: Caltech-101 unseen / LabelMe / SUN09 / VOC2007),
# Table 4 (PACS: Photo unseen / Sketch / Cartoon / Art).
PUBLISHED = {
  "mnist": {
    "ind": (99.08, 72.86, 56.09),
    "kl": (98.90, 91.76, 67.92),
    "hint": (99.10, 97.05, 64.06),
    "crd": (99.00, 83.98, 60.36),
  },
  "vlcs": {"ind": (54.31, 61.07, 60.38, 51.94), "kl": (71.83, 60.73, 61.52, 53.12)},
  "pacs": {"ind": (40.91, 70.17, 66.47, 45.56), "kl": (49.93, 72.82, 69.69, 46.64)},
}
DIGIT_EVAL = ("mnist_rgb", "mnist_color", "mnist_m")
MNIST_ARCH = "resnet8"

# The paper's MNIST loss weights (methods.md §6.2).
MNIST_METHODS = {
  "kl": dict(
    name="kl",
    ce_weight=0.1,
    terms=dict(
      kl=dict(weight=0.9, teacher_temperature=8.0, student_temperature=8.0, form="cross_entropy")
    ),
  ),
  "hint": dict(name="fitnet", ce_weight=1.0, terms=dict(fitnet=dict(weight=2.0, hint_layer=2))),
  "crd": dict(
    name="crd",
    ce_weight=1.0,
    terms=dict(crd=dict(CRD_HPARAMS, weight=0.1, nce_k=32, nce_t=0.1)),
  ),
}


def _digits(name: str):
  c = base_config()
  c.model = MNIST_ARCH
  c.dataset.name = name
  c.dataset.crop_pad = 2
  c.dataset.flip = False
  c.batch_size = 64
  c.optim.reference_batch_size = 64
  c.optim.lr = 0.05
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "cosine"
  c.optim.epochs = 14
  c.num_epochs = 14
  return c


def _lodo(name: str, train_split: str = ""):
  c = base_config()
  c.model = "resnet18_imagenet"
  c.dataset.name = name
  c.dataset.train_split = train_split  # "" = the registry's: every domain but the held-out one
  c.dataset.crop_pad = 16
  c.batch_size = 32
  c.eval_batch_size = 100
  c.optim.reference_batch_size = 32
  c.optim.lr = 0.01
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "cosine"
  c.optim.epochs = 30
  c.num_epochs = 30
  return c


def get_config(arg: str = "kl"):
  role, _, size = arg.partition(",")
  if role == "teacher":
    c = _digits("mnist_domains")
  elif role == "student":
    c = _digits("mnist_rgb")
  elif role in MNIST_METHODS:
    c = _digits("mnist_rgb")
    m = MNIST_METHODS[role]
    c.method.name, c.method.ce_weight = m["name"], m["ce_weight"]
    for k, v in m["terms"].items():
      c.method.terms[k] = dict(v)
  elif role.partition("_")[0] in ("pacs", "vlcs") and role.partition("_")[2] in (
    "teacher",
    "student",
    "kl",
  ):
    ds, _, r = role.partition("_")
    c = _lodo(ds, "+".join(kdata.registry.LODO_DOMAINS[ds]) if r == "teacher" else "")
    if r == "kl":
      c.method.name = "kl"
      c.method.ce_weight = 0.5
      c.method.terms.kl = dict(
        weight=0.5, teacher_temperature=4.0, student_temperature=4.0, form="cross_entropy"
      )
  else:
    raise ValueError(
      f"configs/ojha/domains.py: unknown cell {arg!r}; use teacher, student, kl, hint, crd, "
      "pacs_teacher|student|kl or vlcs_teacher|student|kl, optionally with ',quick'."
    )
  if size == "quick":
    c.dataset.train_limit = 3000
    c.dataset.eval_limit = 999
    c.num_epochs = 1
    c.optim.epochs = 1
    c.progress = False
  elif size:
    raise ValueError(f"configs/ojha/domains.py: unknown size {size!r}; use ',quick' or nothing.")
  return c


def evaluate_domains(
  workdir: str,
  *,
  datasets=DIGIT_EVAL,
  which: str = "final",
  idx_dir=None,
  data_dir=None,
  split: str = "test",
  limit=None,
  batch_size: int = 500,
) -> dict:
  """Top-1 (%) of a run's stored model on each dataset of ``datasets`` (default: the three digit
  domains' test splits), each normalised with its registry statistics (shared by the digit
  domains, so this is the input distribution the model was trained with)."""
  variables, meta = ckpt_lib.load_model(workdir, parse_which(which))
  out = {}
  for name in datasets:
    info = kdata.info(name)
    module = models.get(
      meta["arch"], num_classes=info.num_classes, **dict(meta.get("model_kwargs") or {})
    )
    s = kdata.load_arrays(name, split, idx_dir=idx_dir, data_dir=data_dir, limit=limit)
    logits = predict_logits(
      module,
      variables,
      s.images,
      batch_size=batch_size,
      preprocess=functools.partial(augment.eval_transform, info),
    )
    out[name] = 100.0 * float(np.mean(np.argmax(logits, -1) == s.labels))
  return out
