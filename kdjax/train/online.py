"""Online distillation: K >= 2 peers trained together in one jitted step (DML, KDCL).

``train_online(config, workdir)`` is the online counterpart of
:func:`kdjax.train.loop.train_and_evaluate` (both drive :mod:`kdjax.train.runner`); ``config.online`` selects the mode and the peers
(:func:`validate_online`), everything else (dataset, optim, schedule, batch, epochs,
checkpointing) is the normal run config and means the same thing.

* DML (Zhang et al., CVPR 2018): every peer sees the same augmented batch;
  ``L_i = CE_i + λ/(K−1) Σ_{j≠i} T² KL(p_j ‖ p_i)``, peers stopped (:func:`kdjax.losses.online.dml`).
* KDCL (Guo et al., CVPR 2020): peer ``i`` sees its own augmentation of the batch (key
  ``fold_in(step_key, i)``); ``L_i = CE_i + λ T² KL(p_ens^T ‖ p_i^T)`` with the stopped ensemble
  teacher built from all peers' logits (:func:`kdjax.losses.online.kdcl`).

The step. One train state holds every peer: ``params = {'peer0': ..., 'peer1': ...}`` and the same
for ``batch_stats``, with ONE optax optimizer over that pytree. kdjax's optimiser (SGD, coupled
weight decay, momentum) is element-wise and the schedule depends only on the shared step, so this
is exactly one optimizer per peer with identical lr schedules (tested). All peers' forwards (train
mode, BN batch statistics), the losses, ``grad(Σ_i mean_b L_i)`` and the update run in one
``jax.jit`` with the state donated. Since every target is ``stop_gradient``-ed inside the losses,
peer ``i``'s gradient is that of its own loss alone (tested: same parameters as separate per-peer
updates against frozen peer logits). Data parallelism is the normal step's (batch sharded over the
1-D ``data`` mesh, state replicated, global-view code), so N devices compute what one does.

Workdir layout::

  workdir/config.json, metrics.jsonl, tb/, summary.json   the joint run
  workdir/checkpoints/<step>/   the joint resume state (all peers' params, BN stats, optimizer)
  workdir/peer<i>/              peer i as a plain kdjax run: kept/<step> (kept epochs + final),
                                best/<step>, config.json (``model`` = the peer), summary.json

so ``kdjax.train.load_model(workdir + '/peer0', 'final')``, ``launch.evaluate``,
``launch.analyze`` and ``config.teacher.workdir`` all consume a peer like any trained model.
The ensemble reported in ``summary.json`` and the test metrics is the mean of the peers' logits
(KDCL-Naive; MinLogit needs labels and is a training-time teacher only).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from kdjax import models
from kdjax.config import validate
from kdjax.data import augment
from kdjax.errors import UserError
from kdjax.losses import online as online_losses
from kdjax.losses.online import ENSEMBLES
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import parallel
from kdjax.train.logging import MetricWriter
from kdjax.train.faults import crash_point
from kdjax.train.runner import (
  Clock,
  MetricWindow,
  StreamFeed,
  _keep_epochs,
  check_resume_config,
  evaluate,
  load_data,
  prepare_workdir,
  run_epoch_steps,
  scale_lr_for_batch,
)
from kdjax.train.optim import make_optimizer
from kdjax.train.state import TrainState
from kdjax.train.step import _all_finite, make_eval_step
from kdjax.train.teacher import EnsembleTeacher


# ---- config.online ---------------------------------------------------------------------------
ONLINE_MODES = ("dml", "kdcl")
ONLINE_DEFAULT_TEMPERATURE = {"dml": 1.0, "kdcl": 3.0}


def validate_online(config) -> dict:
  """Checks ``config.online`` (after :func:`validate`); returns the resolved settings
  ``{mode, peers, temperature, weight, ensemble}`` with the mode's default temperature filled in."""
  on = config.online
  if on.mode not in ONLINE_MODES:
    raise UserError(f"config.online.mode must be one of {ONLINE_MODES}, got {on.mode!r}.")
  peers = tuple(on.peers) if not isinstance(on.peers, str) else (on.peers,)
  if len(peers) < 2:
    raise UserError(
      f"config.online.peers needs at least 2 model names (K >= 2 peers), got "
      f"{peers!r}; e.g. --config.online.peers='(\"resnet32\",\"resnet32\")'."
    )
  known = models.names()
  for p in peers:
    if p not in known:
      close = difflib.get_close_matches(str(p), known, n=3)
      hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
      raise UserError(
        f"Unknown model {p!r} in config.online.peers.{hint} Registered models: {', '.join(known)}."
      )
  t = on.temperature
  t = ONLINE_DEFAULT_TEMPERATURE[on.mode] if t is None else float(t)
  if not t > 0 or t != t or t == float("inf"):
    raise UserError(f"config.online.temperature must be a finite number > 0, got {t}.")
  w = float(on.weight)
  if not w >= 0 or w == float("inf"):
    raise UserError(f"config.online.weight must be a finite number >= 0, got {w}.")
  if on.ensemble not in ENSEMBLES:
    raise UserError(f"config.online.ensemble must be one of {ENSEMBLES}, got {on.ensemble!r}.")
  return dict(mode=on.mode, peers=peers, temperature=t, weight=w, ensemble=on.ensemble)


