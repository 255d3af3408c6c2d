"""Student-friendly teacher training (SFTN; Park et al., NeurIPS 2021), teacher side.

The SFTN model itself (teacher + student branches and bridges, registered as the ``'sftn'``
model) lives in :mod:`kdjax.models.sftn`; its fine-tune initialisation from a trained teacher in
:func:`kdjax.train.teacher.load_pretrained_teacher`. This module exports the trained SFTN
teacher as a plain model checkpoint (``launch/export_teacher.py``) and re-exports both.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from kdjax import data as kdata
from kdjax.errors import UserError
from kdjax.models import registry
from kdjax.models.sftn import (
  BRANCH_TAP,
  SFTN,
  SOURCE,
  Bridge,
  bridge_mode,  # noqa: F401
  bridge_plan,
  make_sftn,
  normalize_kwargs,
  stage_shapes,
)
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train.teacher import check_same_tree, load_pretrained_teacher, selector  # noqa: F401


def export_teacher(sftn_workdir: str, out_workdir: str, which: Any = "final") -> dict:
  """Writes the teacher of an SFTN run as a plain model checkpoint (``out_workdir/kept/<step>``).

  Loads the SFTN run's model checkpoint ``which`` ('final' | 'best' | 'step:N' | 'epoch:N'),
  keeps the ``teacher`` subtree of ``params``/``batch_stats`` (checked against a freshly built
  teacher) and saves it with metadata ``arch``/``model_kwargs`` of the teacher, ``num_classes``,
  ``dataset``, ``epoch``, ``step``, ``source: 'sftn'`` and the provenance. Returns that metadata.
  """
  if os.path.abspath(sftn_workdir) == os.path.abspath(out_workdir):
    raise UserError("export_teacher: --out must differ from the SFTN run's --workdir.")
  variables, meta = ckpt_lib.load_model(sftn_workdir, selector(which))
  if meta.get("arch") != "sftn":
    raise UserError(
      f"{sftn_workdir!r} holds a {meta.get('arch')!r} model, not an SFTN run "
      "(config.model = 'sftn')."
    )
  mk = dict(meta.get("model_kwargs") or {})
  t_arch = mk.get("teacher")
  tk = dict(normalize_kwargs(mk.get("teacher_kwargs"), "teacher_kwargs"))
  params = variables.get("params", {})
  if "teacher" not in params or not t_arch:
    raise UserError(f"The SFTN checkpoint in {sftn_workdir!r} has no 'teacher' parameters.")
  out_vars = {
    "params": params["teacher"],
    "batch_stats": dict(variables.get("batch_stats") or {}).get("teacher", {}),
  }
  num_classes = int(meta["num_classes"])
  module = registry.get(t_arch, num_classes=num_classes, parent=None, **tk)
  shape = tuple(kdata.info(meta["dataset"]).image_shape)
  ref = jax.eval_shape(
    lambda x: module.init(jax.random.PRNGKey(0), x, train=False),
    jax.ShapeDtypeStruct((1,) + shape, jnp.float32),
  )
  ref = {"params": ref["params"], "batch_stats": ref.get("batch_stats", {})}
  check_same_tree(out_vars, ref, f"SFTN teacher {t_arch!r} of {sftn_workdir!r}")

  kept = os.path.join(out_workdir, "kept")
  if os.path.isdir(kept) and any(s.isdigit() for s in os.listdir(kept)):
    raise UserError(
      f"{out_workdir!r} already holds model checkpoints; export into a new directory."
    )
  out_meta = {
    "arch": t_arch,
    "model_kwargs": tk,
    "num_classes": num_classes,
    "dataset": meta["dataset"],
    "epoch": meta.get("epoch"),
    "step": int(meta["step"]),
    "seed": meta.get("seed"),
    "source": SOURCE,
    "sftn_workdir": os.path.abspath(sftn_workdir),
    "sftn_which": str(which),
    "sftn_student": mk.get("student"),
    "sftn_model_kwargs": mk,
    # The SFTN run evaluates the teacher's logits: these are the teacher's accuracies.
    **{k: v for k, v in meta.items() if k.startswith("test_")},
  }
  ckpts = ckpt_lib.RunCheckpoints(out_workdir, async_save=False)
  try:
    ckpts.save_model("kept", int(meta["step"]), out_vars, out_meta)
  finally:
    ckpts.close()
  ckpt_lib.write_json(os.path.join(out_workdir, "export.json"), out_meta)
  return out_meta
