"""Optimisers and learning-rate schedules, expressed per step (optax).

The CIFAR recipe of RepDistiller/mdistiller is SGD(momentum 0.9, wd 5e-4) with lr 0.05 decayed
x0.1 after epochs 150/180/210 (``adjust_learning_rate``: ``steps = sum(epoch > milestones)`` with
epochs counted from 1, so epoch 151 is the first decayed one). In steps that is a piecewise-constant
schedule with boundaries ``milestone * steps_per_epoch``. Checkpoint KD uses Nesterov SGD with
lr 0.1 decayed every 60 epochs (``StepLR``).

Weight decay is PyTorch-SGD style (coupled: ``g + wd * p`` before momentum) and applies to every
optimised parameter, as ``torch.optim.SGD(weight_decay=...)`` does in the references.
"""

from __future__ import annotations

import optax

from kdjax.errors import UserError

SCHEDULES = ("multistep", "step", "cosine", "constant")


def make_schedule(cfg, steps_per_epoch: int):
  """Returns an optax schedule ``step -> lr`` from ``cfg`` (the ``optim`` config block).

  Fields: ``lr``, ``schedule`` (one of SCHEDULES), ``milestones`` (epochs, multistep),
  ``step_epochs`` (step), ``decay`` (factor, default 0.1), ``epochs`` (cosine length),
  ``warmup_epochs`` (linear warm-up from 0, any schedule).
  """
  lr = float(cfg.lr)
  if lr <= 0:
    raise UserError(f"optim.lr must be > 0, got {lr}.")
  kind = cfg.schedule
  decay = float(cfg.get("decay", 0.1))
  if kind == "multistep":
    boundaries = {int(m) * steps_per_epoch: decay for m in cfg.milestones}
    sched = optax.piecewise_constant_schedule(lr, boundaries)
  elif kind == "step":
    every = int(cfg.step_epochs)
    if every < 1:
      raise UserError(f"optim.step_epochs must be >= 1, got {every}.")
    sched = optax.exponential_decay(
      lr, transition_steps=every * steps_per_epoch, decay_rate=decay, staircase=True
    )
  elif kind == "cosine":
    sched = optax.cosine_decay_schedule(lr, decay_steps=int(cfg.epochs) * steps_per_epoch)
  elif kind == "constant":
    sched = optax.constant_schedule(lr)
  else:
    raise UserError(f"optim.schedule must be one of {SCHEDULES}, got {kind!r}.")
  warm = int(cfg.get("warmup_epochs", 0)) * steps_per_epoch
  if warm > 0:
    sched = optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warm), lambda s: sched(s + warm)], [warm]
    )
  return sched


def make_optimizer(cfg, steps_per_epoch: int):
  """SGD (optionally Nesterov) with coupled weight decay; returns ``(tx, schedule)``."""
  sched = make_schedule(cfg, steps_per_epoch)
  if cfg.name != "sgd":
    raise UserError(f"optim.name must be 'sgd' (the recipe of every reference), got {cfg.name!r}.")
  wd = float(cfg.weight_decay)
  if wd < 0:
    raise UserError(f"optim.weight_decay must be >= 0, got {wd}.")
  tx = optax.chain(
    optax.add_decayed_weights(wd) if wd else optax.identity(),
    optax.sgd(sched, momentum=float(cfg.momentum) or None, nesterov=bool(cfg.nesterov)),
  )
  return tx, sched
