r"""Route-constrained optimisation (RCO): the anchor schedule over a teacher's kept checkpoints.

Citation: Jin, Peng, Wu, Liu, Liu, Yan, Hu, "Knowledge Distillation via Route Constrained
Optimization", ICCV 2019 (compared against in SFTN, NeurIPS 2021). The student is distilled from
a *sequence* of the teacher's intermediate checkpoints ("anchor points" on the teacher's
optimisation route), easy to hard, ending with the converged teacher. No reference code is
public; this is a re-derivation (methods.md §7.2 RCO, unverified: our reading).

Pure functions (no jax, no I/O): :func:`rco_anchors` turns the epochs kept in a teacher run's
``kept/`` directory into a schedule of :class:`Anchor` segments ``[start, end)`` of the student's
epochs, each with the teacher epoch it distils from. Strategies:

* ``'equal_epoch'`` (default; the paper's "equal epoch interval"): the anchors are the kept
  checkpoints nearest to the teacher epochs ``E·i/N`` (i = 1..N, E the teacher's last kept
  epoch, the final model), and the student's epochs are split into N equal segments (the
  remainder goes to the last, hardest anchor).
* ``'explicit'``: ``anchor_epochs`` given by the user (a subset of ``kept_epochs``).

The train loop switches the teacher at each segment's ``start``: ``config.teacher.rco``
(``num_anchors > 0``) makes :class:`kdjax.train.distill.DistillTask` run one main-stage segment
per anchor, each reading that anchor's kept checkpoint of ``teacher.workdir``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

from kdjax import checks
from kdjax.errors import UserError

STRATEGIES = ("equal_epoch", "explicit")


@dataclasses.dataclass(frozen=True)
class Anchor:
  """Student epochs ``start+1 .. end`` (1-based, ``end - start`` epochs) distil from the teacher
  checkpoint of epoch ``teacher_epoch``."""

  start: int
  end: int
  teacher_epoch: int


def _epochs(kept_epochs: Sequence[int]) -> Tuple[int, ...]:
  try:
    epochs = tuple(sorted({int(e) for e in kept_epochs}))
  except (TypeError, ValueError):
    raise UserError(f"rco: kept_epochs must be integer epochs, got {kept_epochs!r}.") from None
  if not epochs or epochs[0] < 1:
    raise UserError(
      f"rco: kept_epochs must be >= 1 and non-empty (the teacher run's kept/ "
      f"checkpoints plus its final epoch), got {kept_epochs!r}."
    )
  return epochs


def equal_epoch_anchor_epochs(kept_epochs: Sequence[int], num_anchors: int) -> Tuple[int, ...]:
  """The ``num_anchors`` kept epochs nearest to ``E·i/N`` (i = 1..N; ties to the earlier one),
  increasing and distinct; the last is always ``E = max(kept_epochs)``."""
  epochs = _epochs(kept_epochs)
  checks.integer("rco: num_anchors", num_anchors, minimum=1, strict=True)
  if num_anchors > len(epochs):
    raise UserError(
      f"rco: {num_anchors} anchors need as many kept teacher checkpoints, but only "
      f"{list(epochs)} are kept: keep more (keep_every_epochs) or use fewer anchors."
    )
  last = epochs[-1]
  out = []
  for i in range(1, num_anchors + 1):
    target = last * i / num_anchors
    free = [e for e in epochs if not out or e > out[-1]]
    # leave enough later checkpoints for the remaining anchors
    room = num_anchors - i
    free = free[: len(free) - room] if room else free
    out.append(min(free, key=lambda e: (abs(e - target), e)))
  return tuple(out)


def rco_anchors(
  kept_epochs: Sequence[int],
  num_anchors: int,
  total_epochs: int,
  *,
  strategy: str = "equal_epoch",
  anchor_epochs: Optional[Sequence[int]] = None,
) -> Tuple[Anchor, ...]:
  """The RCO schedule: ``num_anchors`` :class:`Anchor` segments covering the student's
  ``total_epochs`` (module docstring).

  Args:
    kept_epochs: teacher epochs with a checkpoint (``kept/`` epochs and the final epoch).
    num_anchors: N >= 1 (N = 1 is plain KD from the last checkpoint).
    total_epochs: the student's epochs, >= N.
    strategy: ``'equal_epoch'`` or ``'explicit'`` (then ``anchor_epochs``, N of them).
  """
  epochs = _epochs(kept_epochs)
  if strategy not in STRATEGIES:
    raise UserError(f"rco: strategy must be one of {STRATEGIES}, got {strategy!r}.")
  if strategy == "explicit":
    if anchor_epochs is None:
      raise UserError("rco: strategy 'explicit' needs anchor_epochs (kept teacher epochs).")
    chosen = tuple(int(e) for e in anchor_epochs)
    if (
      len(chosen) != num_anchors
      or list(chosen) != sorted(set(chosen))
      or any(e not in epochs for e in chosen)
    ):
      raise UserError(
        f"rco: anchor_epochs must be {num_anchors} increasing kept epochs (kept: "
        f"{list(epochs)}), got {tuple(anchor_epochs)!r}."
      )
  else:
    if anchor_epochs is not None:
      raise UserError("rco: anchor_epochs is only for strategy 'explicit'.")
    chosen = equal_epoch_anchor_epochs(epochs, num_anchors)
  checks.integer(
    "rco: total_epochs (>= num_anchors)", total_epochs, minimum=len(chosen), strict=True
  )
  seg = total_epochs // len(chosen)
  out, start = [], 0
  for i, e in enumerate(chosen):
    end = total_epochs if i == len(chosen) - 1 else start + seg
    out.append(Anchor(start, end, e))
    start = end
  return tuple(out)


def teacher_epoch_at(anchors: Sequence[Anchor], epoch: int) -> int:
  """The teacher epoch the student distils from in its (1-based) ``epoch``."""
  for a in anchors:
    if a.start < epoch <= a.end:
      return a.teacher_epoch
  raise UserError(f"rco: epoch {epoch} is outside the schedule 1..{anchors[-1].end}.")
