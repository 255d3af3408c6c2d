"""The one training loop: every kind of kdjax run is ``run(config, workdir, task_factory)``.

The loop owns what every run needs (see :mod:`kdjax.train.task` for what a task adds): the
workdir and its ``config.json`` (a relaunch with another config is refused, naming each differing
key), resume from the latest verified checkpoint (the data order is a function of
``(seed, epoch)`` and the augmentation key of ``(seed, step)``, so an interrupted-and-resumed run
ends with the same parameters as an uninterrupted one), the stages, the non-finite stop (before
any checkpoint write), log and checkpoint cadence, evaluation cadence, the ``best/`` and ``kept/``
model checkpoints of every export, the crash points of ``KDJAX_CRASH_AT``, the finished-run guard
and ``summary.json``.

Entry points (one per kind of run, each a task of its own module):

* :func:`train_and_evaluate` — supervised teachers, distillation (init stages, RCO teacher
  segments), SFTN teacher training: :class:`kdjax.train.distill.DistillTask`;
* :func:`train_online` — DML / KDCL with K peers: :class:`kdjax.train.online.OnlineTask`;
* :func:`train_members` — N seeds of one run in one step: :class:`kdjax.train.members.MembersTask`.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import json
import os
from typing import Callable, Sequence

import jax

from kdjax import distributed
from kdjax.config import json_normalise, validate
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import distill as distill_lib
from kdjax.train import members as members_lib
from kdjax.train import online as online_lib
from kdjax.train import parallel
from kdjax.train.faults import crash_point
from kdjax.train.logging import MetricWriter
from kdjax.train.task import Progress, Task

# Shared run machinery, re-exported under its historical names (loop.evaluate, ...).
from kdjax.train.runner import (  # noqa: F401
  Clock,
  InMemoryFeed,
  MetricWindow,
  NonFiniteLossError,
  StreamFeed,
  _keep_epochs,
  check_resume_config,
  evaluate,
  load_data,
  prepare_workdir,
  run_epoch_steps,
  scale_lr_for_batch,
  split_batches,
  stream_batches,
)
from kdjax.train.teacher import load_teacher  # noqa: F401


class _Items:
  """Adapts :meth:`Task.items` to the ``feed.epoch`` interface of :func:`run_epoch_steps`."""

  def __init__(self, items: Callable):
    self.epoch = items


def _as_list(v, n: int, default):
  if v is None:
    return [default] * n
  return list(v) if isinstance(v, (list, tuple)) else [v] + [default] * (n - 1)


def run(
  config, workdir: str, make_task: Callable[..., Task], *, mesh=None, _step_hook=None
) -> dict:
  """Runs (or resumes) the run of ``make_task(config, mesh)`` in ``workdir``; returns the
  summary dict also written to ``workdir/summary.json`` (with the final ``state`` added)."""
  validate(config)
  mesh = mesh or parallel.make_mesh()
  parallel.check_batch(config.batch_size, mesh)
  # Several processes (jax.distributed): every process runs this same loop on its shard of each
  # global batch; files, logs and progress bars come from process 0 only.
  quiet = (
    contextlib.redirect_stdout(io.StringIO()) if jax.process_index() else contextlib.nullcontext()
  )
  with quiet:
    prepare_workdir(workdir)
    task = make_task(config, mesh)
    try:
      return _run(task, config, workdir, mesh, _step_hook)
    finally:
      task.close()


def _run(task: Task, config, workdir: str, mesh, _step_hook) -> dict:
  stages, exports = list(task.stages), list(task.exports)
  spe = task.steps_per_epoch
  start_epochs = [0]  # the first epoch (0-based, of the whole run) of each stage
  for st in stages:
    start_epochs.append(start_epochs[-1] + st.epochs)
  total_epochs = start_epochs.pop()
  counted_before, n_counted = [], 0
  for st in stages:
    counted_before.append(n_counted)
    n_counted += st.epochs if st.counted else 0
  total_steps = total_epochs * spe
  stage_at = lambda epoch: bisect.bisect_right(start_epochs, epoch) - 1
  stage_of_step = lambda s: stage_at(s // spe)  # the stage a state saved at step ``s`` is in

  def enter_upto(state, step: int):
    """The state's structure at step ``step``: the ``enter`` of every stage begun by then."""
    for i in range(1, len(stages)):
      if stages[i].enter is not None and start_epochs[i] * spe <= step:
        state = stages[i].enter(state)
    return state

  # ---- checkpoints / resume -------------------------------------------------------------------
  n_ex = len(exports)
  ckpts = ckpt_lib.RunCheckpoints(workdir, async_save=config.async_checkpoint)
  ex_ckpts = []
  for ex in exports:
    if ex.variables is None:
      ex_ckpts.append(None)
    elif not ex.subdir:
      ex_ckpts.append(ckpts)
    else:
      ex_ckpts.append(
        ckpt_lib.RunCheckpoints(
          os.path.join(workdir, ex.subdir), async_save=config.async_checkpoint
        )
      )
  all_ckpts = [ckpts] + [c for c in ex_ckpts if c is not None and c is not ckpts]
  run_meta = dict(task.resume_meta(), best_top1=[-1.0] * n_ex, best_epoch=[0] * n_ex)
  resuming = ckpts.latest_step() is not None
  cfg_json = check_resume_config(
    workdir, config, resuming, now=task.config_json(json_normalise(config))
  )
  distributed.sync("kdjax:config")  # no process reads a config.json being rewritten
  for ex in exports:
    if ex.subdir and ex.variables is not None:  # each export's dir reads like a normal run's
      ckpt_lib.write_json(
        os.path.join(workdir, ex.subdir, "config.json"), task.export_config_json(ex, cfg_json)
      )
  state = task.state
  saved_meta = {}
  if resuming:
    state = enter_upto(state, ckpts.latest_step())
    abstract = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(mesh)), state
    )
    state, saved_meta = ckpts.restore_state(abstract)
    task.check_resumed(workdir, saved_meta)
    for k, default in (("best_top1", -1.0), ("best_epoch", 0)):
      run_meta[k] = _as_list(saved_meta.get(k), n_ex, default)
    print(f"[kdjax] resumed from {workdir}/checkpoints/{task.step_of(state)}")
  state = parallel.put_replicated(state, mesh)

  start_step = task.step_of(state)
  writer = MetricWriter(workdir, tensorboard=config.tensorboard, resume_step=start_step)
  summary_path = os.path.join(workdir, "summary.json")
  task.begin(workdir, writer, start_step)

  keep = _keep_epochs(config)
  stop_step = min(total_steps, config.max_steps) if config.max_steps > 0 else total_steps
  last_eval = saved_meta.get("last_eval")
  last_eval = [dict(m) for m in last_eval] if isinstance(last_eval, list) else [{}] * n_ex
  window = MetricWindow(ckpts, workdir, task.fix, start_step)
  window.from_meta(saved_meta)
  clock = Clock(start_step, min(stop_step, total_steps))
  items = _Items(task.items)

  def progress(step):
    return Progress(
      finished=step >= total_steps,
      step=step,
      total_steps=total_steps,
      last_eval=last_eval,
      best_top1=run_meta["best_top1"],
      best_epoch=run_meta["best_epoch"],
      seconds=clock.elapsed(),
      num_devices=int(mesh.devices.size),
    )

  def model_meta(j, epoch, metrics, step):
    return dict(
      exports[j].meta,
      epoch=epoch,
      step=step,
      final=epoch == task.num_epochs,
      **{f"test_{k}": v for k, v in metrics.items()},
    )

  def log_train(step):
    mean = window.flush(step)
    if mean is None:
      return
    st = stages[stage_of_step(step - 1)]  # flushed at every epoch end: never mixes stages
    mean["lr"] = float(st.lr(step - 1))
    task.log_train(writer, step, mean, st.prefix)

  def save_state(step, st, counted_done):
    window.check(step)
    ckpts.save_state(
      step,
      st,
      dict(
        run_meta,
        epoch=counted_done,
        stage=stages[stage_of_step(step)].name,
        last_eval=last_eval,
        **window.to_meta(),
      ),
    )

  step = start_step
  try:
    for epoch in range(start_step // spe, total_epochs):
      if step >= stop_step:
        break
      i = stage_at(epoch)
      st = stages[i]
      k = epoch - start_epochs[i]  # the epoch within the stage (0-based)
      done_before = counted_before[i] + (k if st.counted else 0)
      state, step, epoch_done = run_epoch_steps(
        items,
        lambda s, item, fn=st.run: fn(s, item),
        state,
        epoch=epoch,
        step=step,
        stop_step=stop_step,
        steps_per_epoch=spe,
        config=config,
        record=window.record,
        check=window.check,
        log=log_train,
        save_state=lambda s, x, d=done_before: save_state(s, x, d),
        step_hook=_step_hook,
        desc=(
          f"epoch {done_before + 1}/{task.num_epochs}"
          if st.counted
          else f"{st.name} epoch {k + 1}/{st.epochs}"
        ),
      )
      if not epoch_done:  # max_steps reached mid-epoch (state saved)
        break
      last_of_stage = k + 1 == st.epochs
      nxt = stages[i + 1] if last_of_stage and i + 1 < len(stages) else None
      if not st.counted:  # e.g. an init stage: trained and checkpointed, never evaluated
        if nxt is not None and nxt.enter is not None:
          state = nxt.enter(state)
        print(
          f"[kdjax] {st.name} epoch {k + 1}/{st.epochs} done"
          + (f" ({st.label})" if st.label else "")
          + f", {clock.epoch_line(step)}"
        )
        save_state(step, state, done_before)
        crash_point("state", step)
        continue
      e = done_before + 1  # the run's counted epochs, 1..num_epochs
      # Epoch end: the model checkpoints first, the resume state last. A kill in between
      # replays the epoch on relaunch and writes the same model checkpoints again (idempotent).
      line = f"[kdjax] epoch {e}/{task.num_epochs}"
      if e % config.eval_every_epochs == 0 or e == task.num_epochs or e in keep:
        crash_point("eval", step)
        last_eval, extra = task.evaluate(state)
        task.log_eval(writer, step, last_eval, extra, e)
        saved_best = False
        for j, ex in enumerate(exports):
          if last_eval[j]["top1"] > run_meta["best_top1"][j]:
            run_meta["best_top1"][j], run_meta["best_epoch"][j] = last_eval[j]["top1"], e
            if ex_ckpts[j] is not None:
              ex_ckpts[j].save_model(
                "best", step, ex.variables(state), model_meta(j, e, last_eval[j], step)
              )
              saved_best = True
        if saved_best:
          crash_point("best", step)
        line += task.eval_line(last_eval, progress(step))
      print(f"{line}; {clock.epoch_line(step)}")
      if e in keep:
        for j, ex in enumerate(exports):
          if ex_ckpts[j] is not None:
            ex_ckpts[j].save_model(
              "kept", step, ex.variables(state), model_meta(j, e, last_eval[j], step)
            )
        crash_point("kept", step)
      if nxt is not None and nxt.enter is not None:
        state = nxt.enter(state)
      save_state(step, state, e)
      crash_point("state", step)
  finally:
    for c in all_ckpts:
      c.close()
    writer.close()
    # RunCheckpoints creates all three of its dirs; drop the unused empty ones (a joint run of
    # peers/members has no models of its own, its exports no resume state) so that no empty
    # 'kept' dir looks like an interrupted run.
    unused = [os.path.join(workdir, "kept"), os.path.join(workdir, "best")]
    unused += [os.path.join(workdir, ex.subdir, "checkpoints") for ex in exports if ex.subdir]
    for d in unused if jax.process_index() == 0 else ():
      if os.path.isdir(d) and not os.listdir(d):
        os.rmdir(d)

  if step == start_step and os.path.exists(summary_path):
    # Nothing was trained or evaluated (a finished run launched again): keep the figures of the
    # run that produced this state instead of overwriting them with nulls.
    with open(summary_path) as fh:
      prev = json.load(fh)
    if prev.get("step") == step:
      prev["state"] = state
      return prev
  summary, per_export = task.summary(progress(step))
  for sub, s in per_export.items():
    ckpt_lib.write_json(os.path.join(workdir, sub, "summary.json"), s)
  ckpt_lib.write_json(summary_path, summary)
  summary["state"] = state
  return summary


# ---- the entry points ----------------------------------------------------------------------------
def train_and_evaluate(config, workdir: str, *, mesh=None, _step_hook=None) -> dict:
  """Trains (or resumes) ``config.model`` on ``config.dataset`` with ``config.method``
  (supervised when the method has no teacher terms): :class:`kdjax.train.distill.DistillTask`.
  Returns the summary also written to ``workdir/summary.json`` (last and best top-1, teacher
  accuracy, timings)."""
  return run(config, workdir, distill_lib.DistillTask, mesh=mesh, _step_hook=_step_hook)


def train_online(config, workdir: str, *, mesh=None, _step_hook=None) -> dict:
  """Online distillation (DML / KDCL, ``config.online``): :class:`kdjax.train.online.OnlineTask`.
  Returns the summary (each peer's and the logit-mean ensemble's last and best top-1)."""
  return run(config, workdir, online_lib.OnlineTask, mesh=mesh, _step_hook=_step_hook)


def train_members(
  config,
  seeds: Sequence[int],
  workdir: str,
  *,
  shared_data: bool = False,
  impl: str = "auto",
  grid=None,
  mesh=None,
  _step_hook=None,
) -> dict:
  """``len(seeds)`` members of the run ``config`` in one step (``config.seed`` is ignored):
  :class:`kdjax.train.members.MembersTask`. Returns the joint summary (per-member last/best
  top-1 and their mean ± std). ``grid``: hyper-parameters as a member axis too — a dict of
  dotted ``method.``/``optim.`` keys to value lists (Cartesian product) or a list of override
  dicts; every grid point is trained with every seed (:func:`kdjax.train.members.grid_points`),
  and the summary adds each point's mean ± std over the seeds."""
  make = lambda cfg, m: members_lib.MembersTask(
    cfg, m, seeds=seeds, shared_data=shared_data, impl=impl, grid=grid
  )
  return run(config, workdir, make, mesh=mesh, _step_hook=_step_hook)
