"""Trainable sets of training stages: selectors -> parameter masks -> masked optimisers.

A stage (the main one, or a method's init stage, :class:`kdjax.methods.Stage`) optimises the
parameters its ``trainable`` selectors name and freezes the rest: frozen parameters get a zero
update (``optax.set_to_zero``: no gradient step, no weight decay, no momentum) and the BatchNorm
statistics of frozen modules are kept (a module counts as trainable when any of its own
parameters is). RepDistiller's init stage is the reference: ``optim.SGD(init_modules
.parameters())`` with only ``init_modules`` in training mode (``helper/pretrain.py``).

Selectors (``kdjax.methods.core.TRAINABLE_GROUPS``): ``student``; ``student_features`` = the
student parameters its taps depend on, found by dependency analysis of the traced forward pass
(everything but the classifier for the kdjax models; RepDistiller's ``get_feat_modules()``);
``student_head`` = the rest; ``connectors`` = the connectors of the stage's own terms; and
parameter paths ``student/<module>/...``, ``connectors/<term key>/<submodule>/...``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import ml_collections
import optax

from kdjax.errors import UserError
from kdjax.train.optim import make_optimizer


def _used_inputs(jaxpr) -> list:
  """Which input variables of ``jaxpr`` the outputs depend on (conservative backward pass:
  every input of an equation with a used output counts as used)."""
  live = {v for v in jaxpr.outvars if not isinstance(v, jax.extend.core.Literal)}
  for eqn in reversed(jaxpr.eqns):
    if any(v in live for v in eqn.outvars):
      live.update(v for v in eqn.invars if not isinstance(v, jax.extend.core.Literal))
  return [v in live for v in jaxpr.invars]


def student_feature_mask(student, variables, dummy):
  """Bool pytree over ``variables['params']``: True where the student's taps depend on the
  parameter (its feature modules), False for the classifier."""
  variables = _to_dicts(variables)  # (arrays or jax.ShapeDtypeStruct: only traced)
  closed = jax.make_jaxpr(lambda v: student.apply(v, dummy, train=False)[1])(variables)
  used = _used_inputs(closed.jaxpr)
  leaves, treedef = jax.tree_util.tree_flatten(variables)
  assert len(used) == len(leaves)
  return jax.tree_util.tree_unflatten(treedef, used)["params"]


def _fill(tree, value: bool):
  return jax.tree_util.tree_map(lambda _: value, tree)


def _select_path(mask, params, path: str, where: str):
  """Sets the subtree of ``mask`` at ``a/b/c`` to True (in place on nested dicts)."""
  parts = path.split("/")
  node_p, node_m = params, mask
  for i, part in enumerate(parts):
    if not isinstance(node_p, dict) or part not in node_p:
      have = sorted(node_p) if isinstance(node_p, dict) else []
      raise UserError(
        f"{where}: no parameters at {path!r}: {'/'.join(parts[:i]) or 'params'} has {have}."
      )
    if i == len(parts) - 1:
      node_m[part] = _fill(node_p[part], True)
    else:
      node_p, node_m = node_p[part], node_m[part]


def _to_dicts(tree):
  if isinstance(tree, dict) or hasattr(tree, "items"):
    return {k: _to_dicts(v) for k, v in tree.items()}
  return tree


def trainable_mask(
  selectors: Sequence[str],
  params,
  *,
  connector_keys: Sequence[str],
  feature_mask: Optional[Callable] = None,
  where: str = "method.trainable",
):
  """Bool pytree over ``params = {'student': ..., 'connectors': ...}`` for ``selectors``.

  ``connector_keys``: the stage's own connectors (the ``connectors`` group);
  ``feature_mask()``: returns :func:`student_feature_mask` (called only when needed).
  Raises ValueError for paths that do not exist and for a selection of no parameters.
  """
  params = _to_dicts(params)
  mask = _fill(params, False)
  for sel in selectors:
    if sel == "student":
      mask["student"] = _fill(params["student"], True)
    elif sel in ("student_features", "student_head"):
      if feature_mask is None:
        raise UserError(f"{where}: {sel!r} needs the student model (feature analysis).")
      feat = feature_mask()
      want = sel == "student_features"
      mask["student"] = jax.tree_util.tree_map(
        lambda m, f: m or (f == want), mask["student"], _to_dicts(feat)
      )
    elif sel == "connectors":
      for k in connector_keys:
        if k in params.get("connectors", {}):
          mask["connectors"][k] = _fill(params["connectors"][k], True)
    else:
      _select_path(mask, params, sel, where)
  if not any(jax.tree_util.tree_leaves(mask)):
    raise UserError(
      f"{where} = {'+'.join(selectors)!r} selects no parameters (the stage's "
      f"connectors: {list(connector_keys) or 'none'}; student modules: "
      f"{sorted(params['student'])})."
    )
  return mask


def stats_mask(param_mask, batch_stats):
  """Bool pytree over ``batch_stats``: True for the statistics of modules with a trainable
  parameter (the BN ``mean``/``var`` sit beside its ``scale``/``bias`` at the same path)."""

  def module_trainable(path):
    keys = [getattr(k, "key", None) for k in path[:-1]]
    node = param_mask
    for k in keys:
      if not isinstance(node, dict) or k not in node:
        return False
      node = node[k]
    return any(jax.tree_util.tree_leaves(node))

  return jax.tree_util.tree_map_with_path(lambda p, _: module_trainable(p), _to_dicts(batch_stats))


def masked(tx, mask):
  """``tx`` on the parameters where ``mask`` is True, zero updates elsewhere."""
  labels = jax.tree_util.tree_map(lambda m: "train" if m else "freeze", mask)
  return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


def stage_lr_optimizer(optim_cfg, lr: float, milestones=(), steps_per_epoch: int = 1):
  """``optim``'s SGD (momentum, Nesterov, coupled weight decay) at ``lr``, constant
  (RepDistiller's init stage: ``optim.SGD(lr=...)``, no schedule) or decayed by ``optim.decay``
  at the stage's epoch ``milestones`` (SSKD's teacher head: MultiStepLR(30, 45)). Returns
  ``(tx, schedule)``; the schedule counts the stage's own steps."""
  cfg = ml_collections.ConfigDict(
    optim_cfg.to_dict() if hasattr(optim_cfg, "to_dict") else dict(optim_cfg)
  )
  cfg.lr, cfg.warmup_epochs = float(lr), 0
  if milestones:
    cfg.schedule, cfg.milestones = "multistep", tuple(int(m) for m in milestones)
  else:
    cfg.schedule = "constant"
  return make_optimizer(cfg, steps_per_epoch)


