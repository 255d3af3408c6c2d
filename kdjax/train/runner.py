"""The run machinery every training loop shares (supervised/distillation in
:mod:`kdjax.train.loop`, online DML/KDCL in :mod:`kdjax.train.online`): data feeds, evaluation,
the workdir and resume-config guards, the metric window with the non-finite stop, the epoch's
steps with cadence, crash points and progress, and the clock."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import jax
import numpy as np

from kdjax import data as kdata
from kdjax import distributed
from kdjax.data import arrays as data_arrays
from kdjax.data import grain_feed
from kdjax.config import json_normalise, resume_config_diff
from kdjax.errors import UserError
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import parallel
from kdjax.train.faults import crash_point

# The loss, the parameters or the BatchNorm statistics became NaN/inf; nothing of the bad state
# was written (kept for its name: it is kdjax.train.checkpoint.NonFiniteError).
NonFiniteLossError = ckpt_lib.NonFiniteError


def split_batches(split: "kdata.ArraySplit", batch_size: int):
  """Sequential ``(images, labels)`` numpy batches of an in-memory split (the same global
  batches on every process of a multi-process run: each holds the whole split)."""
  n = len(split.labels)
  for start in range(0, n, batch_size):
    yield split.images[start : start + batch_size], split.labels[start : start + batch_size]


def stream_batches(stream):
  """Sequential ``(images, labels)`` numpy batches of one pass of an eval stream (every process
  of a multi-process run decodes the whole pass; :func:`evaluate` places only its rows)."""
  for b in stream.iter_epoch(0):
    yield b["image"], b["label"]


def evaluate(
  steps, variables, batches, mesh, batch_size: int, teacher_pred: Optional[np.ndarray] = None
):
  """``steps``: :func:`kdjax.train.step.make_eval_step`'s function (or a StepFns). Top-1/top-5/loss (and agreement with ``teacher_pred``) over all ``batches``; returns
  ``(metrics, predictions)``. ``batches`` is an ArraySplit or an iterable of ``(images, labels)``
  numpy batches of at most ``batch_size``. Batches are padded to a fixed, device-divisible size
  and masked, so one compiled eval step serves the whole set.

  On a mesh spanning several processes every process passes the same batches (the global
  view); each places only its devices' rows of the padded batch, the metric sums come back
  replicated and the predictions are gathered, so every process returns the same result."""
  if isinstance(batches, kdata.ArraySplit):
    batches = split_batches(batches, batch_size)
  eval_fn = getattr(steps, "eval_batch", steps)  # a StepFns or a make_eval_step function
  n_dev = mesh.devices.size
  bs = max(n_dev, -(-batch_size // n_dev) * n_dev)
  sums, preds, seen = None, [], 0
  for images, labels in batches:
    k = len(labels)
    pad = bs - k
    img = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    lab = np.concatenate([labels.astype(np.int32), np.zeros((pad,), np.int32)])
    mask = np.concatenate([np.ones((k,), np.float32), np.zeros((pad,), np.float32)])
    tp = (
      np.concatenate([teacher_pred[seen : seen + k], np.zeros((pad,), np.int32)])
      if teacher_pred is not None
      else np.full((bs,), -1, np.int32)
    )
    seen += k
    put = lambda a: parallel.put_batch(a, mesh)
    out, pred = eval_fn(variables, put(img), put(lab), put(mask), put(tp))
    out = jax.device_get(out)
    sums = out if sums is None else {key: sums[key] + out[key] for key in sums}
    preds.append(distributed.gather_rows(pred)[:k])
  c = float(sums["count"])
  metrics = {
    "top1": 100.0 * sums["correct1"] / c,
    "top5": 100.0 * sums["correct5"] / c,
    "loss": sums["loss_sum"] / c,
  }
  if teacher_pred is not None:
    metrics["agreement"] = 100.0 * sums["agree_sum"] / c
  return {k: float(v) for k, v in metrics.items()}, np.concatenate(preds)


class InMemoryFeed:
  """The whole training split lives on the device(s); a step receives a sharded index vector and
  gathers + augments inside the jit (no per-step host->device image copies).

  Several processes: every process holds the whole split (replicated on every device) and
  computes the same index vector from ``(seed, epoch)``; each places only its devices' rows of
  it (:func:`kdjax.train.parallel.put_batch`), so the global batches are the 1-process ones."""

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
    batches = kdata.batch_indices(
      self.n,
      self.cfg.batch_size,
      seed=self.cfg.seed,
      epoch=epoch,
      drop_remainder=self.cfg.drop_remainder,
    )
    for idx in batches[offset:]:
      yield parallel.put_batch(idx.astype(np.int32), self.mesh)

  def run(self, steps, state, item, t_vars):
    return steps.train_indexed(state, self.images, self.labels, self.index, item, t_vars)


class StreamFeed:
  """Host-side decoding and augmentation (ImageNet): batches are copied to the devices.

  On a mesh spanning several processes each process decodes only the rows of every global
  batch its devices hold (:func:`kdjax.distributed.process_rows`) and contributes them with
  :func:`kdjax.distributed.put_process_local`; the global batches (order and per-example random
  draws, a function of ``(seed, epoch, index)``) are those of the 1-process stream. A last
  partial batch not divisible by the device count is decoded whole by every process and
  replicated, as on one process."""

  def __init__(self, stream, mesh):
    self.stream, self.mesh = stream, mesh

  def steps_per_epoch(self):
    return len(self.stream)

  def epoch(self, epoch, offset):
    import itertools

    if parallel.is_multiprocess():
      yield from self._process_epoch(epoch, offset)
      return
    for b in itertools.islice(self.stream.iter_epoch(epoch), offset, None):
      yield {k: parallel.put_batch(v, self.mesh) for k, v in b.items()}

  def _process_epoch(self, epoch, offset):
    s = self.stream
    batches = kdata.batch_indices(
      s.num_examples,
      s.batch_size,
      seed=s.seed,
      epoch=epoch,
      shuffle=s.shuffle,
      drop_remainder=s.drop_remainder,
    )
    n_dev = self.mesh.devices.size
    for positions in batches[offset:]:
      n = len(positions)
      if n % n_dev == 0:
        rows = distributed.process_rows(n, self.mesh)
        local = decode_stream_rows(s, positions[rows], epoch)
        yield distributed.put_process_local(local, self.mesh, n)
      else:  # the remainder batch: replicated, as parallel.put_batch does on one process
        full = decode_stream_rows(s, positions, epoch)
        yield {k: parallel.put_batch(v, self.mesh) for k, v in full.items()}

  def run(self, steps, state, item, t_vars):
    return steps.train_batch(state, item, t_vars)


def decode_stream_rows(stream, positions, epoch: int) -> dict:
  """The batch ``{image, label, index}`` that :meth:`kdjax.data.HostStream.iter_epoch` yields
  for ``positions`` (stream positions) in ``epoch``, for a subset of a global batch's rows:
  each example's decode and random draws depend only on ``(seed, epoch, index)``, so a process
  decoding its rows gets exactly those rows of the 1-process batch (tested)."""
  pos = [int(p) for p in positions]
  recs = data_arrays.fetch_records(stream.source, pos)
  one = stream._one  # pylint: disable=protected-access
  if getattr(stream, "num_threads", 0) > 1:
    with ThreadPoolExecutor(stream.num_threads) as pool:
      imgs = list(pool.map(lambda a: one(a[0], a[1], epoch), zip(recs, pos)))
  else:
    imgs = [one(r, p, epoch) for r, p in zip(recs, pos)]
  return {
    "image": np.stack(imgs),
    "label": np.asarray([r["label"] for r in recs], np.int32),
    "index": stream._index[np.asarray(pos, np.int64)].astype(np.int32),  # pylint: disable=protected-access
  }


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
  size for streamed datasets) and the number of training examples.

  ``dataset.val_examples > 0`` holds that many training examples out
  (:func:`kdjax.data.split_holdout`): the feed trains on the rest and keeps the held-out
  ArraySplit as ``feed.val_split`` (None otherwise)."""
  dcfg = config.dataset
  info = kdata.info(dcfg.name)
  dcfg.train_split = dcfg.train_split or info.train_split
  dcfg.eval_split = dcfg.eval_split or info.eval_split
  if dcfg.val_examples and not info.in_memory:
    raise UserError(
      f"config.dataset.val_examples={dcfg.val_examples}: a held-out split of the training data "
      f"is supported for in-memory datasets only, not the streamed {dcfg.name!r}; set it to 0 "
      "and pass a held-out split spec as dataset.train_split (e.g. 'train[:98%]')."
    )
  if info.in_memory:
    train = kdata.load_arrays(
      dcfg.name,
      dcfg.train_split,
      data_dir=dcfg.data_dir,
      idx_dir=dcfg.idx_dir,
      limit=dcfg.train_limit or None,
    )
    train, val = kdata.split_holdout(train, dcfg.val_examples, dcfg.val_seed)
    test = kdata.load_arrays(
      dcfg.name,
      dcfg.eval_split,
      data_dir=dcfg.data_dir,
      idx_dir=dcfg.idx_dir,
      limit=dcfg.eval_limit or None,
    )
    feed = InMemoryFeed(train, config, mesh)
    feed.val_split = val
    n_train = feed.n
    eval_batches = lambda: split_batches(test, config.eval_batch_size)
  else:
    size = dcfg.image_size or info.image_shape[0]
    info = dataclasses.replace(info, image_shape=(size, size, info.image_shape[2]))
    mk = lambda split, train, limit, bs: kdata.HostStream(
      dcfg.name,
      split,
      batch_size=bs,
      seed=config.seed,
      train=train,
      data_dir=dcfg.data_dir,
      image_size=size,
      flip=dcfg.flip,
      drop_remainder=config.drop_remainder if train else False,
      num_threads=dcfg.stream_threads,
      limit=limit or None,
    )
    if dcfg.loader == "grain":  # worker processes over TFDS ArrayRecord (kdjax.data.grain_feed)
      train_stream = grain_feed.GrainStream(
        dcfg.name,
        dcfg.train_split,
        batch_size=config.batch_size,
        seed=config.seed,
        train=True,
        data_dir=dcfg.data_dir,
        image_size=size,
        flip=dcfg.flip,
        drop_remainder=config.drop_remainder,
        num_workers=dcfg.grain_workers,
        limit=dcfg.train_limit or None,
      )
      feed = grain_feed.GrainFeed(train_stream, mesh, prefetch=dcfg.prefetch)
    elif dcfg.loader == "stream":
      feed = StreamFeed(mk(dcfg.train_split, True, dcfg.train_limit, config.batch_size), mesh)
    else:
      raise UserError(
        f"config.dataset.loader={dcfg.loader!r}: use 'stream' (host threads) or "
        "'grain' (worker processes)."
      )
    test_stream = mk(dcfg.eval_split, False, dcfg.eval_limit, config.eval_batch_size)
    n_train = feed.stream.num_examples
    feed.index_space = int(np.max(feed.stream._index)) + 1  # pylint: disable=protected-access
    feed.val_split = None
    eval_batches = lambda: stream_batches(test_stream)
  return feed, eval_batches, info, n_train


