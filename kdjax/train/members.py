"""Seeds as a batch axis: N students of one run config trained in one jitted step (``jax.vmap``).

:class:`MembersTask` (the member run's task for the one loop, :func:`kdjax.train.loop.run`;
entry point :func:`kdjax.train.loop.train_members`): ``train_members(config, seeds, workdir)`` trains the run ``config`` once per seed in ``seeds``,
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

As a task of the one loop, the member axis is a property of the task's *state* (stacked) and
*step* (the single run's step mapped over the members); evaluation, the model checkpoints, the
per-member ``metrics.jsonl`` and the summary iterate over the members (one export each). Resume,
the non-finite stop (any member), crash points and cadence are the loop's, as for every run.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from kdjax import data as kdata
from kdjax import precision
from kdjax.data import augment
from kdjax.errors import UserError
from kdjax.methods import build_method
from kdjax.train import parallel
from kdjax.train import stages as stages_lib
from kdjax.train import state as state_lib
from kdjax.train.runner import InMemoryFeed, evaluate, load_data, scale_lr_for_batch
from kdjax.train.task import Export, Stage, Task
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


class MembersTask(Task):
  """``len(seeds)`` members of the run ``config`` in one step (module docstring); member ``i``
  is an export written to ``workdir/seed<S>`` with its own ``metrics.jsonl``."""

  kind = "members"

  def __init__(self, config, mesh, *, seeds: Sequence[int], shared_data=False, impl="auto"):
    impl = resolve_impl(impl)
    try:
      seeds = [int(s) for s in seeds]
    except (TypeError, ValueError):
      seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
      raise UserError(f"members: seeds must be a non-empty list of distinct integers, got {seeds}.")
    n = len(seeds)
    method = build_method(config.method)
    if method.init is not None:
      raise UserError(
        "members: methods with an init stage (method.init.epochs > 0) are not "
        "supported by the member trainer; train them with launch/distill.py."
      )
    if int(config.teacher.rco.num_anchors):
      raise UserError("members: teacher.rco is not supported by the member trainer.")
    self.config, self.mesh, self.seeds, self.shared_data, self.impl = (
      config,
      mesh,
      seeds,
      bool(shared_data),
      impl,
    )
    dcfg = config.dataset
    feed, self.eval_batches, info, n_train = load_data(config, mesh)
    if not isinstance(feed, InMemoryFeed):
      raise UserError(
        f"members: {dcfg.name!r} is streamed from the host; the member trainer needs "
        "an in-memory dataset (CIFAR, (Fashion-)MNIST)."
      )
    self.feed = feed
    bs = config.batch_size
    spe = feed.steps_per_epoch()
    if spe < 1:
      raise UserError(f"{n_train} training examples is fewer than one batch of {bs}.")
    self.steps_per_epoch, self.num_epochs = spe, int(config.num_epochs)

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
    self.teacher = teacher
    dummy = jnp.zeros((1,) + tuple(info.image_shape), jnp.float32)
    scale_lr_for_batch(config)
    base_tx, schedule = make_optimizer(config.optim, spe)
    plans = {}

    def tx_for(bound, params, batch_stats, variables):
      p = stages_lib.plan(
        bound,
        config,
        base_tx,
        params,
        batch_stats,
        spe,
        feature_mask=lambda: stages_lib.student_feature_mask(student, variables, dummy),
      )
      plans["main"] = p
      return p.main_tx

    states = []
    for s in seeds:
      st, _, built = init_member(
        seed=s,
        student=student,
        method=method,
        teacher=teacher,
        dummy=dummy,
        tx_for=tx_for,
        index_space=feed.index_space,
      )
      states.append(st)
    self.state = stack(states)
    del states
    plan = plans["main"]
    self.method = method = built.method  # the method bound to the pair
    print(
      f"[kdjax] members: {n} x {config.model} (seeds {seeds}"
      + (", shared data order/augmentation" if shared_data else "")
      + f"; jax.{impl}"
      + ")"
      + (f"; teacher {teacher.meta['arch']} ({teacher.meta['workdir']})" if teacher else "")
      + f"; {spe} steps/epoch"
    )
    train_tf = augment.dataset_train_transform(info, dcfg)  # crop, flip, colour jitter
    self.eval_tf = eval_tf = lambda im: augment.eval_transform(info, im)
    view_tf = augment.dataset_train_transform(info, dcfg, flip=False)
    self.steps = make_steps(
      student=student,
      method=method,
      tx=plan.main_tx,
      train_transform=train_tf,
      eval_transform=eval_tf,
      teacher=teacher.run_module if teacher else None,
      connectors=built.connectors,
      steps_per_epoch=spe,
      mixup_alpha=float(dcfg.mixup_alpha),
      stats_mask=plan.main_stats_mask,
      view_transform=view_tf,
    )
    mstep = make_member_step(self.steps.train_indexed, n, shared_data=shared_data, impl=impl)
    self.t_vars = t_vars = parallel.put_replicated(teacher.run_variables, mesh) if teacher else {}
    self.stages = [
      Stage(
        "main",
        config.num_epochs,
        lambda st, idx: mstep(st, feed.images, feed.labels, feed.index, idx, t_vars),
        schedule,
      )
    ]
    self.fix = "Lower optim.lr, check the teacher and the data normalisation"
    mvars = lambda i: (
      lambda st: {
        "params": member(st.params["student"], i),
        "batch_stats": member(st.batch_stats["student"], i),
      }
    )
    self.exports = [
      Export(
        f"seed{s}",
        mvars(i),
        meta={
          "arch": config.model,
          "num_classes": info.num_classes,
          "dataset": dcfg.name,
          "model_kwargs": config.model_kwargs.to_dict(),
          "seed": s,
        },
        subdir=f"seed{s}",
      )
      for i, s in enumerate(seeds)
    ]
    self.writers = []
    self.teacher_metrics, self.teacher_pred = {}, None

  # ---- the state and its data ----------------------------------------------------------------
  def step_of(self, state) -> int:
    return int(state.step[0])

  def items(self, epoch: int, offset: int):
    cfg, feed, mesh = self.config, self.feed, self.mesh
    n_dev = mesh.devices.size
    per = [
      kdata.batch_indices(
        feed.n, cfg.batch_size, seed=s, epoch=epoch, drop_remainder=cfg.drop_remainder
      )
      for s in (self.seeds[:1] if self.shared_data else self.seeds)
    ]
    for j in range(offset, len(per[0])):
      idx = np.stack([p[j] for p in per]).astype(np.int32)
      idx = idx[0] if self.shared_data else idx
      sharding = (
        NamedSharding(mesh, P(*((None,) if not self.shared_data else ()), "data"))
        if idx.shape[-1] % n_dev == 0
        else parallel.replicated(mesh)
      )
      yield jax.device_put(idx, sharding)

  # ---- the workdir ---------------------------------------------------------------------------
  def config_json(self, cfg_json):
    return dict(cfg_json, members=dict(seeds=self.seeds, shared_data=self.shared_data))

  def export_config_json(self, export, cfg_json):
    plain = {k: v for k, v in cfg_json.items() if k != "members"}
    return dict(plain, seed=export.meta["seed"])

  def resume_meta(self):
    return {"seeds": self.seeds, "shared_data": self.shared_data}

  def check_resumed(self, workdir, saved):
    if list(saved.get("seeds", [])) != self.seeds or bool(saved.get("shared_data")) != (
      self.shared_data
    ):
      raise UserError(
        f"{workdir}/checkpoints holds members {saved.get('seeds')} (shared_data="
        f"{saved.get('shared_data')}); relaunch with those or use a new --workdir."
      )

  # ---- evaluation and logs -------------------------------------------------------------------
  def begin(self, workdir, writer, start_step):
    self.workdir = workdir
    cfg = self.config
    self.writers = [
      MetricWriter(
        os.path.join(workdir, ex.subdir), tensorboard=cfg.tensorboard, resume_step=start_step
      )
      for ex in self.exports
    ]
    if self.teacher is not None:
      t_steps = make_eval_step(self.teacher.run_module, self.eval_tf)
      self.teacher_metrics, self.teacher_pred = evaluate(
        t_steps, self.t_vars, self.eval_batches(), self.mesh, cfg.eval_batch_size
      )
      print(f"[kdjax] teacher test top-1 {self.teacher_metrics['top1']:.2f}")
      if start_step == 0:
        for w in self.writers:
          w.write(0, self.teacher_metrics, prefix="teacher/")

  def log_train(self, writer, step, mean, prefix):
    lr = mean.pop("lr")
    for i, w in enumerate(self.writers):
      w.write(step, dict({k: v[i] for k, v in mean.items()}, lr=lr), prefix=prefix)

  def evaluate(self, state):
    cfg = self.config
    out = [
      evaluate(
        self.steps,
        ex.variables(state),
        self.eval_batches(),
        self.mesh,
        cfg.eval_batch_size,
        self.teacher_pred,
      )[0]
      for ex in self.exports
    ]
    return out, {}

  def log_eval(self, writer, step, metrics, extra, epoch):
    for w, m in zip(self.writers, metrics):
      w.write(step, dict(m, epoch=epoch), prefix="test/")

  def eval_line(self, metrics, progress):
    return ": test top-1 " + ", ".join(
      f"seed {s} {m['top1']:.2f}" for s, m in zip(self.seeds, metrics)
    )

  def summary(self, p):
    config, teacher, seeds = self.config, self.teacher, self.seeds
    best = lambda v: v if v >= 0 else None
    per, subs = [], {}
    for i, s in enumerate(seeds):
      last = p.last_eval[i]
      ms = {
        "model": config.model,
        "dataset": config.dataset.name,
        "method": self.method.name,
        "seed": s,
        "finished": p.finished,
        "step": p.step,
        "total_steps": p.total_steps,
        "last_top1": last.get("top1"),
        "last_top5": last.get("top5"),
        "last_agreement": last.get("agreement"),
        "best_top1": best(p.best_top1[i]),
        "best_epoch": p.best_epoch[i],
        "teacher_top1": self.teacher_metrics.get("top1"),
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
        "members": {"workdir": self.workdir, "seeds": seeds, "shared_data": self.shared_data},
      }
      subs[self.exports[i].subdir] = ms
      per.append(ms)
    summary = {
      "model": config.model,
      "dataset": config.dataset.name,
      "method": self.method.name,
      "seeds": seeds,
      "shared_data": self.shared_data,
      "impl": self.impl,
      "finished": p.finished,
      "step": p.step,
      "total_steps": p.total_steps,
      "member_workdirs": [member_dir(self.workdir, s) for s in seeds],
      "teacher_top1": self.teacher_metrics.get("top1"),
      "train_seconds": p.seconds,
    }
    for key in ("last_top1", "best_top1", "last_agreement"):
      summary[key] = [m[key] for m in per]
      summary[key + "_mean"], summary[key + "_std"] = _mean_std(summary[key])
    return summary, subs

  def close(self):
    for w in self.writers:
      w.close()
    self.writers = []