def stage_optimizer(tx, selectors, params, batch_stats, *, connector_keys, feature_mask, where):
  """``(tx', stats_mask)``: ``tx`` itself and None when the selection is every parameter (the
  normal path, unchanged), else the masked optimiser and the BN statistics mask."""
  mask = trainable_mask(
    selectors, params, connector_keys=connector_keys, feature_mask=feature_mask, where=where
  )
  if all(jax.tree_util.tree_leaves(mask)):
    return tx, None
  return masked(tx, mask), stats_mask(mask, batch_stats)


@dataclasses.dataclass
class StagePlan:
  """What the trainer needs to run a method's stages (``init_steps == 0``: the main stage only,
  with ``main_tx`` the unmodified optimiser)."""

  main_tx: Any
  main_stats_mask: Any = None
  init_epochs: int = 0
  init_steps: int = 0
  init_tx: Any = None
  init_stats_mask: Any = None
  init_schedule: Any = None


def plan(
  method, config, tx, params, batch_stats, steps_per_epoch: int, *, feature_mask: Callable
) -> StagePlan:
  """Masks the main optimiser ``tx`` by ``method.trainable`` and builds the init stage's
  constant-lr masked optimiser (``method.init``). Raises ValueError (before compilation) for
  selectors that name no parameters."""
  cache = {}

  def features():
    if "m" not in cache:
      cache["m"] = feature_mask()
    return cache["m"]

  main_tx, main_stats = stage_optimizer(
    tx,
    method.trainable,
    params,
    batch_stats,
    connector_keys=method.connector_keys(),
    feature_mask=features,
    where="method.trainable",
  )
  out = StagePlan(main_tx, main_stats)
  stage = method.init
  if stage is not None:
    lr = float(config.optim.lr)  # already scaled with the batch when asked to
    if stage.lr:
      lr = stage.lr * (
        config.batch_size / config.optim.reference_batch_size
        if config.optim.scale_lr_with_batch
        else 1.0
      )
    init_tx, init_schedule = stage_lr_optimizer(config.optim, lr, stage.milestones, steps_per_epoch)
    init_tx, init_stats = stage_optimizer(
      init_tx,
      stage.trainable,
      params,
      batch_stats,
      connector_keys=stage.method.connector_keys(),
      feature_mask=features,
      where="method.init.trainable",
    )
    out = dataclasses.replace(
      out,
      init_epochs=stage.epochs,
      init_steps=stage.epochs * steps_per_epoch,
      init_tx=init_tx,
      init_stats_mask=init_stats,
      init_schedule=init_schedule,
    )
  return out
