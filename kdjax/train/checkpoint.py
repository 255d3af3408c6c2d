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

Several processes (``jax.distributed``, docs/multihost.md): every process calls every method
here at the same point with the same (replicated) values, on a workdir they all see. Orbax
coordinates the writes (process 0 writes the arrays and the JSON items, the others wait at its
barriers); restores read on every process, and a checkpoint is accepted only if it verifies on
every process, so all of them resume from the same step. Moving a failed checkpoint aside and
:func:`write_json` happen on process 0 only (the move behind a barrier the others wait at).
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from kdjax import distributed
from kdjax.errors import UserError


class CheckpointError(UserError):
  """A checkpoint is missing or unreadable; the message names the directory and the fix."""


class NonFiniteError(UserError, FloatingPointError):
  """The loss, the parameters or the BatchNorm statistics became NaN/inf; no checkpoint of the
  bad state was written."""


def _manager(directory, items, max_to_keep=None, async_save=True, read_only=False):
  opts = ocp.CheckpointManagerOptions(
    max_to_keep=max_to_keep,
    create=not read_only,
    read_only=read_only,
    enable_async_checkpointing=async_save,
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=opts, item_names=items)


def _leaves(tree):
  return jax.tree_util.tree_flatten_with_path(tree)[0]


def nonfinite_leaves(tree) -> list[str]:
  """Paths of the floating-point leaves of a (host) pytree holding NaN or inf."""
  bad = []
  for path, x in _leaves(tree):
    a = np.asarray(x)
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
      bad.append(jax.tree_util.keystr(path))
  return bad


def checksum(tree) -> str:
  """CRC-32 over every leaf's path, dtype, shape and bytes (host pytree), as 8 hex digits."""
  crc = 0
  for path, x in _leaves(tree):
    a = np.ascontiguousarray(np.asarray(x))
    crc = zlib.crc32(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape}".encode(), crc)
    crc = zlib.crc32(a.tobytes(), crc)
  return f"{crc:08x}"


def _host_checked(tree, what: str, where: str):
  """``tree`` fetched to host numpy; raises :class:`NonFiniteError` rather than writing NaN/inf."""
  host = jax.device_get(tree)
  bad = nonfinite_leaves(host)
  if bad:
    raise NonFiniteError(
      f"Refusing to write a non-finite {what} to {where}: {len(bad)} leaves hold NaN/inf "
      f"(first: {bad[0]}). Lower optim.lr, check the teacher and the data normalisation, "
      "then relaunch."
    )
  return host


