"""Orbax checkpoints of a run's workdir.

Layout (everything a run writes lives under its workdir)::

  workdir/config.json            snapshot of the config the run was launched with
  workdir/checkpoints/<step>/    {state, meta}: the latest train state, for resume (rotated, keeps 2)
  workdir/kept/<step>/           {model, meta}: intermediate checkpoints at configured epochs and the
                                 final one; never rotated (checkpoint-KD teachers, RCO anchors)
  workdir/best/<step>/           {model, meta}: best-accuracy model (keeps 1)
  workdir/metrics.jsonl, workdir/tb/   metrics

A *model* item is ``{'params': ..., 'batch_stats': ...}`` of the trained network alone and ``meta``
is JSON (``arch``, ``num_classes``, ``dataset``, ``epoch``, ``step``, accuracies). Distillation
teachers, imported PyTorch weights and SFTN exports are all model items, so every consumer loads
them with :func:`load_model`.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint is missing or unreadable; the message names the directory and the fix."""


def _manager(directory, items, max_to_keep=None, async_save=True, read_only=False):
  opts = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(os.path.abspath(directory), options=opts, item_names=items)


class RunCheckpoints:
  """The three managers of one run (resume state, kept models, best model)."""

  def __init__(self, workdir: str, *, async_save: bool = True, keep_latest: int = 2):
    self.workdir = workdir
    self.state_mgr = _manager(os.path.join(workdir, "checkpoints"), ("state", "meta"),
                              max_to_keep=keep_latest, async_save=async_save)
    self.kept_mgr = _manager(os.path.join(workdir, "kept"), ("model", "meta"),
                             async_save=async_save)
    self.best_mgr = _manager(os.path.join(workdir, "best"), ("model", "meta"), max_to_keep=1,
                             async_save=async_save)

  # -- resume state -----------------------------------------------------------------------------
  def latest_step(self) -> Optional[int]:
    return self.state_mgr.latest_step()

  def save_state(self, step: int, state, meta: dict):
    self.state_mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore_state(self, abstract_state, step: Optional[int] = None):
    """Restores ``(state, meta)`` at ``step`` (default latest) into ``abstract_state``'s shardings."""
    step = self.latest_step() if step is None else step
    path = os.path.join(self.workdir, "checkpoints", str(step))
    try:
      out = self.state_mgr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - re-raised with the fix
      others = [s for s in self.state_mgr.all_steps() if s != step]
      hint = (f" Earlier checkpoints exist at steps {others}: move {path} aside to resume from "
              f"step {max(others)}." if others else
              " Move it aside (or use a new --workdir) to start the run again.")
      raise CheckpointError(
          f"Cannot restore the train state from {path}: {type(e).__name__}: "
          f"{str(e).splitlines()[0][:300]}. The checkpoint is corrupt or belongs to a different "
          f"model/optimiser config.{hint}") from None
    return out["state"], dict(out["meta"])

  # -- model checkpoints ------------------------------------------------------------------------
  def save_model(self, kind: str, step: int, variables, meta: dict):
    mgr = {"kept": self.kept_mgr, "best": self.best_mgr}[kind]
    mgr.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(variables), meta=ocp.args.JsonSave(meta)), force=True)

  def wait(self):
    for m in (self.state_mgr, self.kept_mgr, self.best_mgr):
      m.wait_until_finished()

  def close(self):
    for m in (self.state_mgr, self.kept_mgr, self.best_mgr):
      m.wait_until_finished()
      m.close()


def kept_checkpoints(workdir: str) -> list[dict]:
  """Metadata of every kept model checkpoint of a run, sorted by step (epoch, step, accuracy...)."""
  kept = os.path.join(workdir, "kept")
  if not os.path.isdir(kept):
    return []
  mgr = _manager(kept, ("model", "meta"), read_only=True, async_save=False)
  out = []
  for s in sorted(mgr.all_steps()):
    meta = mgr.restore(s, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    out.append(dict(meta, step=s))
  mgr.close()
  return out


def _model_dir(workdir: str, which) -> tuple[str, int]:
  """Resolves ``which`` ('final' | 'best' | {'step': n} | {'epoch': n} | int step) to a dir."""
  if which == "selected":
    from kdjax.teachers.selection import selected_step
    which = selected_step(workdir)
  sub = "best" if which == "best" else "kept"
  d = os.path.join(workdir, sub)
  if not os.path.isdir(d):
    raise CheckpointError(
        f"No {sub!r} model checkpoints under {workdir!r}. Is it the workdir of a finished run? "
        f"Train one with `python -m launch.train_teacher --config ... --workdir {workdir}` or "
        f"import PyTorch weights with `python -m launch.import_teacher`.")
  steps = sorted(int(s) for s in os.listdir(d) if s.isdigit())
  if not steps:
    raise CheckpointError(f"{d!r} holds no finished checkpoint (an interrupted run?).")
  if which in ("final", "best", None, "latest"):
    return d, steps[-1]
  if isinstance(which, int):
    step = which
  elif isinstance(which, dict) and "epoch" in which:
    metas = {m["epoch"]: m["step"] for m in kept_checkpoints(workdir)}
    if which["epoch"] not in metas:
      raise CheckpointError(f"No kept checkpoint at epoch {which['epoch']} in {d!r}; "
                            f"kept epochs: {sorted(metas)}.")
    step = metas[which["epoch"]]
  elif isinstance(which, dict) and "step" in which:
    step = int(which["step"])
  else:
    raise ValueError(f"Unknown checkpoint selector {which!r}: use 'final', 'best', a step, "
                     "{'step': n} or {'epoch': n}.")
  if step not in steps:
    raise CheckpointError(f"No kept checkpoint at step {step} in {d!r}; kept steps: {steps}.")
  return d, step


def load_model(workdir: str, which: Any = "final"):
  """Loads a model checkpoint of a run: returns ``(variables, meta)`` as numpy-backed arrays.

  ``meta['arch']`` and ``meta['num_classes']`` rebuild the module with ``kdjax.models.get``.
  """
  if not os.path.isdir(workdir):
    raise CheckpointError(f"Teacher/model workdir {workdir!r} does not exist. Train it first "
                          f"(`python -m launch.train_teacher --workdir {workdir} ...`) or fix the "
                          f"path in the config.")
  d, step = _model_dir(workdir, which)
  mgr = _manager(d, ("model", "meta"), read_only=True, async_save=False)
  try:
    out = mgr.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore(),
                                                    meta=ocp.args.JsonRestore()))
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"Cannot read the model checkpoint {os.path.join(d, str(step))}: "
                          f"{type(e).__name__}: {str(e).splitlines()[0][:300]}. It is corrupt "
                          f"or incomplete; pick another step or retrain.") from None
  finally:
    mgr.close()
  variables = jax.tree_util.tree_map(np.asarray, dict(out["model"]))
  return variables, dict(out["meta"], step=step)


def write_json(path: str, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)
