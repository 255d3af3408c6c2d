"""Optimisers and learning-rate schedules, expressed per step (optax).

The CIFAR recipe of RepDistiller/mdistiller is SGD(momentum 0.9, wd 5e-4) with lr 0.05 decayed
x0.1 after epochs 150/180/210 (``adjust_learning_rate``: ``steps = sum(epoch > milestones)`` with
epochs counted from 1, so epoch 151 is the first decayed one). In steps that is a piecewise-constant
schedule with boundaries ``milestone * steps_per_epoch``. Checkpoint KD uses Nesterov SGD with
lr 0.1 decayed every 60 epochs (``StepLR``).

Weight decay is PyTorch-SGD style (coupled: ``g + wd * p`` before momentum) and applies to every
optimised parameter, as ``torch.optim.SGD(weight_decay=...)`` does in the references.

``optim.name = 'dot'`` is the Distillation-Oriented Trainer (:func:`dot_sgd`), a *grouped*
transformation: its ``update`` takes one gradient per loss group (``{'task': g_ce, 'distill':
g_kd}``), which the train step computes when ``tx.groups`` is set
(:class:`GroupedGradientTransformation`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax

from kdjax import checks
from kdjax.errors import UserError

TASK, DISTILL = "task", "distill"
OPTIMIZERS = ("sgd", "dot")

SCHEDULES = ("multistep", "step", "cosine", "constant")


def make_schedule(cfg, steps_per_epoch: int):
  """Returns an optax schedule ``step -> lr`` from ``cfg`` (the ``optim`` config block).

  Fields: ``lr``, ``schedule`` (one of SCHEDULES), ``milestones`` (epochs, multistep),
  ``step_epochs`` (step), ``decay`` (factor, default 0.1), ``epochs`` (cosine length),
  ``warmup_epochs`` (linear warm-up from 0, any schedule).
  """
  lr = checks.positive("optim.lr", cfg.lr)
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


class GroupedGradientTransformation(NamedTuple):
  """An optax transformation whose ``update(grads, state, params)`` takes ``grads`` as a dict
  ``group -> gradient pytree`` (one gradient per loss group, every group of ``groups``) and
  returns ordinary updates. The train step (:func:`kdjax.train.step.make_steps`) sees ``groups``
  and computes the per-group gradients (one forward pass, one backward pass per group)."""

  init: Callable
  update: Callable
  groups: Tuple[str, ...]


class DotState(NamedTuple):
  count: Any  # int32 step counter (the schedule's argument)
  task_momentum: Any  # pytree like params: the task (CE) gradient's momentum buffer
  distill_momentum: Any  # pytree like params: the distillation gradient's momentum buffer


def dot_sgd(
  learning_rate, *, momentum: float = 0.9, delta: float = 0.075, weight_decay: float = 0.0
) -> GroupedGradientTransformation:
  r"""DOT, the Distillation-Oriented Trainer (Zhao, Cui, Song, Liang, ICCV 2023, "DOT: A
  Distillation-Oriented Trainer"; megvii-research/mdistiller ``mdistiller/engine/dot.py``,
  ``trainer.py:DOT``): SGD with one momentum buffer per loss, the larger momentum on the
  distillation loss. With ``β = momentum``, ``Δ = delta``, ``g_t`` / ``g_d`` the gradients of
  the task (CE) and distillation losses and ``λ = weight_decay``, per step::

    b_t <- (β − Δ) · b_t + g_t + λ · p        (weight decay joins the task gradient)
    b_d <- (β + Δ) · b_d + g_d
    p   <- p − lr_k · (b_t + b_d)

  Buffers start at zero, so the first step is ``b = g`` as in ``torch.optim.SGD`` (dampening 0);
  no Nesterov. Every parameter is in both groups: the original's special case for a parameter
  that only one loss reaches (``grad is None`` in torch: that buffer uses ``β`` and, for a
  distillation-only parameter, takes the weight decay) is not reproduced, since a JAX gradient
  of a loss that does not reach a parameter is zero, not absent; for the original's use (KD or
  DKD, where both losses reach every student parameter) the two coincide.

  ``update`` takes ``grads = {'task': g_t, 'distill': g_d}``. With ``Δ = 0`` it is SGD with
  momentum ``β`` on ``g_t + g_d`` (the buffers add linearly).
  """
  beta = checks.in_range("optim.momentum", momentum, 0.0, 1.0, open_hi=True)
  delta = checks.nonnegative("optim.dot_delta", delta)
  weight_decay = checks.nonnegative("optim.weight_decay", weight_decay)
  if not isinstance(beta, jax.core.Tracer) and not isinstance(delta, jax.core.Tracer):
    if not (beta - delta >= 0 and beta + delta < 1):
      raise UserError(
        f"optim.dot_delta = {delta} with optim.momentum = {beta}: DOT's momenta β − Δ and "
        f"β + Δ must lie in [0, 1), i.e. Δ <= {min(beta, 1 - beta)} (mdistiller: β 0.9, Δ 0.075)."
      )
  sched = learning_rate if callable(learning_rate) else (lambda _: learning_rate)
  groups = (TASK, DISTILL)

  def init(params):
    zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)
    return DotState(jnp.zeros([], jnp.int32), zeros(), zeros())

  def update(grads, state, params=None):
    if not isinstance(grads, dict) or set(grads) != set(groups):
      raise UserError(
        "optim.name = 'dot' takes one gradient per loss group ('task': the CE, 'distill': the "
        "method's terms), which the train step computes for the whole parameter tree. It got "
        "a single gradient: DOT cannot yet run under a partial trainable set (method.trainable "
        "other than every parameter, or an init stage) or outside kdjax.train.step; use "
        "optim.name = 'sgd' there."
      )
    if weight_decay and params is None:
      raise ValueError("dot_sgd with weight decay needs params in update().")
    g_t, g_d = grads[TASK], grads[DISTILL]
    if weight_decay:
      g_t = jax.tree_util.tree_map(lambda g, p: g + weight_decay * p, g_t, params)
    b_t = jax.tree_util.tree_map(lambda b, g: (beta - delta) * b + g, state.task_momentum, g_t)
    b_d = jax.tree_util.tree_map(lambda b, g: (beta + delta) * b + g, state.distill_momentum, g_d)
    lr = sched(state.count)
    updates = jax.tree_util.tree_map(lambda a, b: -lr * (a + b), b_t, b_d)
    return updates, DotState(optax.safe_int32_increment(state.count), b_t, b_d)

  return GroupedGradientTransformation(init, update, groups)


def make_optimizer(cfg, steps_per_epoch: int):
  """``optim.name``: ``'sgd'`` (optionally Nesterov) with coupled weight decay, or ``'dot'``
  (:func:`dot_sgd`, momentum ``optim.momentum ± optim.dot_delta``); returns ``(tx, schedule)``."""
  sched = make_schedule(cfg, steps_per_epoch)
  if cfg.name not in OPTIMIZERS:
    raise UserError(
      f"optim.name must be 'sgd' (the recipe of every reference) or 'dot' (DOT, "
      f"mdistiller's distillation-oriented trainer), got {cfg.name!r}."
    )
  wd = checks.nonnegative("optim.weight_decay", cfg.weight_decay)
  if cfg.name == "dot":
    if bool(cfg.nesterov):
      raise UserError(
        "optim.name = 'dot' has no Nesterov variant (mdistiller's DOT is plain momentum): "
        "set optim.nesterov = False."
      )
    tx = dot_sgd(
      sched,
      momentum=float(cfg.momentum),
      delta=float(cfg.get("dot_delta", 0.075)),
      weight_decay=wd,
    )
    return tx, sched
  tx = optax.chain(
    optax.add_decayed_weights(wd) if wd else optax.identity(),
    optax.sgd(sched, momentum=float(cfg.momentum) or None, nesterov=bool(cfg.nesterov)),
  )
  return tx, sched