def peer_key(i: int) -> str:
  return f"peer{i}"


def peer_views(mode: str, num_peers: int, train_transform: Callable, images, rng) -> list:
  """Each peer's input: KDCL gives peer ``i`` its own augmentation (key ``fold_in(rng, i)``),
  DML one shared augmentation (key ``fold_in(rng, 0)``) for all peers."""
  if mode == "kdcl":
    return [train_transform(images, jax.random.fold_in(rng, i)) for i in range(num_peers)]
  x = train_transform(images, jax.random.fold_in(rng, 0))
  return [x] * num_peers


def online_loss(
  mode: str,
  logits: Sequence,
  labels,
  *,
  temperature: float,
  weight: float,
  ensemble: str = "minlogit",
):
  """``(per_example (K, B), parts)`` of the mode's loss (``parts``: ``ce``, ``kl`` (K, B))."""
  if mode == "dml":
    return online_losses.dml(
      logits, labels, temperature=temperature, weight=weight, return_parts=True
    )
  if mode == "kdcl":
    return online_losses.kdcl(
      logits, labels, ensemble=ensemble, temperature=temperature, weight=weight, return_parts=True
    )
  raise UserError(f"online mode must be 'dml' or 'kdcl', got {mode!r}.")


@dataclasses.dataclass
class OnlineSteps:
  train_indexed: Callable  # (state, images, labels, ds_index, idx, unused) -> (state, metrics)
  train_batch: Callable  # (state, batch{image,label,index}, unused) -> (state, metrics)
  peer_losses: Callable  # (params, batch_stats, xs, labels) -> ((K, B) losses, new stats)


def make_online_steps(
  *,
  peers: Sequence,
  mode: str,
  temperature: float,
  weight: float,
  ensemble: str = "minlogit",
  tx,
  train_transform: Callable,
  emit_norms: bool = True,
) -> OnlineSteps:
  """Builds the jitted joint step of ``peers`` (linen modules of the kdjax model protocol).

  ``train_indexed``/``train_batch`` have the signatures of :func:`kdjax.train.step.make_steps`'s
  steps (the last argument, the teacher variables there, is ignored) so the loop's feeds drive
  them. ``peer_losses`` (not jitted) is the per-peer per-example loss as a function of all peers'
  parameters, for tests.
  """
  k = len(peers)
  if k < 2:
    raise UserError(f"online distillation needs at least 2 peers, got {k}.")
  keys = [peer_key(i) for i in range(k)]

  def forward_all(params, batch_stats, xs):
    logits, new_stats = [], {}
    for key, module, x in zip(keys, peers, xs):
      (z, _), upd = module.apply(
        {"params": params[key], "batch_stats": batch_stats[key]},
        x,
        train=True,
        mutable=["batch_stats"],
      )
      logits.append(z)
      new_stats[key] = upd.get("batch_stats", {})
    return logits, new_stats

  def peer_losses(params, batch_stats, xs, labels):
    logits, new_stats = forward_all(params, batch_stats, xs)
    per_ex, _ = online_loss(
      mode, logits, labels, temperature=temperature, weight=weight, ensemble=ensemble
    )
    return per_ex, new_stats

  def core(state, images, labels, index):
    del index
    rng = jax.random.fold_in(state.rng, state.step)
    xs = peer_views(mode, k, train_transform, images, rng)

    def loss_fn(params):
      logits, new_stats = forward_all(params, state.batch_stats, xs)
      per_ex, parts = online_loss(
        mode, logits, labels, temperature=temperature, weight=weight, ensemble=ensemble
      )
      peer_loss = per_ex.mean(axis=1)
      return peer_loss.sum(), (new_stats, jnp.stack(logits), peer_loss, parts)

    (loss, (new_stats, z, peer_loss, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    pred = jnp.argmax(z, axis=-1)  # (K, B)
    metrics = {
      "loss": loss,
      "finite": _all_finite((params, new_stats)).astype(jnp.float32),
      "ensemble_accuracy": jnp.mean(jnp.argmax(z.mean(0), -1) == labels),
    }
    for i, key in enumerate(keys):
      metrics[f"{key}/loss"] = peer_loss[i]
      metrics[f"{key}/ce"] = parts["ce"][i].mean()
      metrics[f"{key}/kl"] = parts["kl"][i].mean()
      metrics[f"{key}/accuracy"] = jnp.mean(pred[i] == labels)
    if emit_norms:
      metrics["l2_grads"] = optax.global_norm(grads)
      metrics["l2_params"] = optax.global_norm(params)
      metrics["l2_updates"] = optax.global_norm(updates)
    new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, batch_stats=new_stats
    )
    return new_state, metrics

  def train_indexed(state, images, labels, ds_index, idx, unused=None):
    del unused
    return core(state, images[idx], labels[idx], ds_index[idx])

  def train_batch(state, batch, unused=None):
    del unused
    return core(state, batch["image"], batch["label"], batch["index"])

  return OnlineSteps(
    train_indexed=jax.jit(train_indexed, donate_argnums=(0,)),
    train_batch=jax.jit(train_batch, donate_argnums=(0,)),
    peer_losses=peer_losses,
  )


def create_state(params: dict, batch_stats: dict, tx, rng) -> TrainState:
  """The joint train state: ``params``/``batch_stats`` keyed ``peer0..peer{K-1}``."""
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    rng=rng,
    method_state={},
  )