def _host_value(v):
  """A fetched metric as JSON-able host data: a float, or nested lists of floats for metrics with
  a leading axis (e.g. one value per member of a member run)."""
  a = np.asarray(v)
  return float(a) if a.ndim == 0 else a.astype(np.float64).tolist()


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
      self.host += [{k: _host_value(v) for k, v in m.items()} for m in fetched]
    bad_loss = not all(np.all(np.isfinite(m["loss"])) for m in self.host)
    bad_state = any(not np.all(np.asarray(m.get("finite", 1.0)) == 1.0) for m in self.host)
    if bad_loss or bad_state:
      self.ckpts.wait()
      latest = self.ckpts.latest_step()
      what = "training loss" if bad_loss else "parameters or BatchNorm statistics"
      raise NonFiniteLossError(
        f"The {what} became non-finite within steps [{self.first}, {step}] of "
        f"{self.workdir}. No checkpoint of the bad state was written"
        + (f"; the latest good one (step {latest}) is intact." if latest is not None else ".")
        + f" {self.fix}, then relaunch."
      )

  def flush(self, step: int):
    """Checks, then returns the means of the window ending at ``step`` (None if empty)."""
    self.check(step)
    if not self.host:
      return None
    mean = {
      k: _host_value(np.mean(np.array([m[k] for m in self.host], np.float64), axis=0))
      for k in self.host[-1]
      if k != "finite"
    }
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
    probe = os.path.join(workdir, f".kdjax_write_test.{jax.process_index()}")  # per process
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise UserError(
      f"Cannot write the workdir {workdir!r} ({e.strerror or e}): choose a writable --workdir."
    ) from None


