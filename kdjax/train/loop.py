"""The training loop shared by teacher training and distillation.

``train_and_evaluate(config, workdir)`` trains ``config.model`` on ``config.dataset`` with
``config.method`` (supervised when the method has no teacher terms), evaluating every epoch,
checkpointing for resume and keeping intermediate model checkpoints. Relaunching the same call on
the same workdir resumes from the latest checkpoint: the data order is a function of
``(seed, epoch)`` and the augmentation key of ``(seed, step)``, so an interrupted-and-resumed run
ends with the same parameters as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import data as kdata
from kdjax import models
from kdjax.config import json_normalise, resume_config_diff, validate
from kdjax.errors import UserError
from kdjax.data import augment
from kdjax.methods import build_method
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import parallel
from kdjax.train import stages as stages_lib
from kdjax.train import state as state_lib
from kdjax.train.logging import MetricWriter
from kdjax.train.optim import make_optimizer
from kdjax.train.step import make_eval_step, make_steps
from kdjax.train.faults import crash_point
from kdjax.train.teacher import check_teacher_input, load_pretrained_teacher, load_teacher

log = logging.getLogger("kdjax")


# The loss, the parameters or the BatchNorm statistics became NaN/inf; nothing of the bad state
# was written (kept for its name: it is kdjax.train.checkpoint.NonFiniteError).
NonFiniteLossError = ckpt_lib.NonFiniteError


def _tap_shapes(module, variables, x):
  _, taps = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, x)
  return {k: v.shape for k, v in taps.items()}


def split_batches(split: "kdata.ArraySplit", batch_size: int):
  """Sequential ``(images, labels)`` numpy batches of an in-memory split."""
  n = len(split.labels)
  for start in range(0, n, batch_size):
    yield split.images[start:start + batch_size], split.labels[start:start + batch_size]


def stream_batches(stream):
  for b in stream.iter_epoch(0):
    yield b["image"], b["label"]


def evaluate(steps, variables, batches, mesh, batch_size: int,
             teacher_pred: Optional[np.ndarray] = None):
  """``steps``: :func:`kdjax.train.step.make_eval_step`'s function (or a StepFns). Top-1/top-5/loss (and agreement with ``teacher_pred``) over all ``batches``; returns
  ``(metrics, predictions)``. ``batches`` is an ArraySplit or an iterable of ``(images, labels)``
  numpy batches of at most ``batch_size``. Batches are padded to a fixed, device-divisible size
  and masked, so one compiled eval step serves the whole set."""
  if isinstance(batches, kdata.ArraySplit):
    batches = split_batches(batches, batch_size)
  eval_fn = getattr(steps, "eval_batch", steps)   # a StepFns or a make_eval_step function
  n_dev = mesh.devices.size
  bs = max(n_dev, -(-batch_size // n_dev) * n_dev)
  sums, preds, seen = None, [], 0
  for images, labels in batches:
    k = len(labels)
    pad = bs - k
    img = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    lab = np.concatenate([labels.astype(np.int32), np.zeros((pad,), np.int32)])
    mask = np.concatenate([np.ones((k,), np.float32), np.zeros((pad,), np.float32)])
    tp = (np.concatenate([teacher_pred[seen:seen + k], np.zeros((pad,), np.int32)])
          if teacher_pred is not None else np.full((bs,), -1, np.int32))
    seen += k
    put = lambda a: parallel.put_batch(a, mesh)
    out, pred = eval_fn(variables, put(img), put(lab), put(mask), put(tp))
    out = jax.device_get(out)
    sums = out if sums is None else {key: sums[key] + out[key] for key in sums}
    preds.append(np.asarray(pred)[:k])
  c = float(sums["count"])
  metrics = {"top1": 100.0 * sums["correct1"] / c, "top5": 100.0 * sums["correct5"] / c,
             "loss": sums["loss_sum"] / c}
  if teacher_pred is not None:
    metrics["agreement"] = 100.0 * sums["agree_sum"] / c
  return {k: float(v) for k, v in metrics.items()}, np.concatenate(preds)


class InMemoryFeed:
  """The whole training split lives on the device(s); a step receives a sharded index vector and
  gathers + augments inside the jit (no per-step host->device image copies)."""

  def __init__(self, split, cfg, mesh):
    self.n = len(split.labels)
    self.cfg, self.mesh = cfg, mesh
    self.images = parallel.put_replicated(split.images, mesh)
    self.labels = parallel.put_replicated(split.labels.astype(np.int32), mesh)
    self.index = parallel.put_replicated(split.index.astype(np.int32), mesh)
    self.index_space = int(split.index.max()) + 1 if self.n else 0

  def steps_per_epoch(self):
    bs = self.cfg.batch_size
    return self.n // bs if self.cfg.drop_remainder else math.ceil(self.n / bs)

  def epoch(self, epoch, offset):
    batches = kdata.batch_indices(self.n, self.cfg.batch_size, seed=self.cfg.seed, epoch=epoch,
                                  drop_remainder=self.cfg.drop_remainder)
    for idx in batches[offset:]:
      yield parallel.put_batch(idx.astype(np.int32), self.mesh)

  def run(self, steps, state, item, t_vars):
    return steps.train_indexed(state, self.images, self.labels, self.index, item, t_vars)


class StreamFeed:
  """Host-side decoding and augmentation (ImageNet): batches are copied to the devices."""

  def __init__(self, stream, mesh):
    self.stream, self.mesh = stream, mesh

  def steps_per_epoch(self):
    return len(self.stream)

  def epoch(self, epoch, offset):
    import itertools
    for b in itertools.islice(self.stream.iter_epoch(epoch), offset, None):
      yield {k: parallel.put_batch(v, self.mesh) for k, v in b.items()}

  def run(self, steps, state, item, t_vars):
    return steps.train_batch(state, item, t_vars)


def _keep_epochs(config) -> set:
  keep = set(int(e) for e in config.keep_epochs)
  if config.keep_every_epochs > 0:
    keep |= set(range(config.keep_every_epochs, config.num_epochs + 1, config.keep_every_epochs))
  keep.add(config.num_epochs)
  return keep


def load_data(config, mesh):
  """The training feed and test batches of ``config.dataset`` (shared with kdjax.train.online).

  Fills in ``config.dataset.train_split/eval_split`` defaults. Returns ``(feed, eval_batches,
  info, n_train)``: an :class:`InMemoryFeed` or :class:`StreamFeed`, a callable giving a fresh
  iterable of ``(images, labels)`` test batches, the dataset info (``image_shape`` is the crop
  size for streamed datasets) and the number of training examples."""
  dcfg = config.dataset
  info = kdata.info(dcfg.name)
  dcfg.train_split = dcfg.train_split or info.train_split
  dcfg.eval_split = dcfg.eval_split or info.eval_split
  if info.in_memory:
    train = kdata.load_arrays(dcfg.name, dcfg.train_split, data_dir=dcfg.data_dir,
                              idx_dir=dcfg.idx_dir, limit=dcfg.train_limit or None)
    test = kdata.load_arrays(dcfg.name, dcfg.eval_split, data_dir=dcfg.data_dir,
                             idx_dir=dcfg.idx_dir, limit=dcfg.eval_limit or None)
    feed = InMemoryFeed(train, config, mesh)
    n_train = feed.n
    eval_batches = lambda: split_batches(test, config.eval_batch_size)
  else:
    size = dcfg.image_size or info.image_shape[0]
    info = dataclasses.replace(info, image_shape=(size, size, info.image_shape[2]))
    mk = lambda split, train, limit, bs: kdata.HostStream(
        dcfg.name, split, batch_size=bs, seed=config.seed, train=train,
        data_dir=dcfg.data_dir, image_size=size, flip=dcfg.flip,
        drop_remainder=config.drop_remainder if train else False,
        num_threads=dcfg.stream_threads, limit=limit or None)
    feed = StreamFeed(mk(dcfg.train_split, True, dcfg.train_limit, config.batch_size), mesh)
    test_stream = mk(dcfg.eval_split, False, dcfg.eval_limit, config.eval_batch_size)
    n_train = feed.stream.num_examples
    feed.index_space = int(np.max(feed.stream._index)) + 1  # pylint: disable=protected-access
    eval_batches = lambda: stream_batches(test_stream)
  return feed, eval_batches, info, n_train


class MetricWindow:
  """The train metrics of the steps since the last log line, and the non-finite stop.

  Device metrics are queued by :meth:`record` (no host sync); :meth:`check` fetches them and
  raises :class:`NonFiniteLossError` if a loss is non-finite or a step produced a non-finite
  parameter or BatchNorm statistic (the step's ``finite`` metric), after the pending checkpoint
  writes finish, so the latest good checkpoint stays intact. It runs before every checkpoint
  write. :meth:`flush` returns the window's means (the log line). The fetched but not yet logged
  values travel in the resume checkpoint (:meth:`to_meta` / :meth:`from_meta`) so that an
  interrupted run logs exactly the lines of an uninterrupted one."""

  def __init__(self, ckpts, workdir: str, fix: str, start_step: int):
    self.ckpts, self.workdir, self.fix = ckpts, workdir, fix
    self.device, self.host, self.first = [], [], start_step

  def record(self, metrics):
    self.device.append(metrics)

  def check(self, step: int):
    if self.device:
      fetched = jax.device_get(self.device)
      self.device = []
      self.host += [{k: float(v) for k, v in m.items()} for m in fetched]
    bad_loss = not all(math.isfinite(m["loss"]) for m in self.host)
    bad_state = any(m.get("finite", 1.0) != 1.0 for m in self.host)
    if bad_loss or bad_state:
      self.ckpts.wait()
      latest = self.ckpts.latest_step()
      what = ("training loss" if bad_loss else "parameters or BatchNorm statistics")
      raise NonFiniteLossError(
          f"The {what} became non-finite within steps [{self.first}, {step}] of "
          f"{self.workdir}. No checkpoint of the bad state was written"
          + (f"; the latest good one (step {latest}) is intact." if latest is not None else ".")
          + f" {self.fix}, then relaunch.")

  def flush(self, step: int):
    """Checks, then returns the means of the window ending at ``step`` (None if empty)."""
    self.check(step)
    if not self.host:
      return None
    mean = {k: float(np.mean(np.array([m[k] for m in self.host], np.float64)))
            for k in self.host[-1] if k != "finite"}
    self.host, self.first = [], step
    return mean

  def to_meta(self) -> dict:
    assert not self.device, "check() before saving"
    return {"window_first": self.first, "window": self.host}

  def from_meta(self, meta: dict):
    self.first = int(meta.get("window_first", self.first))
    self.host = [dict(m) for m in meta.get("window", [])]


def prepare_workdir(workdir: str) -> None:
  """Creates ``workdir``; a directory that cannot be written is a user error, found now."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".kdjax_write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise UserError(f"Cannot write the workdir {workdir!r} ({e.strerror or e}): choose a "
                    "writable --workdir.") from None


def check_resume_config(workdir: str, config, resuming: bool) -> dict:
  """Refuses to resume ``workdir`` with a config that differs from its ``config.json`` outside
  :data:`kdjax.config.RESUMABLE_KEYS` (unless ``config.force_resume``); writes the new
  ``config.json``. Returns the JSON-normalised config."""
  cfg_path = os.path.join(workdir, "config.json")
  now = json_normalise(config)
  if resuming and os.path.exists(cfg_path):
    with open(cfg_path) as f:
      saved = json.load(f)
    diff = resume_config_diff(saved, now)
    if diff and not config.force_resume:
      flat = lambda d, k: _get_dotted(d, k)
      shown = ", ".join(f"{k} ({flat(saved, k)!r} -> {flat(now, k)!r})" for k in diff[:8])
      raise UserError(
          f"{workdir} holds a run with another config: {shown}"
          + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
          + ". Relaunch with its config to resume it, use a new --workdir to start a new run, "
          "or pass --config.force_resume=True to resume it with the new values.")
    if diff:
      print(f"[kdjax] WARNING: resuming {workdir} with a changed config (force_resume): "
            + ", ".join(diff))
  ckpt_lib.write_json(cfg_path, now)
  return now


def _get_dotted(d: dict, key: str):
  for part in key.split("."):
    if not isinstance(d, dict) or part not in d:
      return None
    d = d[part]
  return d


def _fmt_seconds(t: float) -> str:
  t = int(round(t))
  return f"{t // 3600}h{t % 3600 // 60:02d}m" if t >= 3600 else (
      f"{t // 60}m{t % 60:02d}s" if t >= 60 else f"{t}s")


class Clock:
  """Per-epoch time and the run's ETA from the steps done by this launch."""

  def __init__(self, start_step: int, total_steps: int):
    self.t0 = self.t_epoch = time.time()
    self.start_step, self.total_steps = start_step, total_steps

  def epoch_line(self, step: int) -> str:
    now = time.time()
    dt, self.t_epoch = now - self.t_epoch, now
    done = step - self.start_step
    eta = (now - self.t0) / done * (self.total_steps - step) if done > 0 else 0.0
    return f"epoch {_fmt_seconds(dt)}, total {_fmt_seconds(now - self.t0)}, ETA {_fmt_seconds(eta)}"

  def elapsed(self) -> float:
    return time.time() - self.t0


def scale_lr_for_batch(config) -> None:
  """Warns when ``batch_size`` differs from the batch ``optim.lr`` is quoted for, and scales the
  lr linearly (in ``config``) if ``optim.scale_lr_with_batch``."""
  bs = config.batch_size
  if bs != config.optim.reference_batch_size:
    scale = bs / config.optim.reference_batch_size
    if config.optim.scale_lr_with_batch:
      config.optim.lr = config.optim.lr * scale
      print(f"[kdjax] WARNING: batch {bs} != reference {config.optim.reference_batch_size}: "
            f"lr scaled linearly to {config.optim.lr:g}.")
    else:
      print(f"[kdjax] WARNING: batch {bs} != the batch {config.optim.reference_batch_size} the "
            f"lr {config.optim.lr:g} is quoted for; set optim.scale_lr_with_batch=True to scale "
            "it linearly.")


def run_epoch_steps(feed, run: Callable, state, *, epoch: int, step: int, stop_step: int,
                    steps_per_epoch: int, config, record: Callable, check: Callable,
                    log: Callable, save_state: Callable, step_hook=None, desc: str = ""):
  """The steps of one epoch from ``step`` (a resumed run starts mid-epoch), shared by
  :func:`train_and_evaluate` and ``kdjax.train.online``.

  ``run(state, item) -> (state, metrics)`` is one jitted step, ``record(metrics)`` queues the
  device metrics, ``check(step)`` fetches them (the non-finite stop), ``log(step)`` checks and
  writes the log line, ``save_state(step, state)`` writes the resume checkpoint (after a check):
  every ``checkpoint_every_steps`` inside the epoch and when ``stop_step`` ends the epoch early.
  The progress bar counts *completed* steps (it waits for the previous step's metrics, keeping
  one step queued) and is closed on any exception. Returns ``(state, step, epoch_done)``."""
  offset = step - epoch * steps_per_epoch
  bar = None
  if config.progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=steps_per_epoch, initial=offset, dynamic_ncols=True, leave=False, desc=desc,
               unit="img", unit_scale=config.batch_size)
  prev = None
  try:
    for item in feed.epoch(epoch, offset):
      if step >= stop_step:
        break
      crash_point("step", step)
      if step_hook is not None:
        step_hook(step)
      state, metrics = run(state, item)
      step += 1
      record(metrics)
      if bar is not None:
        if prev is not None:
          jax.block_until_ready(prev["loss"])
          bar.update(1)
        prev = metrics
      if step % config.log_every_steps == 0:
        log(step)
      if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 \
          and step % steps_per_epoch:
        check(step)
        save_state(step, state)
        crash_point("state", step)
    if bar is not None and prev is not None:
      jax.block_until_ready(prev["loss"])
      bar.update(1)
  finally:
    if bar is not None:
      bar.close()
  epoch_done = step == (epoch + 1) * steps_per_epoch
  if epoch_done:
    log(step)
  else:
    check(step)
    save_state(step, state)
    crash_point("state", step)
  return state, step, epoch_done


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
  student = models.get(config.model, num_classes=info.num_classes, **dict(config.model_kwargs))
  teacher = load_teacher(config.teacher, info.num_classes) if method.needs_teacher else None
  if teacher is not None:
    check_teacher_input(teacher, info.image_shape, dcfg.name)
  if teacher is None and (config.teacher.workdir or config.teacher.members):
    log.warning("config.teacher.workdir is set but the method has no teacher term; ignoring it.")
  rng = jax.random.PRNGKey(config.seed)
  k_init, k_conn, k_run = jax.random.split(rng, 3)
  dummy = jnp.zeros((1,) + tuple(info.image_shape), jnp.float32)
  variables = student.init(k_init, dummy, train=False)
  if getattr(student, "init_teacher_from", ""):     # SFTN fine-tune mode (pretrained teacher)
    variables = load_pretrained_teacher(variables, student.init_teacher_from,
                                        expected_arch=student.teacher_arch)
  s_shapes = _tap_shapes(student, variables, dummy)
  t_shapes = _tap_shapes(teacher.module, teacher.variables, dummy) if teacher else None
  method.check_shapes(s_shapes, t_shapes)
  conn_modules = method.connectors(s_shapes, t_shapes)
  conn_params, conn_stats = {}, {}
  for i, (key, (mod, init_shapes)) in enumerate(sorted(conn_modules.items())):
    cv = mod.init(jax.random.fold_in(k_conn, i), *[jnp.zeros(s, jnp.float32) for s in init_shapes])
    conn_params[key] = cv.get("params", {})
    if "batch_stats" in cv:
      conn_stats[key] = cv["batch_stats"]
  conn_modules = {k: m for k, (m, _) in conn_modules.items()}
  params = {"student": variables["params"], "connectors": conn_params}
  batch_stats = {"student": variables.get("batch_stats", {}), "connectors": conn_stats}
  n_params = models.count_params(variables["params"])
  n_conn = models.count_params(conn_params)
  print(f"[kdjax] {config.model}: {n_params:,} params"
        + (f"; connectors {n_conn:,}" if n_conn else "")
        + (f"; teacher {teacher.meta['arch']} x{len(teacher.variables)}: {teacher.num_params:,}"
           f" params (step {teacher.meta['step']} of {teacher.meta['workdir']})" if teacher else "")
        + f"; {mesh.devices.size} device(s); {steps_per_epoch} steps/epoch")
  scale_lr_for_batch(config)

  tx, schedule = make_optimizer(config.optim, steps_per_epoch)
  # Stages (kdjax.train.stages): the main stage's trainable set and an optional init stage,
  # which counts as the first init_epochs epochs of the step counter (its own optimiser state).
  plan = stages_lib.plan(method, config, tx, params, batch_stats, steps_per_epoch,
                         feature_mask=lambda: stages_lib.student_feature_mask(student, variables,
                                                                              dummy))
  tx, init_epochs, init_steps = plan.main_tx, plan.init_epochs, plan.init_steps
  total_steps += init_steps
  method_state = method.init_states(feed.index_space, s_shapes, t_shapes,
                                    jax.random.fold_in(k_conn, 999),
                                    teacher_variables=teacher.variables if teacher else None)
  state = state_lib.create(params, batch_stats, plan.init_tx if init_steps else tx, k_run,
                           method_state)

  # ---- checkpoints / resume -------------------------------------------------------------------
  ckpts = ckpt_lib.RunCheckpoints(workdir, async_save=config.async_checkpoint)
  run_meta = {"best_top1": -1.0, "best_epoch": 0}
  if init_steps:
    run_meta.update(init_epochs=init_epochs, stage="init")
  resuming = ckpts.latest_step() is not None
  check_resume_config(workdir, config, resuming)
  saved_meta = {}
  if resuming:
    if init_steps and ckpts.latest_step() >= init_steps:   # saved in the main stage
      state = state.replace(opt_state=tx.init(state.params))
    abstract = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(mesh)),
        state)
    state, saved_meta = ckpts.restore_state(abstract)
    if saved_meta.get("init_epochs", 0) != init_epochs:
      raise UserError(
          f"{workdir}/checkpoints was written with method.init.epochs = "
          f"{saved_meta.get('init_epochs', 0)}, but the config now has {init_epochs}: resume "
          "with the original value (or use a new --workdir).")
    run_meta.update({k: saved_meta[k] for k in run_meta if k in saved_meta})
    print(f"[kdjax] resumed from {workdir}/checkpoints/{int(state.step)}")
  state = parallel.put_replicated(state, mesh)

  # ---- device data, steps ---------------------------------------------------------------------
  train_tf = lambda im, r: augment.train_transform(info, im, r, crop_pad=dcfg.crop_pad,
                                                   flip=dcfg.flip)
  eval_tf = lambda im: augment.eval_transform(info, im)
  # Methods with views (SSKD's rotations) flip once per example themselves.
  view_tf = lambda im, r: augment.train_transform(info, im, r, crop_pad=dcfg.crop_pad, flip=False)
  steps = make_steps(student=student, method=method, tx=tx, train_transform=train_tf,
                     eval_transform=eval_tf, teacher=teacher.module if teacher else None,
                     connectors=conn_modules, steps_per_epoch=steps_per_epoch,
                     mixup_alpha=float(dcfg.mixup_alpha), stats_mask=plan.main_stats_mask,
                     step_offset=init_steps, view_transform=view_tf)
  init_fns = make_steps(student=student, method=method.init.method, tx=plan.init_tx,
                        train_transform=train_tf, eval_transform=eval_tf,
                        teacher=teacher.module if teacher else None, connectors=conn_modules,
                        steps_per_epoch=steps_per_epoch, mixup_alpha=float(dcfg.mixup_alpha),
                        stats_mask=plan.init_stats_mask,
                        view_transform=view_tf) if init_steps else None
  t_vars = parallel.put_replicated(teacher.variables, mesh) if teacher else {}

  start_step = int(state.step)
  writer = MetricWriter(workdir, tensorboard=config.tensorboard, resume_step=start_step)
  summary_path = os.path.join(workdir, "summary.json")
  teacher_metrics, teacher_pred = {}, None
  if teacher is not None:
    t_steps = make_eval_step(teacher.module, eval_tf)
    teacher_metrics, teacher_pred = evaluate(t_steps, t_vars, eval_batches(), mesh,
                                             config.eval_batch_size)
    print(f"[kdjax] teacher test top-1 {teacher_metrics['top1']:.2f}")
    if start_step == 0:              # once per run, not once per launch
      writer.write(0, teacher_metrics, prefix="teacher/")

  def model_meta(epoch, metrics):
    return {"arch": config.model, "num_classes": info.num_classes, "dataset": dcfg.name,
            "model_kwargs": config.model_kwargs.to_dict(), "epoch": epoch,
            "step": int(state.step), "seed": config.seed, "final": epoch == config.num_epochs,
            **{f"test_{k}": v for k, v in metrics.items()}}

  def model_vars():
    return {"params": state.params["student"], "batch_stats": state.batch_stats["student"]}

  keep = _keep_epochs(config)
  stop_step = min(total_steps, config.max_steps) if config.max_steps > 0 else total_steps
  last_eval = dict(saved_meta.get("last_eval") or {})
  window = MetricWindow(ckpts, workdir, "Lower optim.lr, check the teacher and the data "
                        "normalisation", start_step)
  window.from_meta(saved_meta)
  clock = Clock(start_step, min(stop_step, total_steps))

  def log_train(step):
    mean = window.flush(step)
    if mean is None:
      return
    in_init = step <= init_steps      # flushed at every epoch end: never mixes stages
    mean["lr"] = float(plan.init_schedule(step - 1) if in_init
                       else schedule(step - 1 - init_steps))
    writer.write(step, mean, prefix="init/" if in_init else "train/")

  def save_state(step, st, epoch):
    window.check(step)
    ckpts.save_state(step, st, dict(run_meta, epoch=epoch, last_eval=last_eval,
                                    **window.to_meta()))

  step = start_step
  try:
    first_epoch = start_step // steps_per_epoch
    for epoch in range(first_epoch, init_epochs + config.num_epochs):
      if step >= stop_step:
        break
      in_init = epoch < init_epochs
      cur_steps = init_fns if in_init else steps
      state, step, epoch_done = run_epoch_steps(
          feed, lambda st, item, fns=cur_steps: feed.run(fns, st, item, t_vars), state,
          epoch=epoch, step=step, stop_step=stop_step, steps_per_epoch=steps_per_epoch,
          config=config, record=window.record, check=window.check, log=log_train,
          save_state=lambda s, st, ep=epoch: save_state(s, st, ep), step_hook=_step_hook,
          desc=(f"init epoch {epoch + 1}/{init_epochs}" if in_init else
                f"epoch {epoch + 1 - init_epochs}/{config.num_epochs}"))
      if not epoch_done:           # max_steps reached mid-epoch (state saved)
        break
      if in_init:                  # init stage: no evaluation; fresh optimiser after its end
        if epoch + 1 == init_epochs:
          state = state.replace(opt_state=parallel.put_replicated(tx.init(state.params), mesh))
          run_meta["stage"] = "main"
        print(f"[kdjax] init epoch {epoch + 1}/{init_epochs} done ({method.init.method.name}), "
              f"{clock.epoch_line(step)}")
        save_state(step, state, epoch + 1)
        crash_point("state", step)
        continue
      e = epoch + 1 - init_epochs    # the main stage's own epochs
      # Epoch end: the model checkpoints first, the resume state last. A kill in between
      # replays the epoch on relaunch and writes the same model checkpoints again (idempotent).
      line = f"[kdjax] epoch {e}/{config.num_epochs}"
      if e % config.eval_every_epochs == 0 or e == config.num_epochs or e in keep:
        crash_point("eval", step)
        last_eval, _ = evaluate(steps, model_vars(), eval_batches(), mesh,
                                config.eval_batch_size, teacher_pred)
        writer.write(step, dict(last_eval, epoch=e), prefix="test/")
        if last_eval["top1"] > run_meta["best_top1"]:
          run_meta.update(best_top1=last_eval["top1"], best_epoch=e)
          ckpts.save_model("best", step, model_vars(), model_meta(e, last_eval))
          crash_point("best", step)
        line += (f": test top-1 {last_eval['top1']:.2f} "
                 f"(best {run_meta['best_top1']:.2f} @ {run_meta['best_epoch']})"
                 + (f", agreement {last_eval['agreement']:.2f}" if "agreement" in last_eval
                    else ""))
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
      "model": config.model, "dataset": dcfg.name, "method": method.name, "seed": config.seed,
      "finished": finished, "step": step, "total_steps": total_steps,
      "last_top1": last_eval.get("top1"), "last_top5": last_eval.get("top5"),
      "last_agreement": last_eval.get("agreement"),
      "best_top1": run_meta["best_top1"] if run_meta["best_top1"] >= 0 else None,
      "best_epoch": run_meta["best_epoch"], "teacher_top1": teacher_metrics.get("top1"),
      "teacher": (dict(workdir=teacher.meta["workdir"], arch=teacher.meta["arch"],
                       step=teacher.meta["step"], members=teacher.meta["members"])
                  if teacher else None),
      "train_seconds": clock.elapsed(), "num_devices": int(mesh.devices.size),
      **({"init_epochs": init_epochs} if init_steps else {}),
  }
  ckpt_lib.write_json(summary_path, summary)
  summary["state"] = state
  return summary
