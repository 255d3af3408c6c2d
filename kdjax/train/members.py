"""Seeds as a batch axis: N students of one run config trained in one jitted step (``jax.vmap``).

``train_members(config, seeds, workdir)`` trains the run ``config`` once per seed in ``seeds``,
all members together: the train state of every member is stacked along a leading *member* axis
and the normal train step (:func:`kdjax.train.step.make_steps`, imported, unchanged) is mapped
over it inside one ``jax.jit`` (state donated): with ``jax.vmap`` on accelerators, written out
once per member on CPU (``impl``, :func:`resolve_impl`). Member ``i`` is exactly the run
``config`` with ``seed = seeds[i]`` as :func:`kdjax.train.loop.train_and_evaluate` would train
it: the same initialisation (``split(PRNGKey(seed), 3)`` → init, connector and run keys), data
order (``batch_indices(seed, epoch)``) and augmentation key (``fold_in(run key, step)``). Under
``vmap`` the convolutions become batched convolutions, so a member equals the run trained alone
up to float32 reassociation (tested: ``tests/test_members.py``).

``shared_data=True`` gives every member the data order and augmentation of ``seeds[0]`` (members
then differ in their initialisation only). Their inputs coincide, so the teacher forward is not
mapped: ``vmap`` leaves a computation whose inputs carry no member axis unbatched, and the teacher
runs once per step for all members.

Workdir layout::

  workdir/checkpoints/<step>/   the joint resume state (every member's params, BN statistics,
                                optimiser state, step, RNG key, explicit loss states, stacked)
  workdir/summary.json          per-member last/best top-1 and their mean ± std
  workdir/seed<S>/              member with seed S as a plain kdjax run: kept/<step> (kept epochs
                                + final), best/<step>, config.json (``seed`` = S), summary.json,
                                metrics.jsonl

so ``kdjax.train.load_model(workdir + '/seed0')``, ``launch.evaluate``, ``launch.analyze`` and
``config.teacher.workdir`` consume a member like any trained model. Relaunching resumes from the
joint checkpoint (the data position follows from the step, as in the normal loop).

Not supported (a :class:`kdjax.errors.UserError` says so): a method init stage
(``method.init.epochs > 0``) and streamed (host-decoded) datasets.

How this maps onto a task object of the single training loop: the member axis is a property of the
task's *state* (stacked) and *step* (``vmap`` of the task's step with the member in_axes below);
evaluation, checkpoint export and the summary iterate over members. A ``MembersTask`` wrapping any
single-run task needs exactly ``init_state`` (stack N inits), ``step`` (vmapped), ``batch``
(stacked per-seed index vectors) and ``export`` (slice member ``i``) from it.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from kdjax import data as kdata
from kdjax import models
from kdjax import precision
from kdjax.config import validate
from kdjax.data import augment
from kdjax.errors import UserError
from kdjax.methods import build_method
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import parallel
from kdjax.train import stages as stages_lib
from kdjax.train import state as state_lib
from kdjax.train.loop import InMemoryFeed, evaluate, load_data, scale_lr_for_batch
from kdjax.train.logging import MetricWriter
from kdjax.train.optim import make_optimizer
from kdjax.train.step import make_eval_step, make_steps
from kdjax.train.teacher import load_teacher


def member_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f"seed{int(seed)}")


def stack(trees: Sequence):
  """Stacks pytrees with equal structure along a new leading member axis."""
  return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def member(tree, i: int):
  """Member ``i`` of a stacked pytree."""
  return jax.tree_util.tree_map(lambda x: x[i], tree)


def _keep_epochs(config) -> set:
  keep = set(int(e) for e in config.keep_epochs)
  if config.keep_every_epochs > 0:
    keep |= set(range(config.keep_every_epochs, config.num_epochs + 1, config.keep_every_epochs))
  keep.add(config.num_epochs)
  return keep


def init_member(*, seed: int, student, method, teacher, dummy, tx_for, index_space: int):
  """Member ``seed``'s initial train state, built exactly as ``train_and_evaluate`` builds it
  (:func:`kdjax.train.state.init_train_state` on the seed's key). Returns ``(state, tx, built)``;
  ``built.method`` is the method bound to the pair."""
  rng = jax.random.PRNGKey(int(seed))
  k_init = jax.random.split(rng, 3)[0]
  variables = student.init(k_init, dummy, train=False)
  built = state_lib.init_train_state(
    student, teacher, method, dummy, rng, num_examples=index_space, student_variables=variables
  )
  tx = tx_for(built.method, built.params, built.batch_stats, variables)
  return built.create(tx), tx, built


IMPLS = ("auto", "vmap", "unroll")


def resolve_impl(impl: str) -> str:
  """'auto' = 'vmap' on accelerators, 'unroll' on CPU: under vmap the members' convolutions
  become grouped convolutions (``feature_group_count = N``), which XLA:CPU runs 2-3x slower than
  N separate ones (measured by bench/members.py); on a GPU, where one small student leaves most
  of the chip idle, the batched computation is the point (not measured yet: no GPU was
  available). ``lax.map`` was measured too: 6x slower than one step on XLA:CPU even for N = 1."""
  if impl not in IMPLS:
    raise UserError(f"members: impl must be one of {IMPLS}, got {impl!r}.")
  if impl == "auto":
    return "unroll" if jax.default_backend() == "cpu" else "vmap"
  return impl


def make_member_step(train_indexed, num_members: int, *, shared_data: bool, impl: str = "vmap"):
  """The jitted step of ``num_members`` stacked states from the single-run step
  ``train_indexed(state, images, labels, ds_index, idx, teacher_vars)``.

  Seed mode: ``idx`` is ``(N, B)`` (one index vector per member) and everything in the state is
  mapped. Shared mode: ``idx`` is ``(B,)`` and the step counter and RNG key are unmapped (taken
  from member 0, identical for all), so the augmented batch, and the teacher forward on it, carry
  no member axis and are computed once (``impl='vmap'``).

  ``impl='vmap'``: ``jax.vmap`` over the member axis (one batched computation). ``impl='unroll'``:
  the single-run step written out once per member inside the same jitted step (one dispatch,
  each member's computation exactly a single run's, compile time grows with N; the teacher
  forward runs per member unless ``shared_data``, where XLA's common-subexpression elimination
  may merge the identical teacher forwards)."""
  if impl == "unroll":

    def step(state, images, labels, ds_index, idx, t_vars):
      outs = [
        train_indexed(
          member(state, i), images, labels, ds_index, idx if shared_data else idx[i], t_vars
        )
        for i in range(num_members)
      ]
      return stack([o[0] for o in outs]), stack([o[1] for o in outs])
  elif not shared_data:
    mapped = jax.vmap(train_indexed, in_axes=(0, None, None, None, 0, None))

    def step(state, images, labels, ds_index, idx, t_vars):
      return mapped(state, images, labels, ds_index, idx, t_vars)
  else:

    def step(state, images, labels, ds_index, idx, t_vars):
      axes = state.replace(
        step=None, params=0, batch_stats=0, opt_state=0, rng=None, method_state=0
      )
      one = state.replace(step=state.step[0], rng=state.rng[0])
      new, metrics = jax.vmap(
        train_indexed, in_axes=(axes, None, None, None, None, None), out_axes=(axes, 0)
      )(one, images, labels, ds_index, idx, t_vars)
      return new.replace(step=jnp.broadcast_to(new.step, (num_members,)), rng=state.rng), metrics

  return jax.jit(step, donate_argnums=(0,))


def _mean_std(xs):
  xs = [x for x in xs if x is not None]
  if not xs:
    return None, None
  return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def train_members(
  config,
  seeds: Sequence[int],
  workdir: str,
  *,
  shared_data: bool = False,
  impl: str = "auto",
  mesh=None,
) -> dict:
  """Trains (or resumes) ``len(seeds)`` members of the run ``config`` in one vmapped step;
  returns the joint summary (also ``workdir/summary.json``). ``config.seed`` is ignored.
  ``impl``: see :func:`make_member_step` and :func:`resolve_impl`."""
  validate(config)
  impl = resolve_impl(impl)
  seeds = [int(s) for s in seeds]
  if not seeds or len(set(seeds)) != len(seeds):
    raise UserError(f"members: seeds must be a non-empty list of distinct integers, got {seeds}.")
  n = len(seeds)
  method = build_method(config.method)
  if method.init is not None:
    raise UserError(
      "members: methods with an init stage (method.init.epochs > 0) are not "
      "supported by the member trainer; train them with launch/distill.py."
    )
  mesh = mesh or parallel.make_mesh()
  parallel.check_batch(config.batch_size, mesh)
  os.makedirs(workdir, exist_ok=True)

  dcfg = config.dataset
  feed, eval_batches, info, n_train = load_data(config, mesh)
  if not isinstance(feed, InMemoryFeed):
    raise UserError(
      f"members: {dcfg.name!r} is streamed from the host; the member trainer needs "
      "an in-memory dataset (CIFAR, (Fashion-)MNIST)."
    )
  bs = config.batch_size
  steps_per_epoch = feed.steps_per_epoch()
  if steps_per_epoch < 1:
    raise UserError(f"{n_train} training examples is fewer than one batch of {bs}.")
  total_steps = steps_per_epoch * config.num_epochs

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
  dummy = jnp.zeros((1,) + tuple(info.image_shape), jnp.float32)
  scale_lr_for_batch(config)
  base_tx, schedule = make_optimizer(config.optim, steps_per_epoch)
  plans = {}

  def tx_for(bound, params, batch_stats, variables):
    p = stages_lib.plan(
      bound,
      config,
      base_tx,
      params,
      batch_stats,
      steps_per_epoch,
      feature_mask=lambda: stages_lib.student_feature_mask(student, variables, dummy),
    )
    plans["main"] = p
    return p.main_tx

  states = []
  for s in seeds:
    st, tx, built = init_member(
      seed=s,
      student=student,
      method=method,
      teacher=teacher,
      dummy=dummy,
      tx_for=tx_for,
      index_space=feed.index_space,
    )
    states.append(st)
  state = stack(states)
  del states
  plan = plans["main"]
  method, conn = built.method, built.connectors  # the method bound to the pair
  print(
    f"[kdjax] members: {n} x {config.model} (seeds {seeds}"
    + (", shared data order/augmentation" if shared_data else "")
    + f"; jax.{impl}"
    + ")"
    + (f"; teacher {teacher.meta['arch']} ({teacher.meta['workdir']})" if teacher else "")
    + f"; {steps_per_epoch} steps/epoch"
  )

  # ---- checkpoints / resume --------------------------------------------------------------------
  mdirs = [member_dir(workdir, s) for s in seeds]
  ckpts = ckpt_lib.RunCheckpoints(workdir, async_save=config.async_checkpoint)
  mckpts = [ckpt_lib.RunCheckpoints(d, async_save=config.async_checkpoint) for d in mdirs]
  run_meta = {
    "seeds": seeds,
    "shared_data": bool(shared_data),
    "best_top1": [-1.0] * n,
    "best_epoch": [0] * n,
  }
  if ckpts.latest_step() is not None:
    abstract = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(mesh)), state
    )
    state, saved = ckpts.restore_state(abstract)
    if list(saved.get("seeds", [])) != seeds or bool(saved.get("shared_data")) != shared_data:
      raise UserError(
        f"{workdir}/checkpoints holds members {saved.get('seeds')} (shared_data="
        f"{saved.get('shared_data')}); relaunch with those or use a new --workdir."
      )
    run_meta.update({k: saved[k] for k in ("best_top1", "best_epoch") if k in saved})
    print(f"[kdjax] resumed from {workdir}/checkpoints/{int(state.step[0])}")
  else:
    cfg_json = json.loads(config.to_json_best_effort())
    ckpt_lib.write_json(
      os.path.join(workdir, "config.json"),
      dict(cfg_json, members=dict(seeds=seeds, shared_data=shared_data)),
    )
    for s, d in zip(seeds, mdirs):
      ckpt_lib.write_json(os.path.join(d, "config.json"), dict(cfg_json, seed=s))
  state = parallel.put_replicated(state, mesh)

  # ---- steps -----------------------------------------------------------------------------------
  train_tf = augment.dataset_train_transform(info, dcfg)  # crop, flip, colour jitter
  eval_tf = lambda im: augment.eval_transform(info, im)
  view_tf = augment.dataset_train_transform(info, dcfg, flip=False)
  steps = make_steps(
    student=student,
    method=method,
    tx=plan.main_tx,
    train_transform=train_tf,
    eval_transform=eval_tf,
    teacher=teacher.run_module if teacher else None,
    connectors=conn,
    steps_per_epoch=steps_per_epoch,
    mixup_alpha=float(dcfg.mixup_alpha),
    stats_mask=plan.main_stats_mask,
    view_transform=view_tf,
  )
  mstep = make_member_step(steps.train_indexed, n, shared_data=shared_data, impl=impl)
  t_vars = parallel.put_replicated(teacher.run_variables, mesh) if teacher else {}
  teacher_metrics, teacher_pred = {}, None
  if teacher is not None:
    t_steps = make_eval_step(teacher.run_module, eval_tf)
    teacher_metrics, teacher_pred = evaluate(
      t_steps, t_vars, eval_batches(), mesh, config.eval_batch_size
    )
    print(f"[kdjax] teacher test top-1 {teacher_metrics['top1']:.2f}")

  writers = [MetricWriter(d, tensorboard=config.tensorboard) for d in mdirs]
  n_dev = mesh.devices.size
  idx_sharding = lambda b: (
    NamedSharding(mesh, P(*((None,) if not shared_data else ()), "data"))
    if b % n_dev == 0
    else parallel.replicated(mesh)
  )

  def epoch_batches(epoch: int, offset: int):
    per = [
      kdata.batch_indices(feed.n, bs, seed=s, epoch=epoch, drop_remainder=config.drop_remainder)
      for s in (seeds[:1] if shared_data else seeds)
    ]
    for j in range(offset, len(per[0])):
      idx = np.stack([p[j] for p in per]).astype(np.int32)
      idx = idx[0] if shared_data else idx
      yield jax.device_put(idx, idx_sharding(idx.shape[-1]))

  def mvars(i):
    return {
      "params": member(state.params["student"], i),
      "batch_stats": member(state.batch_stats["student"], i),
    }

  def model_meta(i, epoch, metrics, step):
    return {
      "arch": config.model,
      "num_classes": info.num_classes,
      "dataset": dcfg.name,
      "model_kwargs": config.model_kwargs.to_dict(),
      "epoch": epoch,
      "step": step,
      "seed": seeds[i],
      "members": {"workdir": workdir, "seeds": seeds},
      **{f"test_{k}": v for k, v in metrics.items()},
    }

  pending, last_checked = [], None

  def flush(step):
    nonlocal pending, last_checked
    if not pending:
      return
    host = jax.device_get(pending)
    losses = np.stack([np.asarray(m["loss"]) for m in host])  # (steps, N)
    if not np.all(np.isfinite(losses)):
      ckpts.wait()
      bad = [seeds[i] for i in range(n) if not np.all(np.isfinite(losses[:, i]))]
      raise UserError(
        f"The training loss of member(s) {bad} became non-finite before step "
        f"{step} of {workdir}; no checkpoint of the bad state was written. Lower "
        "optim.lr, check the teacher and the data normalisation, then relaunch."
      )
    lr = float(schedule(step - 1))
    for i in range(n):
      writers[i].write(
        step,
        dict({k: float(np.mean([np.asarray(m[k])[i] for m in host])) for k in host[-1]}, lr=lr),
        prefix="train/",
      )
    pending, last_checked = [], step

  keep = _keep_epochs(config)
  start_step = int(state.step[0])
  stop_step = min(total_steps, config.max_steps) if config.max_steps > 0 else total_steps
  last_eval = [{} for _ in range(n)]
  step = start_step
  t_start = time.time()
  try:
    for epoch in range(start_step // steps_per_epoch, config.num_epochs):
      if step >= stop_step:
        break
      for idx in epoch_batches(epoch, step - epoch * steps_per_epoch):
        if step >= stop_step:
          break
        state, metrics = mstep(state, feed.images, feed.labels, feed.index, idx, t_vars)
        step += 1
        pending.append(metrics)
        if step % config.log_every_steps == 0:
          flush(step)
      flush(step)
      if step != (epoch + 1) * steps_per_epoch:  # max_steps reached mid-epoch
        ckpts.save_state(step, state, dict(run_meta, epoch=epoch))
        break
      e = epoch + 1
      if e % config.eval_every_epochs == 0 or e == config.num_epochs or e in keep:
        for i in range(n):
          last_eval[i], _ = evaluate(
            steps, mvars(i), eval_batches(), mesh, config.eval_batch_size, teacher_pred
          )
          writers[i].write(step, dict(last_eval[i], epoch=e), prefix="test/")
          if last_eval[i]["top1"] > run_meta["best_top1"][i]:
            run_meta["best_top1"][i], run_meta["best_epoch"][i] = last_eval[i]["top1"], e
            mckpts[i].save_model("best", step, mvars(i), model_meta(i, e, last_eval[i], step))
        print(
          f"[kdjax] epoch {e}/{config.num_epochs}: test top-1 "
          + ", ".join(f"seed {s} {m['top1']:.2f}" for s, m in zip(seeds, last_eval))
          + f", {time.time() - t_start:.0f}s"
        )
      if e in keep:
        for i in range(n):
          mckpts[i].save_model("kept", step, mvars(i), model_meta(i, e, last_eval[i], step))
      ckpts.save_state(step, state, dict(run_meta, epoch=e))
  finally:
    for c in [ckpts] + mckpts:
      c.close()
    for w in writers:
      w.close()
    for d in [os.path.join(workdir, "kept"), os.path.join(workdir, "best")] + [
      os.path.join(d, "checkpoints") for d in mdirs
    ]:
      if os.path.isdir(d) and not os.listdir(d):
        os.rmdir(d)

  finished = step >= total_steps
  summary_path = os.path.join(workdir, "summary.json")
  if not any(last_eval) and step == start_step and os.path.exists(summary_path):
    with open(summary_path) as fh:  # a finished run launched again: keep its figures
      prev = json.load(fh)
    if prev.get("step") == step:
      prev["state"] = state
      return prev
  seconds = time.time() - t_start
  best = lambda v: v if v >= 0 else None
  per = []
  for i, s in enumerate(seeds):
    ms = {
      "model": config.model,
      "dataset": dcfg.name,
      "method": method.name,
      "seed": s,
      "finished": finished,
      "step": step,
      "total_steps": total_steps,
      "last_top1": last_eval[i].get("top1"),
      "last_top5": last_eval[i].get("top5"),
      "last_agreement": last_eval[i].get("agreement"),
      "best_top1": best(run_meta["best_top1"][i]),
      "best_epoch": run_meta["best_epoch"][i],
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
      "train_seconds": seconds,
      "num_devices": int(n_dev),
      "members": {"workdir": workdir, "seeds": seeds, "shared_data": bool(shared_data)},
    }
    ckpt_lib.write_json(os.path.join(mdirs[i], "summary.json"), ms)
    per.append(ms)
  summary = {
    "model": config.model,
    "dataset": dcfg.name,
    "method": method.name,
    "seeds": seeds,
    "shared_data": bool(shared_data),
    "impl": impl,
    "finished": finished,
    "step": step,
    "total_steps": total_steps,
    "member_workdirs": mdirs,
    "teacher_top1": teacher_metrics.get("top1"),
    "train_seconds": seconds,
  }
  for key in ("last_top1", "best_top1", "last_agreement"):
    summary[key] = [m[key] for m in per]
    summary[key + "_mean"], summary[key + "_std"] = _mean_std(summary[key])
  ckpt_lib.write_json(summary_path, summary)
  summary["state"] = state
  return summary