def check_resume_config(
  workdir: str, config, resuming: bool, *, now: Optional[dict] = None
) -> dict:
  """Refuses to resume ``workdir`` with a config that differs from its ``config.json`` outside
  :data:`kdjax.config.RESUMABLE_KEYS` (unless ``config.force_resume``); writes the new
  ``config.json``. Returns the JSON-normalised config (``now``: the snapshot to compare and
  write instead, e.g. with a task's additions)."""
  cfg_path = os.path.join(workdir, "config.json")
  now = json_normalise(config) if now is None else now
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
        "or pass --config.force_resume=True to resume it with the new values."
      )
    if diff:
      print(
        f"[kdjax] WARNING: resuming {workdir} with a changed config (force_resume): "
        + ", ".join(diff)
      )
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
  return (
    f"{t // 3600}h{t % 3600 // 60:02d}m"
    if t >= 3600
    else (f"{t // 60}m{t % 60:02d}s" if t >= 60 else f"{t}s")
  )


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
      print(
        f"[kdjax] WARNING: batch {bs} != reference {config.optim.reference_batch_size}: "
        f"lr scaled linearly to {config.optim.lr:g}."
      )
    else:
      print(
        f"[kdjax] WARNING: batch {bs} != the batch {config.optim.reference_batch_size} the "
        f"lr {config.optim.lr:g} is quoted for; set optim.scale_lr_with_batch=True to scale "
        "it linearly."
      )


