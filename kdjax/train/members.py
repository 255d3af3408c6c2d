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

import itertools
import json
import os
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from kdjax import data as kdata
from kdjax.data import augment
from kdjax.errors import UserError
from kdjax.methods import build_method
from kdjax.train import parallel
from kdjax.train import stages as stages_lib
from kdjax.train import state as state_lib
from kdjax.train.distill import build_pair, model_summary
from kdjax.train.runner import InMemoryFeed, evaluate, load_data, scale_lr_for_batch
from kdjax.train.task import Export, Stage, Task
from kdjax.train.logging import MetricWriter
from kdjax.train.optim import make_optimizer
from kdjax.train.step import make_eval_step, make_steps


def member_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f"seed{int(seed)}")


def member_name(seed: int, point: Optional[dict] = None) -> str:
  """A member's directory: ``seed<S>``, with a grid point's overrides appended
  (``seed0-method.terms.kd.temperature=2``)."""
  return f"seed{int(seed)}" + "".join(f"-{k}={v}" for k, v in (point or {}).items())


GRID_PREFIXES = ("method.", "optim.")


def grid_points(grid) -> list:
  """The grid points of ``grid``: ``None`` / ``{}`` -> ``[{}]``; a dict of dotted config keys to
  value lists -> their Cartesian product (in key order); a list of dicts -> those points.
  Keys must lie under ``method.`` or ``optim.`` (numbers of the loss and the optimiser)."""
  if not grid:
    return [{}]
  if isinstance(grid, dict):
    keys = list(grid)
    for k in keys:
      if isinstance(grid[k], (str, bytes)) or not hasattr(grid[k], "__iter__"):
        raise UserError(f"members: grid[{k!r}] must be a list of values, got {grid[k]!r}.")
    points = [dict(zip(keys, vals)) for vals in itertools.product(*(list(grid[k]) for k in keys))]
  else:
    points = [dict(p) for p in grid]
  for p in points:
    for k in p:
      if not k.startswith(GRID_PREFIXES):
        raise UserError(
          f"members: grid key {k!r} must be a dotted config key under {GRID_PREFIXES} "
          "(e.g. method.terms.kd.temperature)."
        )
  if len({tuple(sorted(p.items())) for p in points}) != len(points):
    raise UserError(f"members: the grid has repeated points: {points}.")
  return points


