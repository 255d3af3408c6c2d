"""The task of a normal kdjax run: one model trained with ``config.method``.

Supervised teachers (a method without teacher terms), distillation from ``config.teacher``,
SFTN teacher training (the SFTN model is the trained ``config.model``) — all one task for
:func:`kdjax.train.loop.run`. Its stages:

* an optional **init stage** (``method.init.epochs > 0``: RepDistiller's AB/FT/FSP pre-training
  with its own loss, trainable set and constant-lr optimiser): a first stage whose epochs are not
  counted in ``num_epochs``; entering the main stage gives the main optimiser a fresh state;
* the **main stage** (``num_epochs`` epochs), or with RCO (``teacher.rco.num_anchors > 0``,
  route-constrained optimisation, Jin et al., ICCV 2019) one main-stage segment per anchor: the
  same step reading another of the teacher run's kept checkpoints (:mod:`kdjax.train.rco`), one
  continuous optimiser and lr schedule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import models
from kdjax import precision
from kdjax.data import augment
from kdjax.errors import UserError
from kdjax.methods import build_method
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import parallel
from kdjax.train import rco as rco_lib
from kdjax.train import stages as stages_lib
from kdjax.train import state as state_lib
from kdjax.train.optim import make_optimizer
from kdjax.train.runner import evaluate, load_data, scale_lr_for_batch
from kdjax.train.step import make_eval_step, make_steps
from kdjax.train.task import Export, Stage, Task
from kdjax.train.teacher import check_teacher_input, load_pretrained_teacher, load_teacher


def rco_schedule(tcfg, num_epochs: int):
  """RCO's anchor segments for ``config.teacher`` (``teacher.rco``) over ``num_epochs`` student
  epochs, from the epochs kept in the teacher run's ``kept/`` (:func:`rco_lib.rco_anchors`);
  ``()`` when RCO is off."""
  r = tcfg.rco
  if not r.num_anchors:
    return ()
  if tcfg.members:
    raise UserError(
      "teacher.rco needs a single teacher run (teacher.workdir), not teacher.members."
    )
  if not tcfg.workdir:
    raise UserError(
      "teacher.rco needs teacher.workdir: the teacher run whose kept/ are the anchors."
    )
  kept = [int(m["epoch"]) for m in ckpt_lib.kept_checkpoints(tcfg.workdir) if "epoch" in m]
  if not kept:
    raise UserError(
      f"teacher.rco: {tcfg.workdir} has no kept/ checkpoints to use as anchors; train the "
      "teacher with keep_every_epochs > 0 (configs/cifar100/teacher.py keeps every 20)."
    )
  return rco_lib.rco_anchors(
    kept,
    int(r.num_anchors),
    int(num_epochs),
    strategy=r.strategy,
    anchor_epochs=tuple(r.anchor_epochs) if r.strategy == "explicit" else None,
  )


def build_pair(config, info, needs_teacher: bool, tcfg=None):
  """``(student, teacher)`` of a run: the student ``config.model`` under
  ``config.precision.student`` and, if ``needs_teacher``, the teacher of ``tcfg`` (default
  ``config.teacher``) under ``config.precision.teacher``, checked against the dataset's input."""
  student = precision.build_model(
    config.model,
    num_classes=info.num_classes,
    policy=config.precision.student,
    **dict(config.model_kwargs),
  )
  if not needs_teacher:
    return student, None
  teacher = load_teacher(
    tcfg if tcfg is not None else config.teacher,
    info.num_classes,
    policy=config.precision.teacher,
    input_shape=info.image_shape,
  )
  check_teacher_input(teacher, info.image_shape, config.dataset.name)
  return student, teacher


def model_summary(config, method_name: str, p, i: int, teacher, teacher_metrics: dict, *, seed):
  """The ``summary.json`` fields of export ``i`` of a distillation-style run (last and best top-1,
  teacher accuracy and provenance, timings)."""
  last = p.last_eval[i]
  return {
    "model": config.model,
    "dataset": config.dataset.name,
    "method": method_name,
    "seed": seed,
    "finished": p.finished,
    "step": p.step,
    "total_steps": p.total_steps,
    "last_top1": last.get("top1"),
    "last_top5": last.get("top5"),
    "last_agreement": last.get("agreement"),
    "best_top1": p.best_top1[i] if p.best_top1[i] >= 0 else None,
    "best_epoch": p.best_epoch[i],
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
    "train_seconds": p.seconds,
    "num_devices": p.num_devices,
  }


