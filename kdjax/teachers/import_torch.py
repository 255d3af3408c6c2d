"""Imported PyTorch teachers: :func:`import_teacher` converts a PyTorch checkpoint with
:mod:`kdjax.models.import_torch` and writes it as a kdjax model checkpoint (``workdir/kept/0``)
that distillation loads like any trained teacher (``launch/import_teacher.py``)."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from kdjax import data
from kdjax.errors import UserError
from kdjax.models.import_torch import _flat, convert, load_torch_state_dict
from kdjax.train.checkpoint import RunCheckpoints, load_model


def save_teacher(
  variables, arch: str, num_classes: int, dataset: str, workdir: str, source: str = ""
) -> dict:
  """Writes ``variables`` as a kdjax model checkpoint (``workdir/kept/0``) usable as a teacher.

  Verifies the write by reading it back with ``kdjax.train.checkpoint.load_model``. Returns the
  metadata.
  """
  kept = os.path.join(workdir, "kept")
  if os.path.isdir(kept) and any(s.isdigit() for s in os.listdir(kept)):
    raise UserError(
      f"{workdir!r} already holds model checkpoints ({kept}); import into a new --workdir."
    )
  meta = {
    "arch": arch,
    "num_classes": int(num_classes),
    "dataset": dataset,
    "model_kwargs": {},
    "epoch": 0,
    "step": 0,
    "seed": None,
    "source": source,
  }
  ckpt = RunCheckpoints(workdir, async_save=False)
  try:
    ckpt.save_model("kept", 0, variables, meta)
  finally:
    ckpt.close()
  back, back_meta = load_model(workdir)
  want, got = _flat(variables), _flat(back)
  if set(want) != set(got) or any(not np.array_equal(np.asarray(want[k]), got[k]) for k in want):
    raise RuntimeError(f"The checkpoint written to {workdir!r} does not read back identically.")
  for k in ("arch", "num_classes", "dataset"):
    if back_meta.get(k) != meta[k]:
      raise RuntimeError(f"Checkpoint metadata {k!r} reads back as {back_meta.get(k)!r}.")
  return meta


def import_teacher(
  arch: str, pth: str, workdir: str, dataset: str = "cifar100", num_classes: Optional[int] = None
) -> dict:
  """``load_torch_state_dict`` + ``convert`` + ``save_teacher``; prints a one-line summary.

  ``dataset`` must be a registered kdjax dataset with the checkpoint's number of classes.
  """
  info = data.info(dataset)
  sd = load_torch_state_dict(pth)
  variables, report = convert(arch, sd, num_classes)
  if report["num_classes"] != info.num_classes:
    raise UserError(
      f"The checkpoint has {report['num_classes']} classes but dataset "
      f"{dataset!r} has {info.num_classes}; pass the dataset it was trained on "
      "(--dataset)."
    )
  save_teacher(
    variables, arch, report["num_classes"], dataset, workdir, source=os.path.abspath(pth)
  )
  print(
    f"[kdjax] imported {arch} ({report['num_params']:,} params, {report['num_classes']} "
    f"classes, {report['num_tensors']} tensors) from {pth} -> {os.path.join(workdir, 'kept')}"
  )
  return report