def train_online(config, workdir: str, *, mesh=None, _step_hook=None) -> dict:
  """Runs (or resumes) one online-distillation run; returns the summary also written to
  ``workdir/summary.json`` (each peer's and the logit-mean ensemble's last and best top-1)."""
  validate(config)
  on = validate_online(config)
  mode, names = on["mode"], on["peers"]
  k = len(names)
  if len(config.model_kwargs):
    raise UserError(
      "config.model_kwargs is not used by online runs (the peers are "
      "config.online.peers, built with their registry defaults); remove it."
    )
  if float(config.dataset.mixup_alpha) > 0:
    raise UserError("config.dataset.mixup_alpha > 0 is not supported by online distillation.")
  if len(config.method.terms) or config.teacher.workdir or config.teacher.members:
    print(
      "[kdjax] WARNING: config.method terms and config.teacher are ignored by online "
      "distillation (the loss is config.online's)."
    )
  parallel.check_single_process()
  mesh = mesh or parallel.make_mesh()
  parallel.check_batch(config.batch_size, mesh)
  prepare_workdir(workdir)

  # ---- data (shared with the normal loop) ------------------------------------------------------
  dcfg = config.dataset
  feed, eval_batches, info, n_train = load_data(config, mesh)
  if mode == "kdcl" and isinstance(feed, StreamFeed):
    raise UserError(
      f"online.mode='kdcl' needs a different augmentation per peer, but "
      f"{dcfg.name!r} is augmented once on the host (streamed dataset); use "
      "online.mode='dml' or an in-memory dataset."
    )
  bs = config.batch_size
  steps_per_epoch = feed.steps_per_epoch()
  if steps_per_epoch < 1:
    raise UserError(f"{n_train} training examples is fewer than one batch of {bs}.")
  total_steps = steps_per_epoch * config.num_epochs

  # ---- peers -----------------------------------------------------------------------------------
  peers = [models.get(n, num_classes=info.num_classes) for n in names]
  keys = [peer_key(i) for i in range(k)]
  rng = jax.random.PRNGKey(config.seed)
  k_init, _, k_run = jax.random.split(rng, 3)
  dummy = jnp.zeros((1,) + tuple(info.image_shape), jnp.float32)
  params, batch_stats = {}, {}
  for i, (key, module) in enumerate(zip(keys, peers)):
    v = module.init(jax.random.fold_in(k_init, i), dummy, train=False)
    params[key], batch_stats[key] = v["params"], v.get("batch_stats", {})
  counts = [models.count_params(params[key]) for key in keys]
  print(
    f"[kdjax] online {mode}: "
    + ", ".join(f"{n} ({c:,} params)" for n, c in zip(names, counts))
    + f"; {mesh.devices.size} device(s); {steps_per_epoch} steps/epoch"
  )
  scale_lr_for_batch(config)
  tx, schedule = make_optimizer(config.optim, steps_per_epoch)
  state = create_state(params, batch_stats, tx, k_run)

  # ---- checkpoints / resume --------------------------------------------------------------------
  peer_dirs = [os.path.join(workdir, key) for key in keys]
  ckpts = ckpt_lib.RunCheckpoints(workdir, async_save=config.async_checkpoint)
  peer_ckpts = [ckpt_lib.RunCheckpoints(d, async_save=config.async_checkpoint) for d in peer_dirs]
  run_meta = {
    "best_top1": [-1.0] * k,
    "best_epoch": [0] * k,
    "ensemble_best_top1": -1.0,
    "ensemble_best_epoch": 0,
  }
  resuming = ckpts.latest_step() is not None
  cfg_json = check_resume_config(workdir, config, resuming)
  saved_meta = {}
  if resuming:
    abstract = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(mesh)), state
    )
    state, saved_meta = ckpts.restore_state(abstract)
    run_meta.update({m: saved_meta[m] for m in run_meta if m in saved_meta})
    print(f"[kdjax] resumed from {workdir}/checkpoints/{int(state.step)}")
  for name, d in zip(names, peer_dirs):  # each peer's dir reads like a normal run's
    ckpt_lib.write_json(os.path.join(d, "config.json"), dict(cfg_json, model=name))
  state = parallel.put_replicated(state, mesh)

  # ---- steps -----------------------------------------------------------------------------------
  train_tf = augment.dataset_train_transform(info, dcfg)  # crop, flip, colour jitter
  eval_tf = lambda im: augment.eval_transform(info, im)
  steps = make_online_steps(
    peers=peers,
    mode=mode,
    temperature=on["temperature"],
    weight=on["weight"],
    ensemble=on["ensemble"],
    tx=tx,
    train_transform=train_tf,
  )
  eval_steps = [make_eval_step(m, eval_tf) for m in peers]
  ens_steps = make_eval_step(EnsembleTeacher(list(peers), "logit_mean"), eval_tf)

  start_step = int(state.step)
  writer = MetricWriter(workdir, tensorboard=config.tensorboard, resume_step=start_step)
  summary_path = os.path.join(workdir, "summary.json")

  def peer_vars(i):
    return {"params": state.params[keys[i]], "batch_stats": state.batch_stats[keys[i]]}

  def model_meta(i, epoch, metrics):
    return {
      "arch": names[i],
      "num_classes": info.num_classes,
      "dataset": dcfg.name,
      "model_kwargs": {},
      "epoch": epoch,
      "step": int(state.step),
      "seed": config.seed,
      "final": epoch == config.num_epochs,
      "online": {"mode": mode, "peer": i, "peers": list(names)},
      **{f"test_{m}": v for m, v in metrics.items()},
    }

  def evaluate_all():
    """The ensemble first; then each peer, with its agreement with the ensemble."""
    ens, ens_pred = evaluate(
      ens_steps, [peer_vars(i) for i in range(k)], eval_batches(), mesh, config.eval_batch_size
    )
    per_peer = [
      evaluate(eval_steps[i], peer_vars(i), eval_batches(), mesh, config.eval_batch_size, ens_pred)[
        0
      ]
      for i in range(k)
    ]
    return per_peer, ens

  keep = _keep_epochs(config)
  stop_step = min(total_steps, config.max_steps) if config.max_steps > 0 else total_steps
  last_eval = [dict(m) for m in saved_meta.get("last_eval") or [{} for _ in range(k)]]
  last_ens = dict(saved_meta.get("last_ens") or {})
  window = MetricWindow(
    ckpts, workdir, "Lower optim.lr or online.weight, check the data normalisation", start_step
  )
  window.from_meta(saved_meta)
  clock = Clock(start_step, stop_step)

  def log_train(step):
    mean = window.flush(step)
    if mean is not None:
      mean["lr"] = float(schedule(step - 1))
      writer.write(step, mean, prefix="train/")

  def save_state(step, st, epoch):
    window.check(step)
    ckpts.save_state(
      step,
      st,
      dict(run_meta, epoch=epoch, last_eval=last_eval, last_ens=last_ens, **window.to_meta()),
    )

  step = start_step
  all_ckpts = [ckpts] + peer_ckpts
  try:
    for epoch in range(start_step // steps_per_epoch, config.num_epochs):
      if step >= stop_step:
        break
      state, step, epoch_done = run_epoch_steps(
        feed,
        lambda st, item: feed.run(steps, st, item, None),
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
        desc=f"epoch {epoch + 1}/{config.num_epochs}",
      )
      if not epoch_done:  # max_steps reached mid-epoch (state saved)
        break
      e = epoch + 1
      if e % config.eval_every_epochs == 0 or e == config.num_epochs or e in keep:
        crash_point("eval", step)
        last_eval, last_ens = evaluate_all()
        flat = {f"{keys[i]}/{m}": v for i in range(k) for m, v in last_eval[i].items()}
        flat.update({f"ensemble/{m}": v for m, v in last_ens.items()}, epoch=e)
        writer.write(step, flat, prefix="test/")
        for i in range(k):
          if last_eval[i]["top1"] > run_meta["best_top1"][i]:
            run_meta["best_top1"][i], run_meta["best_epoch"][i] = last_eval[i]["top1"], e
            peer_ckpts[i].save_model("best", step, peer_vars(i), model_meta(i, e, last_eval[i]))
        if last_ens["top1"] > run_meta["ensemble_best_top1"]:
          run_meta.update(ensemble_best_top1=last_ens["top1"], ensemble_best_epoch=e)
        print(
          f"[kdjax] epoch {e}/{config.num_epochs}: test top-1 "
          + ", ".join(f"{n} {m['top1']:.2f}" for n, m in zip(names, last_eval))
          + f", ensemble {last_ens['top1']:.2f}; {clock.epoch_line(step)}"
        )
      if e in keep:
        for i in range(k):
          peer_ckpts[i].save_model("kept", step, peer_vars(i), model_meta(i, e, last_eval[i]))
      save_state(step, state, e)
      crash_point("state", step)
  finally:
    for c in all_ckpts:
      c.close()
    writer.close()
    # RunCheckpoints creates all three managers' dirs; drop the unused empty ones (the joint
    # run has no model checkpoints of its own, the peers no resume state) so that no empty
    # 'kept' dir looks like an interrupted run.
    for d in [os.path.join(workdir, "kept"), os.path.join(workdir, "best")] + [
      os.path.join(p, "checkpoints") for p in peer_dirs
    ]:
      if os.path.isdir(d) and not os.listdir(d):
        os.rmdir(d)

  finished = step >= total_steps
  if step == start_step and os.path.exists(summary_path):
    with open(summary_path) as fh:  # a finished run launched again: keep its figures
      prev = json.load(fh)
    if prev.get("step") == step:
      prev["state"] = state
      return prev
  seconds = clock.elapsed()
  best = lambda v: v if v >= 0 else None
  for i in range(k):
    ckpt_lib.write_json(
      os.path.join(peer_dirs[i], "summary.json"),
      {
        "model": names[i],
        "dataset": dcfg.name,
        "method": f"online_{mode}",
        "seed": config.seed,
        "finished": finished,
        "step": step,
        "total_steps": total_steps,
        "last_top1": last_eval[i].get("top1"),
        "last_top5": last_eval[i].get("top5"),
        "last_agreement": None,
        "last_agreement_with_ensemble": last_eval[i].get("agreement"),
        "best_top1": best(run_meta["best_top1"][i]),
        "best_epoch": run_meta["best_epoch"][i],
        "teacher_top1": None,
        "teacher": None,
        "online": {"workdir": workdir, "peer": i, "peers": list(names)},
        "train_seconds": seconds,
        "num_devices": int(mesh.devices.size),
      },
    )
  summary = {
    "model": "+".join(names),
    "method": f"online_{mode}",
    "mode": mode,
    "peers": list(names),
    "dataset": dcfg.name,
    "seed": config.seed,
    "temperature": on["temperature"],
    "weight": on["weight"],
    "ensemble": on["ensemble"] if mode == "kdcl" else None,
    "finished": finished,
    "step": step,
    "total_steps": total_steps,
    "peer_workdirs": peer_dirs,
    "peer_last_top1": [m.get("top1") for m in last_eval],
    "peer_best_top1": [best(v) for v in run_meta["best_top1"]],
    "peer_best_epoch": list(run_meta["best_epoch"]),
    "peer_last_agreement_with_ensemble": [m.get("agreement") for m in last_eval],
    "ensemble_last_top1": last_ens.get("top1"),
    "ensemble_best_top1": best(run_meta["ensemble_best_top1"]),
    "ensemble_best_epoch": run_meta["ensemble_best_epoch"],
    "train_seconds": seconds,
    "num_devices": int(mesh.devices.size),
  }
  ckpt_lib.write_json(summary_path, summary)
  summary["state"] = state
  return summary
