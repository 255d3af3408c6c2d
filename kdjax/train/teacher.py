"""Distillation teachers: one checkpoint, a snapshot ensemble of one run's kept checkpoints, or a
full ensemble of independent runs (checkpoint KD, Wang et al. NeurIPS 2022).

``config.teacher``:
  workdir / which   a single teacher: a run's workdir and 'final' | 'best' | 'step:N' | 'epoch:N'
  members           ensemble members as 'WORKDIR' or 'WORKDIR@WHICH' strings; when non-empty it
                    replaces workdir/which. A snapshot ensemble lists one run several times
                    ('runs/t@epoch:60', 'runs/t@epoch:120', ...), a full ensemble lists runs.
  ensemble_mode     'logit_mean' (z = mean_j z_j, as LeapLabTHU/CheckpointKD) or 'prob_mean'
                    (z = log mean_j softmax(z_j): probabilities averaged at T = 1)
  temperature       post-hoc temperature scaling (Guo et al. 2017): the teacher's logits are
                    divided by it (fit it with ``kdjax.calibration.fit_temperature`` on held-out
                    data; the calibration study does); 1 = off

The teacher is applied in inference mode; its variables are never part of the train state. Taps of
an ensemble are those of its first member.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional

import flax
import jax
import jax.numpy as jnp

from kdjax import checks
from kdjax import models
from kdjax import precision
from kdjax.models import fold_bn
from kdjax.config import parse_which
from kdjax.errors import UserError
from kdjax.train import checkpoint as ckpt_lib

ENSEMBLE_MODES = ("logit_mean", "prob_mean")


@dataclasses.dataclass
class EnsembleTeacher:
  """Duck-types a linen module: ``apply(variables_list, x, train=False) -> (logits, taps)``."""

  modules: List
  mode: str = "logit_mean"
  temperature: float = 1.0

  def apply(self, variables, x, train=False, **kw):
    outs = [m.apply(v, x, train=False, **kw) for m, v in zip(self.modules, variables)]
    logits = jnp.stack([o[0] for o in outs])
    if len(outs) == 1:
      z = logits[0]
    elif self.mode == "logit_mean":
      z = logits.mean(0)
    else:
      z = jax.nn.logsumexp(jax.nn.log_softmax(logits, -1), axis=0) - jnp.log(len(outs))
    if self.temperature != 1.0:
      z = z / self.temperature
    # Every member's (temperature-scaled) logits, (B, M, K): the per-teacher-KL ensemble term
    # (kdjax.methods.ckd.ensemble_kd) reads them; XLA drops them when no term does.
    member = jnp.stack([o[0] for o in outs], axis=1) / self.temperature
    return z, dict(outs[0][1], member_logits=member)


@dataclasses.dataclass
class Teacher:
  module: EnsembleTeacher
  variables: list
  meta: dict  # first member's metadata + 'members'
  # What the train/eval steps run: the BN-folded copy when config.teacher.fold_bn (same outputs;
  # ``module``/``variables`` keep the BatchNorms, e.g. for OH's margins). None = module/variables.
  step_module: Optional[EnsembleTeacher] = None
  step_variables: Optional[list] = None

  @property
  def run_module(self):
    return self.step_module if self.step_module is not None else self.module

  @property
  def run_variables(self):
    return self.step_variables if self.step_variables is not None else self.variables

  @property
  def num_params(self) -> int:
    return sum(models.count_params(v["params"]) for v in self.variables)


def _parse_member(spec: str):
  workdir, _, which = spec.partition("@")
  return workdir, parse_which(which or "final")


def load_teacher(tcfg, num_classes: int, *, policy="float32", input_shape=None) -> Teacher:
  """Loads the teacher(s) named by ``config.teacher``, built under the precision ``policy``
  (``config.precision.teacher``); with ``teacher.fold_bn`` (needs ``input_shape``) the steps run
  a BN-folded copy (:func:`kdjax.models.fold_bn.fold_teacher_bn`)."""
  members = [_parse_member(s) for s in tcfg.members] if tcfg.members else []
  if not members:
    if not tcfg.workdir:
      raise UserError(
        "This method distils from a teacher but config.teacher.workdir is empty. "
        "Point it at a finished teacher run (launch/train_teacher.py) or an "
        "imported checkpoint (launch/import_teacher.py)."
      )
    members = [(tcfg.workdir, parse_which(tcfg.which))]
  if tcfg.ensemble_mode not in ENSEMBLE_MODES:
    raise UserError(
      f"teacher.ensemble_mode must be one of {ENSEMBLE_MODES}, got {tcfg.ensemble_mode!r}."
    )
  mods, variables, metas = [], [], []
  for workdir, which in members:
    v, meta = ckpt_lib.load_model(workdir, which)
    if int(meta["num_classes"]) != num_classes:
      raise UserError(
        f"Teacher in {workdir!r} has {meta['num_classes']} classes but the "
        f"dataset has {num_classes}."
      )
    mods.append(
      precision.build_model(
        meta["arch"],
        num_classes=int(meta["num_classes"]),
        policy=policy,
        **dict(meta.get("model_kwargs") or {}),
      )
    )
    variables.append(v)
    metas.append(dict(meta, workdir=workdir))
  meta = dict(
    metas[0], members=[{k: m.get(k) for k in ("workdir", "arch", "step", "epoch")} for m in metas]
  )
  checks.positive("teacher.temperature", tcfg.temperature)
  ens = EnsembleTeacher(mods, tcfg.ensemble_mode, float(tcfg.temperature))
  if not tcfg.get("fold_bn", False):
    return Teacher(ens, variables, meta)
  if input_shape is None:
    raise UserError("teacher.fold_bn needs the input shape: call load_teacher(..., input_shape=).")
  folded = [fold_bn.fold_teacher_bn(m, v, input_shape) for m, v in zip(mods, variables)]
  return Teacher(
    ens,
    variables,
    meta,
    EnsembleTeacher([f[0] for f in folded], tcfg.ensemble_mode, float(tcfg.temperature)),
    [f[1] for f in folded],
  )


def check_teacher_input(teacher: Teacher, image_shape, dataset: str) -> None:
  """The teacher must accept the student's images (e.g. not an RGB teacher for a grayscale
  dataset): checked abstractly (no compute) before anything is compiled."""
  x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
  for module, v, m in zip(teacher.module.modules, teacher.variables, teacher.meta["members"]):
    try:
      jax.eval_shape(lambda v, x, module=module: module.apply(v, x, train=False), v, x)
    except (flax.errors.FlaxError, TypeError, ValueError) as e:  # shape mismatches
      raise UserError(
        f"The teacher in {m['workdir']!r} ({m['arch']}) cannot take {dataset!r} images of "
        f"shape {tuple(image_shape)}: {type(e).__name__}: {str(e).splitlines()[0][:200]}. "
        "Distil from a teacher trained on the same dataset (same image size and channels)."
      ) from None


# ---- SFTN fine-tune initialisation (kdjax.models.sftn; configs/sftn.py) ----------------------
def check_same_tree(got, want, what: str):
  gs, ws = jax.tree_util.tree_structure(got), jax.tree_util.tree_structure(want)
  if gs != ws:
    raise UserError(f"{what}: the parameter trees differ ({gs} vs {ws}).")
  for (path, a), b in zip(
    jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want)
  ):
    if tuple(a.shape) != tuple(b.shape):
      raise UserError(
        f"{what}: {jax.tree_util.keystr(path)} has shape {tuple(a.shape)}, "
        f"expected {tuple(b.shape)}."
      )


def selector(which):
  return parse_which(which) if isinstance(which, str) else which


def load_pretrained_teacher(
  variables, teacher_workdir: str, which: Any = None, *, expected_arch: Optional[str] = None
):
  """Fine-tune mode: returns SFTN ``variables`` whose ``teacher`` params/batch_stats are replaced
  by a trained teacher's model checkpoint (``teacher_workdir``, optionally ``'WORKDIR@WHICH'``;
  ``which`` defaults to 'final'). Bridges and branches keep their fresh initialisation.

  Raises:
    ValueError: not SFTN variables, or the checkpoint's arch/tree does not match the teacher.
  """
  if which is None:
    teacher_workdir, _, w = str(teacher_workdir).partition("@")
    which = w or "final"
  params = dict(variables.get("params") or {})
  if "teacher" not in params:
    raise UserError(
      "load_pretrained_teacher expects the variables of an SFTN model (params['teacher'] missing)."
    )
  loaded, meta = ckpt_lib.load_model(teacher_workdir, selector(which))
  if expected_arch is not None and meta.get("arch") != expected_arch:
    raise UserError(
      f"init_teacher_from {teacher_workdir!r} holds a {meta.get('arch')!r} model; "
      f"the SFTN teacher is {expected_arch!r}."
    )
  stats = dict(variables.get("batch_stats") or {})
  new_p = loaded["params"]
  new_s = dict(loaded.get("batch_stats") or {})
  what = f"init_teacher_from {teacher_workdir!r}"
  check_same_tree(new_p, params["teacher"], what)
  check_same_tree(new_s, stats.get("teacher", {}), what)
  cast = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
    lambda a, b: jnp.asarray(a, dtype=b.dtype), new, old
  )
  out = dict(variables)
  out["params"] = dict(params, teacher=cast(new_p, params["teacher"]))
  if "teacher" in stats:
    out["batch_stats"] = dict(stats, teacher=cast(new_s, stats["teacher"]))
  return out
