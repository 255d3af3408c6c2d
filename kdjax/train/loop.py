"""The training loop shared by teacher training and distillation.

``train_and_evaluate(config, workdir)`` trains ``config.model`` on ``config.dataset`` with
``config.method`` (supervised when the method has no teacher terms), evaluating every epoch,
checkpointing for resume and keeping intermediate model checkpoints. Relaunching the same call on
the same workdir resumes from the latest checkpoint: the data order is a function of
``(seed, epoch)`` and the augmentation key of ``(seed, step)``, so an interrupted-and-resumed run
ends with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import jax.numpy as jnp

from kdjax import models
from kdjax import precision
from kdjax.config import validate
from kdjax.errors import UserError
from kdjax.data import augment
from kdjax.methods import build_method
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import parallel
from kdjax.train import stages as stages_lib
from kdjax.train import state as state_lib
from kdjax.train.logging import MetricWriter
from kdjax.train.optim import make_optimizer

# Shared run machinery (also re-exported here under its historical names: loop.evaluate, ...).
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
from kdjax.train.step import make_eval_step, make_steps
from kdjax.train.faults import crash_point
from kdjax.train.teacher import check_teacher_input, load_pretrained_teacher, load_teacher

log = logging.getLogger("kdjax")


def _tap_shapes(module, variables, x):
  _, taps = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, x)
  return {k: v.shape for k, v in taps.items()}


def train_and_evaluate(config, workdir: str, *, mesh=None, _step_hook=None) -> dict:
  """Runs (or resumes) one training run; returns the summary dict also written to
  ``workdir/summary.json`` (last and best top-1, teacher accuracy, timings)."""
  validate(config)
  parallel.check_single_process()
  method = build_method(config.method)
  mesh = mesh or parallel.make_mesh()
  parallel.check_batch(config.batch_size, mesh)
  prepare_workdir(workdir)

  # ---- data ------------------------------------------------------------------------------------
  dcfg = config.dataset
  feed, eval_batches, info, n_train = load_data(config, mesh)
  bs = config.batch_size
  steps_per_epoch = feed.steps_per_epoch()
  if steps_per_epoch < 1:
    raise UserError(f"{n_train} training examples is fewer than one batch of {bs}.")
  total_steps = steps_per_epoch * config.num_epochs

  # ---- models ----------------------------------------------------------------------------------
  student = precision.build_model(
    config.model,
    num_classes=info.num_classes,
    policy=config.precision.student,
    **dict(config.model_kwargs),
  )
  teacher = (
    load_teacher(
      config.teacher,
      info.num_classes,
      policy=config.precision.teacher,
      input_shape=info.image_shape,
    )
    if method.needs_teacher
    else None
  )
  if teacher is not None:
    check_teacher_input(teacher, info.image_shape, dcfg.name)
  if teacher is None and (config.teacher.workdir or config.teacher.members):
    log.warning("config.teacher.workdir is set but the method has no teacher term; ignoring it.")
  rng = jax.random.PRNGKey(config.seed)
  k_init = jax.random.split(rng, 3)[0]  # (init, connectors, run): init_train_state
  dummy = jnp.zeros((1,) + tuple(info.image_shape), jnp.float32)
  variables = student.init(k_init, dummy, train=False)
  if getattr(student, "init_teacher_from", ""):  # SFTN fine-tune mode (pretrained teacher)
    variables = load_pretrained_teacher(
      variables, student.init_teacher_from, expected_arch=student.teacher_arch
    )
  built = state_lib.init_train_state(
    student, teacher, method, dummy, rng, num_examples=feed.index_space, student_variables=variables
  )
  method, conn_modules = built.method, built.connectors  # the method bound to the pair
  params, batch_stats, conn_params = built.params, built.batch_stats, built.params["connectors"]
  n_params = models.count_params(variables["params"])
  n_conn = models.count_params(conn_params)
  print(
    f"[kdjax] {config.model}: {n_params:,} params"
    + (f"; connectors {n_conn:,}" if n_conn else "")
    + (
      f"; teacher {teacher.meta['arch']} x{len(teacher.variables)}: {teacher.num_params:,}"
      f" params (step {teacher.meta['step']} of {teacher.meta['workdir']})"
      if teacher
      else ""
    )
    + f"; {mesh.devices.size} device(s); {steps_per_epoch} steps/epoch"
  )
  scale_lr_for_batch(config)

  tx, schedule = make_optimizer(config.optim, steps_per_epoch)
  # Stages (kdjax.train.stages): the main stage's trainable set and an optional init stage,
  # which counts as the first init_epochs epochs of the step counter (its own optimiser state).
  plan = stages_lib.plan(
    method,
    config,
    tx,
    params,
    batch_stats,
    steps_per_epoch,
    feature_mask=lambda: stages_lib.student_feature_mask(student, variables, dummy),
  )
  tx, init_epochs, init_steps = plan.main_tx, plan.init_epochs, plan.init_steps
  total_steps += init_steps
  state = built.create(plan.init_tx if init_steps else tx)

  # ---- checkpoints / resume -------------------------------------------------------------------
  ckpts = ckpt_lib.RunCheckpoints(workdir, async_save=config.async_checkpoint)
  run_meta = {"best_top1": -1.0, "best_epoch": 0}
  if init_steps:
    run_meta.update(init_epochs=init_epochs, stage="init")
  resuming = ckpts.latest_step() is not None
  check_resume_config(workdir, config, resuming)
  saved_meta = {}
  if resuming:
    if init_steps and ckpts.latest_step() >= init_steps:  # saved in the main stage
      state = state.replace(opt_state=tx.init(state.params))
    abstract = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(mesh)), state
    )
    state, saved_meta = ckpts.restore_state(abstract)
    if saved_meta.get("init_epochs", 0) != init_epochs:
      raise UserError(
        f"{workdir}/checkpoints was written with method.init.epochs = "
        f"{saved_meta.get('init_epochs', 0)}, but the config now has {init_epochs}: resume "
        "with the original value (or use a new --workdir)."
      )
    run_meta.update({k: saved_meta[k] for k in run_meta if k in saved_meta})
    print(f"[kdjax] resumed from {workdir}/checkpoints/{int(state.step)}")
  state = parallel.put_replicated(state, mesh)

  # ---- device data, steps ---------------------------------------------------------------------
  train_tf = augment.dataset_train_transform(info, dcfg)  # crop, flip, colour jitter
  eval_tf = lambda im: augment.eval_transform(info, im)
  # Methods with views (SSKD's rotations) flip once per example themselves.
  view_tf = augment.dataset_train_transform(info, dcfg, flip=False)
  steps = make_steps(
    student=student,
    method=method,
    tx=tx,
    train_transform=train_tf,
    eval_transform=eval_tf,
    teacher=teacher.run_module if teacher else None,
    connectors=conn_modules,
    steps_per_epoch=steps_per_epoch,
    mixup_alpha=float(dcfg.mixup_alpha),
    stats_mask=plan.main_stats_mask,
    step_offset=init_steps,
    view_transform=view_tf,
  )
  init_fns = (
    make_steps(
      student=student,
      method=method.init.method,
      tx=plan.init_tx,
      train_transform=train_tf,
      eval_transform=eval_tf,
      teacher=teacher.run_module if teacher else None,
      connectors=conn_modules,
      steps_per_epoch=steps_per_epoch,
      mixup_alpha=float(dcfg.mixup_alpha),
      stats_mask=plan.init_stats_mask,
      view_transform=view_tf,
    )
    if init_steps
    else None
  )
  t_vars = parallel.put_replicated(teacher.run_variables, mesh) if teacher else {}

  start_step = int(state.step)
  writer = MetricWriter(workdir, tensorboard=config.tensorboard, resume_step=start_step)
  summary_path = os.path.join(workdir, "summary.json")
  teacher_metrics, teacher_pred = {}, None
  if teacher is not None:
    t_steps = make_eval_step(teacher.run_module, eval_tf)
    teacher_metrics, teacher_pred = evaluate(
      t_steps, t_vars, eval_batches(), mesh, config.eval_batch_size
    )
    print(f"[kdjax] teacher test top-1 {teacher_metrics['top1']:.2f}")
    if start_step == 0:  # once per run, not once per launch
      writer.write(0, teacher_metrics, prefix="teacher/")

  def model_meta(epoch, metrics):
    return {
      "arch": config.model,
      "num_classes": info.num_classes,
      "dataset": dcfg.name,
      "model_kwargs": config.model_kwargs.to_dict(),
      "epoch": epoch,
      "step": int(state.step),
      "seed": config.seed,
      "final": epoch == config.num_epochs,
      **{f"test_{k}": v for k, v in metrics.items()},
    }

  def model_vars():
    return {"params": state.params["student"], "batch_stats": state.batch_stats["student"]}

  keep = _keep_epochs(config)
  stop_step = min(total_steps, config.max_steps) if config.max_steps > 0 else total_steps
  last_eval = dict(saved_meta.get("last_eval") or {})
  window = MetricWindow(
    ckpts, workdir, "Lower optim.lr, check the teacher and the data normalisation", start_step
  )
  window.from_meta(saved_meta)
  clock = Clock(start_step, min(stop_step, total_steps))

  def log_train(step):
    mean = window.flush(step)
    if mean is None:
      return
    in_init = step <= init_steps  # flushed at every epoch end: never mixes stages
    mean["lr"] = float(plan.init_schedule(step - 1) if in_init else schedule(step - 1 - init_steps))
    writer.write(step, mean, prefix="init/" if in_init else "train/")

  def save_state(step, st, epoch):
    window.check(step)
    ckpts.save_state(step, st, dict(run_meta, epoch=epoch, last_eval=last_eval, **window.to_meta()))

  step = start_step
  try:
    first_epoch = start_step // steps_per_epoch
    for epoch in range(first_epoch, init_epochs + config.num_epochs):
      if step >= stop_step:
        break
      in_init = epoch < init_epochs
      cur_steps = init_fns if in_init else steps
      state, step, epoch_done = run_epoch_steps(
        feed,
        lambda st, item, fns=cur_steps: feed.run(fns, st, item, t_vars),
        state,
        epoch=epoch,
        step=step,
        stop_step=stop_step,
        steps_per_epoch=steps_per_epoch,
        config=config,
        record=window.record,
        check=window.check,
        log=log_train,
        save_state=lambda s, st, ep=epoch: save_state(s, st, ep),
        step_hook=_step_hook,
        desc=(
          f"init epoch {epoch + 1}/{init_epochs}"
          if in_init
          else f"epoch {epoch + 1 - init_epochs}/{config.num_epochs}"
        ),
      )
      if not epoch_done:  # max_steps reached mid-epoch (state saved)
        break
      if in_init:  # init stage: no evaluation; fresh optimiser after its end
        if epoch + 1 == init_epochs:
          state = state.replace(opt_state=parallel.put_replicated(tx.init(state.params), mesh))
          run_meta["stage"] = "main"
        print(
          f"[kdjax] init epoch {epoch + 1}/{init_epochs} done ({method.init.method.name}), "
          f"{clock.epoch_line(step)}"
        )
        save_state(step, state, epoch + 1)
        crash_point("state", step)
        continue
      e = epoch + 1 - init_epochs  # the main stage's own epochs
      # Epoch end: the model checkpoints first, the resume state last. A kill in between
      # replays the epoch on relaunch and writes the same model checkpoints again (idempotent).
      line = f"[kdjax] epoch {e}/{config.num_epochs}"
      if e % config.eval_every_epochs == 0 or e == config.num_epochs or e in keep:
        crash_point("eval", step)
        last_eval, _ = evaluate(
          steps, model_vars(), eval_batches(), mesh, config.eval_batch_size, teacher_pred
        )
        writer.write(step, dict(last_eval, epoch=e), prefix="test/")
        if last_eval["top1"] > run_meta["best_top1"]:
          run_meta.update(best_top1=last_eval["top1"], best_epoch=e)
          ckpts.save_model("best", step, model_vars(), model_meta(e, last_eval))
          crash_point("best", step)
        line += (
          f": test top-1 {last_eval['top1']:.2f} "
          f"(best {run_meta['best_top1']:.2f} @ {run_meta['best_epoch']})"
          + (f", agreement {last_eval['agreement']:.2f}" if "agreement" in last_eval else "")
        )
      print(f"{line}; {clock.epoch_line(step)}")
      if e in keep:
        ckpts.save_model("kept", step, model_vars(), model_meta(e, last_eval))
        crash_point("kept", step)
      save_state(step, state, e)
      crash_point("state", step)
  finally:
    ckpts.close()
    writer.close()

  finished = step >= total_steps
  if step == start_step and os.path.exists(summary_path):
    # Nothing was trained or evaluated (a finished run launched again): keep the figures of the
    # run that produced this state instead of overwriting them with nulls.
    with open(summary_path) as fh:
      prev = json.load(fh)
    if prev.get("step") == step:
      prev["state"] = state
      return prev
  summary = {
    "model": config.model,
    "dataset": dcfg.name,
    "method": method.name,
    "seed": config.seed,
    "finished": finished,
    "step": step,
    "total_steps": total_steps,
    "last_top1": last_eval.get("top1"),
    "last_top5": last_eval.get("top5"),
    "last_agreement": last_eval.get("agreement"),
    "best_top1": run_meta["best_top1"] if run_meta["best_top1"] >= 0 else None,
    "best_epoch": run_meta["best_epoch"],
    "teacher_top1": teacher_metrics.get("top1"),
    "teacher": (
      dict(
        workdir=teacher.meta["workdir"],
        arch=teacher.meta["arch"],
        step=teacher.meta["step"],
        members=teacher.meta["members"],
      )
      if teacher
      else None
    ),
    "train_seconds": clock.elapsed(),
    "num_devices": int(mesh.devices.size),
    **({"init_epochs": init_epochs} if init_steps else {}),
  }
  ckpt_lib.write_json(summary_path, summary)
  summary["state"] = state
  return summary