class RunCheckpoints:
  """The three managers of one run (resume state, kept models, best model).

  Saves are idempotent (a resumed run that replays an epoch writes the same step again: an
  identical existing model checkpoint is kept, anything else at that step is replaced), refuse
  non-finite trees, and record a checksum that :meth:`restore_state` verifies."""

  def __init__(self, workdir: str, *, async_save: bool = True, keep_latest: int = 2):
    self.workdir = workdir
    if jax.process_count() > 1:
      # Orbax 0.12's default barriers are device collectives (sync_global_devices); an async
      # save runs some of them in its background thread, concurrently with the next save's (or
      # restore's) on the main thread, so two processes can enter them in different orders and
      # deadlock ("Timed out while waiting for async_write_complete barrier", seen here in 2 of
      # 5 runs). Synchronous saves keep every barrier on the main thread, in program order.
      async_save = False
    self.state_mgr = _manager(
      os.path.join(workdir, "checkpoints"),
      ("state", "meta"),
      max_to_keep=keep_latest,
      async_save=async_save,
    )
    self.kept_mgr = _manager(
      os.path.join(workdir, "kept"), ("model", "meta"), async_save=async_save
    )
    self.best_mgr = _manager(
      os.path.join(workdir, "best"), ("model", "meta"), max_to_keep=1, async_save=async_save
    )

  # -- resume state -----------------------------------------------------------------------------
  def latest_step(self) -> Optional[int]:
    return self.state_mgr.latest_step()

  def save_state(self, step: int, state, meta: dict):
    host = _host_checked(state, "train state", os.path.join(self.workdir, "checkpoints"))
    if step in self.state_mgr.all_steps():
      self.state_mgr.wait_until_finished()
      self.state_mgr.delete(step)
    self.state_mgr.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(host),
        meta=ocp.args.JsonSave(dict(meta, checksum=checksum(host))),
      ),
      force=True,
    )

  def _restore_verified(self, step: int, abstract_state):
    out = self.state_mgr.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
      ),
    )
    state, meta = out["state"], dict(out["meta"])
    want = [
      (jax.tree_util.keystr(p), tuple(a.shape), np.dtype(a.dtype))
      for p, a in _leaves(abstract_state)
    ]
    got = [
      (jax.tree_util.keystr(p), tuple(np.shape(a)), np.dtype(a.dtype)) for p, a in _leaves(state)
    ]
    if want != got:
      diff = next(((w, g) for w, g in zip(want, got) if w != g), (len(want), len(got)))
      raise ValueError(f"restored tree differs from the expected one: {diff}")
    host = jax.device_get(state)
    bad = nonfinite_leaves(host)
    if bad:
      raise ValueError(f"{len(bad)} non-finite leaves (first: {bad[0]})")
    if "checksum" in meta and checksum(host) != meta["checksum"]:
      raise ValueError(f"checksum {checksum(host)} != recorded {meta['checksum']}")
    return state, meta

  def restore_state(self, abstract_state, step: Optional[int] = None):
    """Restores ``(state, meta)`` into ``abstract_state``'s shapes and shardings (any device
    count), verifying the tree, the shapes, finiteness and the recorded checksum.

    Without ``step``, the newest checkpoint that verifies is used; newer ones that do not are
    moved aside to ``workdir/corrupt/`` with one warning (never deleted). Raises
    :class:`CheckpointError` when none verifies."""
    steps = [step] if step is not None else sorted(self.state_mgr.all_steps(), reverse=True)
    failures = []
    multi = jax.process_count() > 1
    for s in steps:
      error = None
      try:
        state, meta = self._restore_verified(s, abstract_state)
      except Exception as e:  # noqa: BLE001 - any failure means: not usable
        error = (
          f"{type(e).__name__}: {str(e).splitlines()[0][:300]}" if str(e) else type(e).__name__
        )
      # Every process takes the same branch: a step that fails anywhere is rejected everywhere.
      if multi and not distributed.all_processes(error is None):
        error = error or "failed verification on another process"
      if error is not None:
        failures.append((s, error))
        continue
      if failures:
        self.state_mgr.wait_until_finished()
        aside = os.path.join(self.workdir, "corrupt")
        if distributed.is_main_process():
          os.makedirs(aside, exist_ok=True)
          for bad, _ in failures:
            dst = os.path.join(aside, f"checkpoints-{bad}")
            n = 1
            while os.path.exists(dst):
              dst, n = os.path.join(aside, f"checkpoints-{bad}.{n}"), n + 1
            shutil.move(os.path.join(self.workdir, "checkpoints", str(bad)), dst)
          print(
            f"[kdjax] WARNING: resume checkpoint(s) {[b for b, _ in failures]} of "
            f"{self.workdir} failed verification ({failures[0][1]}); moved to {aside}; "
            f"resuming from step {s}."
          )
        distributed.sync(f"kdjax:corrupt_moved:{s}")  # the others reload after the move
        self.state_mgr.reload()
      return state, meta
    path = os.path.join(self.workdir, "checkpoints")
    detail = "; ".join(f"step {s}: {msg}" for s, msg in failures)
    raise CheckpointError(
      f"Cannot restore the train state from {path} ({detail}). The checkpoints are corrupt or "
      "belong to a different model/optimiser config. Move them aside (or use a new --workdir) "
      "to start the run again."
    )

  # -- model checkpoints ------------------------------------------------------------------------
  def save_model(self, kind: str, step: int, variables, meta: dict):
    mgr = {"kept": self.kept_mgr, "best": self.best_mgr}[kind]
    host = _host_checked(variables, "model", os.path.join(self.workdir, kind))
    meta = dict(meta, checksum=checksum(host))
    if step in mgr.all_steps():
      mgr.wait_until_finished()
      try:
        old = dict(mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
      except Exception:  # noqa: BLE001 - unreadable: replace it
        old = None
      if old == json.loads(json.dumps(meta, default=str)):
        return  # the same model (a resumed run replayed this epoch)
      mgr.delete(step)
    mgr.save(
      step,
      args=ocp.args.Composite(model=ocp.args.StandardSave(host), meta=ocp.args.JsonSave(meta)),
      force=True,
    )

  def wait(self):
    for m in (self.state_mgr, self.kept_mgr, self.best_mgr):
      m.wait_until_finished()
    distributed.sync("kdjax:checkpoints_written")  # every process's writes are finished

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
    which = selected_step(workdir)
  sub = "best" if which == "best" else "kept"
  d = os.path.join(workdir, sub)
  if not os.path.isdir(d):
    raise CheckpointError(
      f"No {sub!r} model checkpoints under {workdir!r}. Is it the workdir of a finished run? "
      f"Train one with `python -m launch.train_teacher --config ... --workdir {workdir}` or "
      f"import PyTorch weights with `python -m launch.import_teacher`."
    )
  steps = sorted(int(s) for s in os.listdir(d) if s.isdigit())
  if not steps:
    raise CheckpointError(f"{d!r} holds no finished checkpoint (an interrupted run?).")
  if which == "final":
    meta = _read_meta(d, steps[-1])
    if meta is not None and meta.get("final") is False:
      kept = kept_checkpoints(workdir)
      raise CheckpointError(
        f"{workdir!r} is an unfinished run: its newest kept checkpoint is epoch "
        f"{meta.get('epoch')} (step {steps[-1]}), not the final epoch, so which='final' is "
        f"refused. Finish the run (relaunch it), or choose a checkpoint explicitly: "
        f"teacher.which='best' or 'epoch:N' (kept epochs: {[k.get('epoch') for k in kept]})."
      )
    return d, steps[-1]
  if which in ("best", None, "latest"):
    return d, steps[-1]
  if isinstance(which, int):
    step = which
  elif isinstance(which, dict) and "epoch" in which:
    metas = {m["epoch"]: m["step"] for m in kept_checkpoints(workdir)}
    if which["epoch"] not in metas:
      raise CheckpointError(
        f"No kept checkpoint at epoch {which['epoch']} in {d!r}; kept epochs: {sorted(metas)}."
      )
    step = metas[which["epoch"]]
  elif isinstance(which, dict) and "step" in which:
    step = int(which["step"])
  else:
    raise UserError(
      f"Unknown checkpoint selector {which!r}: use 'final', 'best', a step, "
      "{'step': n} or {'epoch': n}."
    )
  if step not in steps:
    raise CheckpointError(f"No kept checkpoint at step {step} in {d!r}; kept steps: {steps}.")
  return d, step


def load_model(workdir: str, which: Any = "final"):
  """Loads a model checkpoint of a run: returns ``(variables, meta)`` as numpy-backed arrays.

  ``meta['arch']`` and ``meta['num_classes']`` rebuild the module with ``kdjax.models.get``.
  """
  if not os.path.isdir(workdir):
    raise CheckpointError(
      f"Teacher/model workdir {workdir!r} does not exist. Train it first "
      f"(`python -m launch.train_teacher --workdir {workdir} ...`) or fix the "
      f"path in the config."
    )
  d, step = _model_dir(workdir, which)
  mgr = _manager(d, ("model", "meta"), read_only=True, async_save=False)
  try:
    # Restore onto this process's first device whatever the device count it was written with.
    tree = mgr.item_metadata(step)["model"]
    tree = getattr(tree, "tree", tree)
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=dev),
      tree,
      is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
    )
    out = mgr.restore(
      step,
      args=ocp.args.Composite(model=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
    )
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(
      f"Cannot read the model checkpoint {os.path.join(d, str(step))}: "
      f"{type(e).__name__}: {str(e).splitlines()[0][:300]}. It is corrupt "
      f"or incomplete; pick another step or retrain."
    ) from None
  finally:
    mgr.close()
  variables = jax.tree_util.tree_map(np.asarray, dict(out["model"]))
  meta = dict(out["meta"])
  if "checksum" in meta and checksum(variables) != meta["checksum"]:
    raise CheckpointError(
      f"The model checkpoint {os.path.join(d, str(step))} fails its checksum: "
      "it is corrupt; pick another step or retrain."
    )
  if nonfinite_leaves(variables):
    raise CheckpointError(
      f"The model checkpoint {os.path.join(d, str(step))} holds NaN/inf "
      "values; pick another step or retrain."
    )
  return variables, dict(meta, step=step)


def _read_meta(d: str, step: int) -> Optional[dict]:
  mgr = _manager(d, ("model", "meta"), read_only=True, async_save=False)
  try:
    return dict(mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
  except Exception:  # noqa: BLE001 - reported by the restore that follows
    return None
  finally:
    mgr.close()


SELECTION_FILE = "selection.json"  # written by kdjax.teachers.selection.select_teacher


def selected_step(workdir: str) -> int:
  """The step ``teacher.which='selected'`` names: the choice recorded by
  :func:`kdjax.teachers.selection.select_teacher` in ``workdir/selection.json``."""
  path = os.path.join(workdir, SELECTION_FILE)
  if not os.path.exists(path):
    raise CheckpointError(
      f"teacher.which='selected' but {path} does not exist: run "
      f"`python -m launch.select_teacher --workdir {workdir}` first."
    )
  with open(path) as fh:
    return int(json.load(fh)["selected"]["step"])


def write_json(path: str, obj):
  """Writes ``obj`` to ``path`` atomically (a temporary file, then a rename); on process 0 only
  under ``jax.distributed`` (the others return at once: no barrier, so a caller on process 0
  alone is fine; readers on other processes must wait at a barrier of their own)."""
  if not distributed.is_main_process():
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)