def apply_overrides(config, point: dict, *, seed: int):
  """A copy of ``config`` with ``seed`` and the grid point's dotted keys set (a typo is one
  UserError naming the key)."""
  c = config.copy_and_resolve_references()
  c.seed = int(seed)
  for key, value in point.items():
    *path, last = key.split(".")
    node = c
    for part in path:
      if part not in node:
        raise UserError(f"members: grid key {key!r}: the config has no {part!r} there.")
      node = node[part]
    if last not in node:
      raise UserError(f"members: grid key {key!r}: the config has no {last!r} there.")
    try:
      node[last] = float(value) if isinstance(node[last], float) else value
    except (TypeError, ValueError) as e:
      raise UserError(f"members: grid key {key!r} = {value!r}: {e}") from None
  return c


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
  ``train_indexed(state, images, labels, ds_index, idx, teacher_vars)`` (or a list of one such
  step per member: a hyper-parameter grid; only ``impl='unroll'`` runs different functions).

  Seed mode: ``idx`` is ``(N, B)`` (one index vector per member) and everything in the state is
  mapped. Shared mode: ``idx`` is ``(B,)`` and the step counter and RNG key are unmapped (taken
  from member 0, identical for all), so the augmented batch, and the teacher forward on it, carry
  no member axis and are computed once (``impl='vmap'``).

  ``impl='vmap'``: ``jax.vmap`` over the member axis (one batched computation). ``impl='unroll'``:
  the single-run step written out once per member inside the same jitted step (one dispatch,
  each member's computation exactly a single run's, compile time grows with N; the teacher
  forward runs per member unless ``shared_data``, where XLA's common-subexpression elimination
  may merge the identical teacher forwards)."""
  fns = list(train_indexed) if isinstance(train_indexed, (list, tuple)) else None
  if fns is not None and impl != "unroll":
    if len(set(map(id, fns))) > 1:
      raise UserError("members: different step functions per member need impl='unroll'.")
    train_indexed = fns[0]
  if impl == "unroll":
    per = fns if fns is not None else [train_indexed] * num_members

    def step(state, images, labels, ds_index, idx, t_vars):
      outs = [
        per[i](member(state, i), images, labels, ds_index, idx if shared_data else idx[i], t_vars)
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

  def __init__(
    self, config, mesh, *, seeds: Sequence[int], shared_data=False, impl="auto", grid=None
  ):
    try:
      seeds = [int(s) for s in seeds]
    except (TypeError, ValueError):
      seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
      raise UserError(f"members: seeds must be a non-empty list of distinct integers, got {seeds}.")
    points = grid_points(grid)
    if len(points) > 1 or points[0]:
      if impl == "vmap":
        raise UserError(
          "members: a hyper-parameter grid needs impl='unroll' (or 'auto'): jax.vmap maps ONE "
          "step function, and every grid point is another step function."
        )
      impl = "unroll"
    impl = resolve_impl(impl)
    # the members: every grid point x every seed, grid-point major
    plan_m = [(pt, s) for pt in points for s in seeds]
    n = len(plan_m)
    cfgs = [apply_overrides(config, pt, seed=s) for pt, s in plan_m]
    methods = [build_method(c.method) for c in cfgs]
    if any(m.init is not None for m in methods):
      raise UserError(
        "members: methods with an init stage (method.init.epochs > 0) are not "
        "supported by the member trainer; train them with launch/distill.py."
      )
    if jax.process_count() > 1:
      raise UserError(
        "members: the member trainer runs in one process (its member axis is not sharded over "
        "processes); launch it without jax.distributed, or train the seeds as separate runs."
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
    self.points, self.plan_m = points, plan_m
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

    student, teacher = build_pair(config, info, any(m.needs_teacher for m in methods))
    self.teacher = teacher
    dummy = jnp.zeros((1,) + tuple(info.image_shape), jnp.float32)
    train_tf = augment.dataset_train_transform(info, dcfg)  # crop, flip, colour jitter
    self.eval_tf = eval_tf = lambda im: augment.eval_transform(info, im)
    view_tf = augment.dataset_train_transform(info, dcfg, flip=False)
    states, self.member_steps, self.schedules, built = [], [], [], None
    for (pt, s), cfg, method in zip(plan_m, cfgs, methods):
      scale_lr_for_batch(cfg)
      base_tx, schedule = make_optimizer(cfg.optim, spe)
      plans = {}

      def tx_for(bound, params, batch_stats, variables, cfg=cfg, base_tx=base_tx, plans=plans):
        p = stages_lib.plan(
          bound,
          cfg,
          base_tx,
          params,
          batch_stats,
          spe,
          feature_mask=lambda: stages_lib.student_feature_mask(student, variables, dummy),
        )
        plans["main"] = p
        return p.main_tx

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
      plan = plans["main"]
      self.member_steps.append(
        make_steps(
          student=student,
          method=built.method,
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
      )
      self.schedules.append(schedule)
    try:
      self.state = stack(states)
    except (ValueError, TypeError) as e:
      raise UserError(
        f"members: the grid {grid!r} changes the structure of the train state ({e}); a grid "
        "may vary numbers only (weights, temperatures, lr), not terms, models or optimisers."
      ) from None
    del states
    self.method = built.method  # the (last member's) method bound to the pair
    print(
      f"[kdjax] members: {n} x {config.model} (seeds {seeds}"
      + (f" x {len(points)} grid points" if len(points) > 1 or points[0] else "")
      + (", shared data order/augmentation" if shared_data else "")
      + f"; jax.{impl}"
      + ")"
      + (f"; teacher {teacher.meta['arch']} ({teacher.meta['workdir']})" if teacher else "")
      + f"; {spe} steps/epoch"
    )
    self.steps = self.member_steps[0]
    # One grid point: one step function for every member (seeds differ in the state only), as
    # vmap needs; a grid: one function per member (impl 'unroll').
    fns = [m.train_indexed for m in self.member_steps]
    self.gridded = gridded = len(points) > 1 or bool(points[0])
    mstep = make_member_step(fns if gridded else fns[0], n, shared_data=shared_data, impl=impl)
    self.t_vars = t_vars = parallel.put_replicated(teacher.run_variables, mesh) if teacher else {}
    self.stages = [
      Stage(
        "main",
        config.num_epochs,
        lambda st, idx: mstep(st, feed.images, feed.labels, feed.index, idx, t_vars),
        self.schedules[0],
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
        member_name(s, pt),
        mvars(i),
        meta={
          "arch": config.model,
          "num_classes": info.num_classes,
          "dataset": dcfg.name,
          "model_kwargs": config.model_kwargs.to_dict(),
          "seed": s,
          **({"overrides": dict(pt)} if pt else {}),
        },
        subdir=member_name(s, pt),
      )
      for i, (pt, s) in enumerate(plan_m)
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
      for s in (self.seeds[:1] if self.shared_data else [s for _, s in self.plan_m])
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
  def _grid_json(self):
    return [dict(p) for p in self.points] if (len(self.points) > 1 or self.points[0]) else []

  def config_json(self, cfg_json):
    members = dict(seeds=self.seeds, shared_data=self.shared_data)
    if self._grid_json():
      members["grid"] = self._grid_json()
    return dict(cfg_json, members=members)

  def export_config_json(self, export, cfg_json):
    plain = json.loads(json.dumps({k: v for k, v in cfg_json.items() if k != "members"}))
    for key, value in (export.meta.get("overrides") or {}).items():
      node = plain
      *path, last = key.split(".")
      for part in path:
        node = node.setdefault(part, {})
      node[last] = value
    return dict(plain, seed=export.meta["seed"])

  def resume_meta(self):
    meta = {"seeds": self.seeds, "shared_data": self.shared_data}
    if self._grid_json():
      meta["grid"] = self._grid_json()
    return meta

  def check_resumed(self, workdir, saved):
    if (
      list(saved.get("seeds", [])) != self.seeds
      or bool(saved.get("shared_data")) != self.shared_data
      or list(saved.get("grid", [])) != self._grid_json()
    ):
      raise UserError(
        f"{workdir}/checkpoints holds members {saved.get('seeds')} (shared_data="
        f"{saved.get('shared_data')}, grid {saved.get('grid', [])}); relaunch with those or "
        "use a new --workdir."
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
    mean.pop("lr")
    for i, w in enumerate(self.writers):
      lr = float(self.schedules[i](step - 1))
      w.write(step, dict({k: v[i] for k, v in mean.items()}, lr=lr), prefix=prefix)

  def evaluate(self, state):
    cfg = self.config
    out = [
      evaluate(
        self.member_steps[i] if self.gridded else self.steps,
        ex.variables(state),
        self.eval_batches(),
        self.mesh,
        cfg.eval_batch_size,
        self.teacher_pred,
      )[0]
      for i, ex in enumerate(self.exports)
    ]
    return out, {}

  def log_eval(self, writer, step, metrics, extra, epoch):
    for w, m in zip(self.writers, metrics):
      w.write(step, dict(m, epoch=epoch), prefix="test/")

  def eval_line(self, metrics, progress):
    return ": test top-1 " + ", ".join(
      f"{ex.label.replace('seed', 'seed ', 1)} {m['top1']:.2f}"
      for ex, m in zip(self.exports, metrics)
    )

  def summary(self, p):
    config, teacher, seeds = self.config, self.teacher, self.seeds
    per, subs = [], {}
    for i, (pt, s) in enumerate(self.plan_m):
      ms = {
        **model_summary(config, self.method.name, p, i, teacher, self.teacher_metrics, seed=s),
        "members": {"workdir": self.workdir, "seeds": seeds, "shared_data": self.shared_data},
        **({"overrides": dict(pt)} if pt else {}),
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
      "member_workdirs": [os.path.join(self.workdir, ex.subdir) for ex in self.exports],
      "teacher_top1": self.teacher_metrics.get("top1"),
      "train_seconds": p.seconds,
    }
    for key in ("last_top1", "best_top1", "last_agreement"):
      summary[key] = [m[key] for m in per]
      summary[key + "_mean"], summary[key + "_std"] = _mean_std(summary[key])
    if self._grid_json():  # mean ± std over the seeds of each grid point
      summary["grid"] = []
      for pt in self.points:
        rows = [m for (q, _), m in zip(self.plan_m, per) if q == pt]
        g = {"overrides": dict(pt), "seeds": [m["seed"] for m in rows]}
        for key in ("last_top1", "best_top1", "last_agreement"):
          g[key + "_mean"], g[key + "_std"] = _mean_std([m[key] for m in rows])
        summary["grid"].append(g)
    return summary, subs

  def close(self):
    for w in self.writers:
      w.close()
    self.writers = []
