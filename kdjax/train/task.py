"""Task objects: what differs between kinds of training run, for the one loop in
:mod:`kdjax.train.loop`.

The loop (``loop.run(config, workdir, task_factory)``) owns everything every run needs: the
workdir, the config snapshot and the resume refusal, resume from the latest verified checkpoint,
the non-finite stop, log and checkpoint cadence, evaluation cadence, the best/ and kept/ model
checkpoints, crash points, the finished-run guard and ``summary.json``. A task says only what is
particular to its kind of run:

* its **state** (one pytree: a single student, K online peers, N stacked members) and how to read
  the step counter from it;
* its **stages** (:class:`Stage`): consecutive epoch ranges, each with its own jitted step, lr
  schedule (for the log line), metric prefix and an ``enter`` hook run when the stage begins (a
  fresh optimiser after an init stage; applied on resume too). An init stage is just a first
  stage whose epochs are not *counted* (no evaluation, not part of ``num_epochs``); RCO's teacher
  segments are counted stages that differ in the teacher they read;
* its **exports** (:class:`Export`): the models it evaluates and writes (``best/``, ``kept/`` and
  ``summary.json`` of each, in the run's own directory or a sub-directory per peer/member);
* how it evaluates, logs and summarises.

Kinds of run in kdjax: :class:`kdjax.train.distill.DistillTask` (supervised teachers,
distillation with an init stage or RCO teacher segments, SFTN teacher training),
:class:`kdjax.train.online.OnlineTask` (DML/KDCL with K peers),
:class:`kdjax.train.members.MembersTask` (N seeds in one step).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence


@dataclasses.dataclass
class Stage:
  """Consecutive epochs trained with one step function.

  ``run(state, item) -> (state, metrics)`` is one jitted step on one item of the task's
  :meth:`Task.items`; ``lr(i)`` the learning rate of the ``i``-th (0-based) step of the whole run
  (for the log line); ``counted``: the stage's epochs are the run's ``num_epochs`` (evaluated,
  numbered, kept); an uncounted stage (an init stage) is trained and checkpointed only;
  ``enter(state) -> state`` runs when the stage begins, both when training reaches it and when a
  run saved inside it is resumed (so that the restored state has this stage's structure)."""

  name: str
  epochs: int
  run: Callable
  lr: Callable[[int], float]
  counted: bool = True
  prefix: str = "train/"
  enter: Optional[Callable] = None
  label: str = ""


@dataclasses.dataclass
class Export:
  """A model of the run: ``variables(state)`` (``None``: evaluated and tracked only, e.g. an
  ensemble of peers, never written), ``meta`` the static part of its checkpoints' metadata, and
  ``subdir`` the directory under the workdir holding its ``best/``, ``kept/`` and
  ``summary.json`` (``''``: the run's own)."""

  label: str
  variables: Optional[Callable]
  meta: dict = dataclasses.field(default_factory=dict)
  subdir: str = ""


@dataclasses.dataclass
class Progress:
  """What the loop hands to :meth:`Task.summary` and :meth:`Task.eval_line`."""

  finished: bool
  step: int
  total_steps: int
  last_eval: Sequence[dict]
  best_top1: Sequence[float]
  best_epoch: Sequence[int]
  seconds: float
  num_devices: int


class Task:
  """Base class with the single-model defaults. Subclasses set, in ``__init__``:

  ``state`` (host or replicated pytree), ``stages``, ``exports``, ``steps_per_epoch``,
  ``num_epochs`` (counted epochs), ``fix`` (the advice of the non-finite stop), and usually
  ``feed`` (``items`` defaults to ``feed.epoch``)."""

  fix: str = "Lower optim.lr and check the data normalisation"
  kind: str = "run"
  state: Any = None
  stages: Sequence[Stage] = ()
  exports: Sequence[Export] = ()
  feed: Any = None
  num_epochs: int = 0
  steps_per_epoch: int = 0

  # ---- the state -------------------------------------------------------------------------------
  def step_of(self, state) -> int:
    return int(state.step)

  def items(self, epoch: int, offset: int):
    """The training items of ``epoch`` from its ``offset``-th step on."""
    return self.feed.epoch(epoch, offset)

  # ---- the workdir -----------------------------------------------------------------------------
  def config_json(self, cfg_json: dict) -> dict:
    """The run's ``config.json`` (compared on resume); ``cfg_json`` is the normalised config."""
    return cfg_json

  def export_config_json(self, export: Export, cfg_json: dict) -> dict:
    """``config.json`` of an export written in its own sub-directory."""
    return cfg_json

  def resume_meta(self) -> dict:
    """Static facts stored in the resume checkpoint and required to match on resume."""
    return {}

  def check_resumed(self, workdir: str, saved_meta: dict) -> None:
    """Refuses a checkpoint whose :meth:`resume_meta` differs (one UserError naming the fix)."""

  def begin(self, workdir: str, writer, start_step: int) -> None:
    """Called once the state is restored, before the first step (e.g. the teacher's test
    accuracy, written once per run at step 0)."""

  # ---- evaluation and logs ---------------------------------------------------------------------
  def evaluate(self, state) -> tuple[list, dict]:
    """Test metrics of every export (a list parallel to ``exports``) and extra flat metrics."""
    raise NotImplementedError

  def log_train(self, writer, step: int, mean: dict, prefix: str) -> None:
    writer.write(step, mean, prefix=prefix)

  def log_eval(self, writer, step: int, metrics: list, extra: dict, epoch: int) -> None:
    flat = dict(metrics[0]) if len(metrics) == 1 else {}
    if len(metrics) > 1:
      for ex, m in zip(self.exports, metrics):
        flat.update({f"{ex.label}/{k}": v for k, v in m.items()})
    flat.update(extra)
    writer.write(step, dict(flat, epoch=epoch), prefix="test/")

  def eval_line(self, metrics: list, progress: Progress) -> str:
    m = metrics[0]
    return (
      f": test top-1 {m['top1']:.2f} (best {progress.best_top1[0]:.2f} @ {progress.best_epoch[0]})"
      + (f", agreement {m['agreement']:.2f}" if "agreement" in m else "")
    )

  def summary(self, progress: Progress) -> tuple[dict, dict]:
    """The run's ``summary.json`` and ``{subdir: summary}`` of exports in sub-directories."""
    raise NotImplementedError

  def close(self) -> None:
    """Releases what the task opened (extra writers)."""