def run_epoch_steps(
  feed,
  run: Callable,
  state,
  *,
  epoch: int,
  step: int,
  stop_step: int,
  steps_per_epoch: int,
  config,
  record: Callable,
  check: Callable,
  log: Callable,
  save_state: Callable,
  step_hook=None,
  desc: str = "",
):
  """The steps of one epoch from ``step`` (a resumed run starts mid-epoch), shared by
  ``kdjax.train.loop`` and ``kdjax.train.online``.

  ``run(state, item) -> (state, metrics)`` is one jitted step, ``record(metrics)`` queues the
  device metrics, ``check(step)`` fetches them (the non-finite stop), ``log(step)`` checks and
  writes the log line, ``save_state(step, state)`` writes the resume checkpoint (after a check):
  every ``checkpoint_every_steps`` inside the epoch and when ``stop_step`` ends the epoch early.
  The progress bar counts *completed* steps (it waits for the previous step's metrics, keeping
  one step queued) and is closed on any exception. Returns ``(state, step, epoch_done)``."""
  offset = step - epoch * steps_per_epoch
  bar = None
  if config.progress and jax.process_index() == 0:  # one bar per run, not per process
    from tqdm.auto import tqdm

    bar = tqdm(
      total=steps_per_epoch,
      initial=offset,
      dynamic_ncols=True,
      leave=False,
      desc=desc,
      unit="img",
      unit_scale=config.batch_size,
    )
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
      if (
        config.checkpoint_every_steps
        and step % config.checkpoint_every_steps == 0
        and step % steps_per_epoch
      ):
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