class DistillTask(Task):
  """One student (or teacher) trained with ``config.method`` (module docstring)."""

  kind = "distill"

  def __init__(self, config, mesh):
    self.config, self.mesh = config, mesh
    method = build_method(config.method)
    dcfg = config.dataset
    feed, self.eval_batches, info, n_train = load_data(config, mesh)
    self.feed, self.info = feed, info
    bs = config.batch_size
    spe = feed.steps_per_epoch()
    if spe < 1:
      raise UserError(f"{n_train} training examples is fewer than one batch of {bs}.")
    self.steps_per_epoch, self.num_epochs = spe, int(config.num_epochs)

    # ---- models --------------------------------------------------------------------------------
    anchors = rco_schedule(config.teacher, config.num_epochs) if method.needs_teacher else ()
    tcfg = None
    if anchors:  # the last anchor (the final teacher) is the run's teacher: binding, agreement
      tcfg = config.teacher.copy_and_resolve_references()
      tcfg.which = f"epoch:{anchors[-1].teacher_epoch}"
    student, teacher = build_pair(config, info, method.needs_teacher, tcfg)
    if teacher is None and (config.teacher.workdir or config.teacher.members):
      print(
        "[kdjax] WARNING: config.teacher.workdir is set but the method has no teacher term; "
        "ignoring it."
      )
    self.teacher = teacher
    rng = jax.random.PRNGKey(config.seed)
    k_init = jax.random.split(rng, 3)[0]  # (init, connectors, run): init_train_state
    dummy = jnp.zeros((1,) + tuple(info.image_shape), jnp.float32)
    variables = student.init(k_init, dummy, train=False)
    if getattr(student, "init_teacher_from", ""):  # SFTN fine-tune mode (pretrained teacher)
      variables = load_pretrained_teacher(
        variables, student.init_teacher_from, expected_arch=student.teacher_arch
      )
    built = state_lib.init_train_state(
      student,
      teacher,
      method,
      dummy,
      rng,
      num_examples=feed.index_space,
      student_variables=variables,
    )
    method, conn_modules = built.method, built.connectors  # the method bound to the pair
    self.method = method
    n_params = models.count_params(variables["params"])
    n_conn = models.count_params(built.params["connectors"])
    print(
      f"[kdjax] {config.model}: {n_params:,} params"
      + (f"; connectors {n_conn:,}" if n_conn else "")
      + (
        f"; teacher {teacher.meta['arch']} x{len(teacher.variables)}: {teacher.num_params:,}"
        f" params (step {teacher.meta['step']} of {teacher.meta['workdir']})"
        if teacher
        else ""
      )
      + (f"; RCO anchors at teacher epochs {[a.teacher_epoch for a in anchors]}" if anchors else "")
      + f"; {mesh.devices.size} device(s); {spe} steps/epoch"
    )
    scale_lr_for_batch(config)
    tx, schedule = make_optimizer(config.optim, spe)
    plan = stages_lib.plan(
      method,
      config,
      tx,
      built.params,
      built.batch_stats,
      spe,
      feature_mask=lambda: stages_lib.student_feature_mask(student, variables, dummy),
    )
    tx, init_epochs, init_steps = plan.main_tx, plan.init_epochs, plan.init_steps
    self.init_epochs = init_epochs
    self.state = built.create(plan.init_tx if init_steps else tx)

    # ---- steps ---------------------------------------------------------------------------------
    train_tf = augment.dataset_train_transform(info, dcfg)  # crop, flip, colour jitter
    self.eval_tf = eval_tf = lambda im: augment.eval_transform(info, im)
    view_tf = augment.dataset_train_transform(info, dcfg, flip=False)  # views flip themselves
    common = dict(
      student=student,
      train_transform=train_tf,
      eval_transform=eval_tf,
      teacher=teacher.run_module if teacher else None,
      connectors=conn_modules,
      steps_per_epoch=spe,
      mixup_alpha=float(dcfg.mixup_alpha),
      view_transform=view_tf,
    )
    self.steps = make_steps(
      method=method, tx=tx, stats_mask=plan.main_stats_mask, step_offset=init_steps, **common
    )
    self.t_vars = parallel.put_replicated(teacher.run_variables, mesh) if teacher else {}
    run = lambda fns, t_vars: lambda st, item: feed.run(fns, st, item, t_vars)
    main_lr = lambda i: schedule(i - init_steps)
    stages = []
    if init_steps:
      init_fns = make_steps(
        method=method.init.method, tx=plan.init_tx, stats_mask=plan.init_stats_mask, **common
      )
      fresh = lambda st: st.replace(opt_state=parallel.put_replicated(tx.init(st.params), mesh))
      stages.append(
        Stage(
          "init",
          init_epochs,
          run(init_fns, self.t_vars),
          plan.init_schedule,
          counted=False,
          prefix="init/",
          label=method.init.method.name,
        )
      )
      main_enter = fresh
    else:
      main_enter = None
    if anchors:
      for j, a in enumerate(anchors):
        if a is anchors[-1]:
          t_vars = self.t_vars  # the final anchor: the teacher loaded above
        else:
          seg = config.teacher.copy_and_resolve_references()
          seg.which = f"epoch:{a.teacher_epoch}"
          t = load_teacher(
            seg, info.num_classes, policy=config.precision.teacher, input_shape=info.image_shape
          )
          t_vars = parallel.put_replicated(t.run_variables, mesh)
        stages.append(
          Stage(
            f"rco{j}",
            a.end - a.start,
            run(self.steps, t_vars),
            main_lr,
            enter=main_enter if j == 0 else None,
            label=f"teacher epoch {a.teacher_epoch}",
          )
        )
    else:
      stages.append(
        Stage("main", config.num_epochs, run(self.steps, self.t_vars), main_lr, enter=main_enter)
      )
    self.stages = stages
    self.anchors = anchors
    self.fix = "Lower optim.lr, check the teacher and the data normalisation"
    self.exports = [
      Export(
        "",
        lambda st: {"params": st.params["student"], "batch_stats": st.batch_stats["student"]},
        meta={
          "arch": config.model,
          "num_classes": info.num_classes,
          "dataset": dcfg.name,
          "model_kwargs": config.model_kwargs.to_dict(),
          "seed": config.seed,
        },
      )
    ]
    self.teacher_metrics, self.teacher_pred = {}, None
    self.last_val = {}

  def resume_meta(self) -> dict:
    return {"init_epochs": self.init_epochs} if self.init_epochs else {}

  def check_resumed(self, workdir, saved_meta):
    if saved_meta.get("init_epochs", 0) != self.init_epochs:
      raise UserError(
        f"{workdir}/checkpoints was written with method.init.epochs = "
        f"{saved_meta.get('init_epochs', 0)}, but the config now has {self.init_epochs}: resume "
        "with the original value (or use a new --workdir)."
      )

  def begin(self, workdir, writer, start_step):
    if self.teacher is None:
      return
    t_steps = make_eval_step(self.teacher.run_module, self.eval_tf)
    self.teacher_metrics, self.teacher_pred = evaluate(
      t_steps, self.t_vars, self.eval_batches(), self.mesh, self.config.eval_batch_size
    )
    print(f"[kdjax] teacher test top-1 {self.teacher_metrics['top1']:.2f}")
    if start_step == 0:  # once per run, not once per launch
      writer.write(0, self.teacher_metrics, prefix="teacher/")

  def evaluate(self, state):
    m, _ = evaluate(
      self.steps,
      self.exports[0].variables(state),
      self.eval_batches(),
      self.mesh,
      self.config.eval_batch_size,
      self.teacher_pred,
    )
    val = getattr(self.feed, "val_split", None)  # dataset.val_examples > 0: the held-out split
    if val is not None:
      self.last_val, _ = evaluate(
        self.steps, self.exports[0].variables(state), val, self.mesh, self.config.eval_batch_size
      )
    return [m], {}

  def log_eval(self, writer, step, metrics, extra, epoch):
    super().log_eval(writer, step, metrics, extra, epoch)
    if self.last_val:
      writer.write(step, dict(self.last_val, epoch=epoch), prefix="val/")

  def summary(self, p):
    config = self.config
    return {
      **model_summary(
        config, self.method.name, p, 0, self.teacher, self.teacher_metrics, seed=config.seed
      ),
      **({"init_epochs": self.init_epochs} if self.init_epochs else {}),
      **(
        {"last_val_top1": self.last_val.get("top1"), "last_val_loss": self.last_val.get("loss")}
        if self.last_val
        else {}
      ),
      **(
        {
          "rco_anchors": [
            dict(start=a.start, end=a.end, teacher_epoch=a.teacher_epoch) for a in self.anchors
          ]
        }
        if self.anchors
        else {}
      ),
    }, {}
