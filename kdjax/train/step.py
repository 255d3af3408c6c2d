"""Jitted train and eval steps, one per mode, knowing nothing about specific methods.

The distillation step: teacher forward in inference mode under ``stop_gradient`` (never
optimised, never weight-decayed, BN running statistics untouched), student forward in training
mode, ``loss = mean_b method.loss(...)``, gradients w.r.t. ``state.params`` (student +
connectors) only, optimiser update. The train state buffer is donated. For datasets kept on
device the step receives the whole (replicated) split plus a sharded vector of indices and gathers
and augments inside the jit, so there is no host->device copy of images per step.

Grouped gradients: when the optimiser declares gradient groups (``tx.groups``, a
:class:`kdjax.train.optim.GroupedGradientTransformation` such as DOT), the step evaluates the
vector of group losses ``(L_g)_g`` (``Method.loss(..., by_group=tx.groups)``: the CE is
``'task'``, each term its ``group``) in one forward pass and takes one reverse pass per group
through the same ``jax.vjp`` (cotangent ``e_g``), handing ``{g: grad L_g}`` to ``tx.update``.
Any other optimiser takes the ordinary path: ``jax.value_and_grad`` of the total loss.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from kdjax import precision
from kdjax.errors import UserError
from kdjax.methods import Batch, Method, Outputs, connector_calls


@dataclasses.dataclass
class StepFns:
  train_indexed: Callable  # (state, images, labels, ds_index, idx, teacher_vars) -> (state, m)
  train_batch: Callable  # (state, batch{image,label,index}, teacher_vars) -> (state, metrics)
  eval_batch: Callable  # (variables, image, label, mask[, teacher_pred]) -> sums


def _global_norm(tree):
  return optax.global_norm(tree)


def _all_finite(tree):
  leaves = [
    jnp.all(jnp.isfinite(x))
    for x in jax.tree_util.tree_leaves(tree)
    if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def make_steps(
  *,
  student,
  method: Method,
  tx,
  train_transform: Callable,
  eval_transform: Callable,
  teacher=None,
  connectors: Optional[dict] = None,
  emit_norms: bool = True,
  steps_per_epoch: int = 1,
  mixup_alpha: float = 0.0,
  stats_mask=None,
  step_offset: int = 0,
  view_transform: Optional[Callable] = None,
) -> StepFns:
  """Builds the jitted steps.

  Args:
    student: the student linen module (kdjax model protocol).
    method: the declarative :class:`~kdjax.methods.Method`, bound to the pair
      (``init_train_state(...).method``).
    tx: optax transformation for ``state.params``.
    train_transform: ``(uint8 images, rng) -> float images`` (augmentation + normalisation).
    eval_transform: ``uint8 images -> float images``.
    teacher: the teacher linen module or None (supervised training).
    connectors: term key -> linen module for the method's trainable connectors.
    steps_per_epoch: to give losses the current epoch (``step // steps_per_epoch + 1``).
    mixup_alpha: > 0 enables mixup (Zhang et al. 2018) on the augmented batch: ``x = lam x +
      (1 - lam) x[perm]`` with ``lam ~ Beta(alpha, alpha)`` per batch, and the CE term mixes the
      two labels (a calibrated-teacher variant of the calibration study).
    stats_mask: a stage with frozen modules (``kdjax.train.stages``): bool pytree over
      ``state.batch_stats``, False where the old BatchNorm statistics are kept. None: all update.
    step_offset: the step this stage starts at (the main stage after an init stage), so that
      ``Batch.epoch`` counts the stage's own epochs.
    view_transform: for a method with views (:class:`kdjax.methods.ViewSpec`, SSKD's
      rotations): the train augmentation without its flip, applied to every view (the view
      maker flips once per example); None = ``train_transform``.
  """
  connectors = connectors or {}
  views = method.views
  if views is not None and mixup_alpha > 0:
    raise UserError(
      f"method {method.name!r} trains on {views.num_views} {views.name} views per "
      "example, which kdjax does not combine with mixup: set "
      "dataset.mixup_alpha = 0."
    )
  nv = views.num_views if views is not None else 1
  normal = (lambda a: a[::nv]) if nv > 1 else (lambda a: a)
  use_teacher = teacher is not None and method.loss_needs_teacher
  groups = getattr(tx, "groups", None)  # a grouped optimiser (DOT): one gradient per group
  if groups is not None:
    extra = [g for g in method.grad_groups if g not in groups]
    if extra:
      raise UserError(
        f"method {method.name!r} has terms in gradient group(s) {extra}, but the optimiser "
        f"takes the groups {list(groups)}: set each term's 'group' to one of them "
        f"(method.terms.<key>.group; the CE is 'task')."
      )

  def core(state, images, labels, index, teacher_vars):
    rng = jax.random.fold_in(state.rng, state.step)
    if views is not None:  # (V·B, ...) rows b·V + v; v = 0 the normal view
      x = views.make(images, rng, view_transform or train_transform)
    else:
      x = train_transform(images, rng)
    mix_labels = mix_lam = None
    if mixup_alpha > 0:
      k_lam, k_perm = jax.random.split(jax.random.fold_in(rng, 1))
      mix_lam = jax.random.beta(k_lam, mixup_alpha, mixup_alpha)
      perm = jax.random.permutation(k_perm, x.shape[0])
      x = mix_lam * x + (1.0 - mix_lam) * x[perm]
      mix_labels = labels[perm]
    if use_teacher:
      t_logits, t_taps = precision.outputs_f32(*teacher.apply(teacher_vars, x, train=False))
      t_taps = {k: t_taps[k] for k in method.teacher_taps}
      t_out = jax.lax.stop_gradient(Outputs(t_logits, t_taps))
    else:
      t_out = None

    def forward(params, by_group=None):
      (logits, taps), new_stats = student.apply(
        {"params": params["student"], "batch_stats": state.batch_stats["student"]},
        x,
        train=True,
        mutable=["batch_stats"],
      )
      logits, taps = precision.outputs_f32(logits, taps)  # losses reduce in float32
      s_out = Outputs(logits, taps)
      conn, conn_stats = connector_calls(
        connectors, params["connectors"], state.batch_stats.get("connectors", {})
      )
      epoch = (state.step - step_offset if step_offset else state.step) // steps_per_epoch + 1
      per_ex, metrics, new_ms = method.loss(
        s_out,
        t_out,
        Batch(labels, index, epoch, mix_labels, mix_lam),
        connectors=conn,
        states=state.method_state,
        return_states=True,
        **({} if by_group is None else {"by_group": by_group}),
      )
      loss = per_ex.mean() if by_group is None else per_ex.mean(axis=-1)  # () or (G,)
      metrics["accuracy"] = jnp.mean(jnp.argmax(normal(logits), -1) == labels)
      if t_out is not None:
        metrics["agreement"] = jnp.mean(
          jnp.argmax(normal(logits), -1) == jnp.argmax(normal(t_out.logits), -1)
        )
      return loss, (
        {"student": new_stats["batch_stats"], "connectors": conn_stats},
        metrics,
        new_ms,
      )

    if groups is None:
      (loss, (new_stats, metrics, new_ms)), grads = jax.value_and_grad(forward, has_aux=True)(
        state.params
      )
      tx_grads = grads
    else:  # one forward, one reverse pass per group (cotangent e_g on the group losses)
      group_loss, vjp_fn, (new_stats, metrics, new_ms) = jax.vjp(
        lambda p: forward(p, groups), state.params, has_aux=True
      )
      eye = jnp.eye(len(groups), dtype=group_loss.dtype)
      tx_grads = {g: vjp_fn(eye[i])[0] for i, g in enumerate(groups)}
      for i, g in enumerate(groups):
        metrics[f"loss/{g}"] = group_loss[i]
      loss = group_loss.sum()
      grads = jax.tree_util.tree_map(lambda *gs: sum(gs[1:], gs[0]), *tx_grads.values())
    if stats_mask is not None:  # frozen modules keep their BatchNorm statistics
      new_stats = jax.tree_util.tree_map(
        lambda keep_new, n, o: n if keep_new else o, stats_mask, new_stats, state.batch_stats
      )
    updates, opt_state = tx.update(tx_grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["loss"] = loss
    # 1 iff every new parameter and BatchNorm statistic is finite: the loop stops the run (and
    # writes nothing) otherwise, even when the loss is still finite.
    metrics["finite"] = _all_finite((params, new_stats)).astype(jnp.float32)
    if emit_norms:
      metrics["l2_grads"] = _global_norm(grads)
      metrics["l2_params"] = _global_norm(params)
      metrics["l2_updates"] = _global_norm(updates)
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      batch_stats=new_stats,
      method_state=jax.lax.stop_gradient(new_ms),
    )
    return new_state, metrics

  def train_indexed(state, images, labels, ds_index, idx, teacher_vars):
    return core(state, images[idx], labels[idx], ds_index[idx], teacher_vars)

  def train_batch(state, batch, teacher_vars):
    return core(state, batch["image"], batch["label"], batch["index"], teacher_vars)

  return StepFns(
    train_indexed=jax.jit(train_indexed, donate_argnums=(0,)),
    train_batch=jax.jit(train_batch, donate_argnums=(0,)),
    eval_batch=make_eval_step(student, eval_transform),
  )


def make_eval_step(model, eval_transform: Callable):
  """The jitted eval step of a stored ``model`` -- no method, no optimiser:
  ``(variables, images, labels, mask, teacher_pred) -> (sums, top-1 predictions)`` where
  ``sums`` are the masked ``count``, ``correct1``, ``correct5``, ``loss_sum`` (cross-entropy)
  and ``agree_sum`` (top-1 equal to ``teacher_pred``) of the batch."""

  def eval_batch(variables, images, labels, mask, teacher_pred):
    logits, _ = model.apply(variables, eval_transform(images), train=False)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    m = mask.astype(jnp.float32)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    pred = top5[:, 0]
    out = {
      "count": m.sum(),
      "correct1": jnp.sum(m * (pred == labels)),
      "correct5": jnp.sum(m * jnp.any(top5 == labels[:, None], axis=-1)),
      "loss_sum": jnp.sum(m * -jnp.take_along_axis(logp, labels[:, None], -1)[:, 0]),
      "agree_sum": jnp.sum(m * (pred == teacher_pred)),
    }
    return out, pred

  return jax.jit(eval_batch)
