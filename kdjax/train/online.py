"""Online distillation: K >= 2 peers trained together in one jitted step (DML, KDCL).

:class:`OnlineTask` is the online run's task for the one loop (:func:`kdjax.train.loop.run`;
entry point :func:`kdjax.train.loop.train_online`); ``config.online`` selects the mode and the peers
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
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from kdjax import checks
from kdjax import models
from kdjax.data import augment
from kdjax.errors import UserError
from kdjax.losses import online as online_losses
from kdjax.losses.online import ENSEMBLES
from kdjax.train.runner import StreamFeed, evaluate, load_data, scale_lr_for_batch
from kdjax.train.optim import make_optimizer
from kdjax.train.state import TrainState
from kdjax.train.step import _all_finite, make_eval_step
from kdjax.train.task import Export, Stage, Task
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
  t = checks.positive(
    "config.online.temperature", ONLINE_DEFAULT_TEMPERATURE[on.mode] if t is None else t
  )
  w = checks.nonnegative("config.online.weight", on.weight)
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


class OnlineTask(Task):
  """K peers trained together (module docstring); each peer is an export written to
  ``workdir/peer<i>``; the logit-mean ensemble is evaluated and tracked, never written."""

  kind = "online"

  def __init__(self, config, mesh):
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
    self.config, self.mesh, self.on, self.names = config, mesh, on, names
    dcfg = config.dataset
    feed, self.eval_batches, info, n_train = load_data(config, mesh)
    if mode == "kdcl" and isinstance(feed, StreamFeed):
      raise UserError(
        f"online.mode='kdcl' needs a different augmentation per peer, but "
        f"{dcfg.name!r} is augmented once on the host (streamed dataset); use "
        "online.mode='dml' or an in-memory dataset."
      )
    self.feed = feed
    spe = feed.steps_per_epoch()
    if spe < 1:
      raise UserError(
        f"{n_train} training examples is fewer than one batch of {config.batch_size}."
      )
    self.steps_per_epoch, self.num_epochs = spe, int(config.num_epochs)

    peers = [models.get(n, num_classes=info.num_classes) for n in names]
    self.keys = keys = [peer_key(i) for i in range(k)]
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
      + f"; {mesh.devices.size} device(s); {spe} steps/epoch"
    )
    scale_lr_for_batch(config)
    tx, schedule = make_optimizer(config.optim, spe)
    self.state = create_state(params, batch_stats, tx, k_run)

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
    self.eval_steps = [make_eval_step(m, eval_tf) for m in peers]
    self.ens_steps = make_eval_step(EnsembleTeacher(list(peers), "logit_mean"), eval_tf)
    self.stages = [
      Stage("main", config.num_epochs, lambda st, item: feed.run(steps, st, item, None), schedule)
    ]
    self.fix = "Lower optim.lr or online.weight, check the data normalisation"
    peer_vars = lambda key: (
      lambda st: {"params": st.params[key], "batch_stats": st.batch_stats[key]}
    )
    self.exports = [
      Export(
        key,
        peer_vars(key),
        meta={
          "arch": names[i],
          "num_classes": info.num_classes,
          "dataset": dcfg.name,
          "model_kwargs": {},
          "seed": config.seed,
          "online": {"mode": mode, "peer": i, "peers": list(names)},
        },
        subdir=key,
      )
      for i, key in enumerate(keys)
    ] + [Export("ensemble", None)]

  def export_config_json(self, export, cfg_json):
    return dict(cfg_json, model=export.meta["arch"])

  def evaluate(self, state):
    """The ensemble first; then each peer, with its agreement with the ensemble."""
    cfg, peers = self.config, self.exports[:-1]
    ens, ens_pred = evaluate(
      self.ens_steps,
      [ex.variables(state) for ex in peers],
      self.eval_batches(),
      self.mesh,
      cfg.eval_batch_size,
    )
    per_peer = [
      evaluate(
        self.eval_steps[i],
        ex.variables(state),
        self.eval_batches(),
        self.mesh,
        cfg.eval_batch_size,
        ens_pred,
      )[0]
      for i, ex in enumerate(peers)
    ]
    return per_peer + [ens], {}

  def eval_line(self, metrics, progress):
    return (
      ": test top-1 "
      + ", ".join(f"{n} {m['top1']:.2f}" for n, m in zip(self.names, metrics))
      + f", ensemble {metrics[-1]['top1']:.2f}"
    )

  def summary(self, p):
    config, on, names, k = self.config, self.on, self.names, len(self.names)
    mode = on["mode"]
    best = lambda v: v if v >= 0 else None
    last = [dict(m) for m in p.last_eval]
    peer_dirs = [os.path.join(self.workdir, key) for key in self.keys]
    per_peer = {}
    for i in range(k):
      per_peer[self.keys[i]] = {
        "model": names[i],
        "dataset": config.dataset.name,
        "method": f"online_{mode}",
        "seed": config.seed,
        "finished": p.finished,
        "step": p.step,
        "total_steps": p.total_steps,
        "last_top1": last[i].get("top1"),
        "last_top5": last[i].get("top5"),
        "last_agreement": None,
        "last_agreement_with_ensemble": last[i].get("agreement"),
        "best_top1": best(p.best_top1[i]),
        "best_epoch": p.best_epoch[i],
        "teacher_top1": None,
        "teacher": None,
        "online": {"workdir": self.workdir, "peer": i, "peers": list(names)},
        "train_seconds": p.seconds,
        "num_devices": p.num_devices,
      }
    summary = {
      "model": "+".join(names),
      "method": f"online_{mode}",
      "mode": mode,
      "peers": list(names),
      "dataset": config.dataset.name,
      "seed": config.seed,
      "temperature": on["temperature"],
      "weight": on["weight"],
      "ensemble": on["ensemble"] if mode == "kdcl" else None,
      "finished": p.finished,
      "step": p.step,
      "total_steps": p.total_steps,
      "peer_workdirs": peer_dirs,
      "peer_last_top1": [m.get("top1") for m in last[:k]],
      "peer_best_top1": [best(v) for v in p.best_top1[:k]],
      "peer_best_epoch": list(p.best_epoch[:k]),
      "peer_last_agreement_with_ensemble": [m.get("agreement") for m in last[:k]],
      "ensemble_last_top1": last[k].get("top1"),
      "ensemble_best_top1": best(p.best_top1[k]),
      "ensemble_best_epoch": p.best_epoch[k],
      "train_seconds": p.seconds,
      "num_devices": p.num_devices,
    }
    return summary, per_peer

  def begin(self, workdir, writer, start_step):
    self.workdir = workdir
