"""The term registry: :class:`TermSpec`, :class:`ViewSpec`, :class:`BuildContext`, ``register_term``.

A leaf module (it imports nothing from kdjax). A *term* is a registered loss adapter::

  @register_term("kd")
  def kd_term(s, t, batch, *, temperature: float = 4.0):
    return losses.kd(s.logits, t.logits, temperature=temperature)

``fn(student: Outputs, teacher: Outputs, batch: Batch, *, connector=None, state=None, **hparams)``
returns per-example values ``(B,)`` (a stateful term: ``(values, new_state)``). Its keyword-only
arguments are the term's hyper-parameters, validated by name when a method is built.

What a term reads from the networks (``s.taps`` / ``t.taps``) is either static
(``student_taps=`` / ``teacher_taps=``) or a hyper-parameter resolved against the pair's models
(``taps=``: ``taps(student_shapes, teacher_shapes, **hparams) -> (student_keys, teacher_keys)``;
e.g. ``at(layers='all')`` -> ``stage1..N`` with N the pair's common stage count). The adapter then
sees exactly those taps, in that order, in ``s.taps`` / ``t.taps``.

A trainable *connector* is a plain ``flax.linen.Module`` made by ``connector(**hparams)``, called
by the adapter as ``connector(student_taps, teacher_taps, train=...)`` (tuples of arrays, in the
order of the term's taps) and initialised once on zeros of the pair's tap shapes, so its
parameter shapes follow from the taps (no shape inference by hand).

A term with explicit state (CRD's memory banks) gives ``init_state(ctx, rng, **hparams)``, where
``ctx`` is the run's :class:`BuildContext`.

A *monitor* (``monitor=True``) adds no loss: its ``fn`` returns a dict ``name -> (B,)`` of
per-example values, evaluated on stop-gradient outputs and logged as the batch-mean metrics
``<term key>/<name>`` (TTM's H(q) and D(p_hat || q), :mod:`kdjax.methods.monitors`). Its weight is
0 (the default) and it runs anyway; ``needs_teacher`` makes the step run the teacher for it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """Several views of every training example (SSKD's four rotations), declared by a term.

  ``make(images, rng, transform) -> (V·B, ...)`` builds the views from the raw batch, in the view
  layout (row ``b·V + v``, ``v = 0`` the normal view) and applies ``transform(x, rng)``, the
  dataset's train augmentation without its flip (the view maker owns the flip). The train step
  runs student and teacher on all ``V·B`` rows (BatchNorm sees them all, as in SSKD); the CE and
  every term without views see only the normal rows, the view-aware terms see all of them.
  """

  name: str
  num_views: int
  make: Callable


@dataclasses.dataclass(frozen=True)
class BuildContext:
  """What a term's ``init_state`` may need from the run, passed explicitly.

  ``num_examples``: the dataset's index space (CRD's memory banks); ``teacher_variables``: the
  loaded teacher's variables (a list for an ensemble; OH's margins from its BatchNorms), or None;
  ``student_shapes`` / ``teacher_shapes``: the shapes of the term's own taps (key -> shape, in
  the order of the term's taps; ``Method.init_states`` restricts them per term).
  """

  num_examples: int = 0
  teacher_variables: Any = None
  student_shapes: Mapping[str, Tuple[int, ...]] = dataclasses.field(default_factory=dict)
  teacher_shapes: Mapping[str, Tuple[int, ...]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TermSpec:
  """A registered loss adapter (see the module docstring)."""

  name: str
  fn: Callable
  student_taps: Tuple[str, ...] = ()
  teacher_taps: Tuple[str, ...] = ()
  taps: Optional[Callable] = None  # (s_shapes, t_shapes, **hparams) -> (s_keys, t_keys)
  needs_teacher: bool = True
  connector: Optional[Callable] = None  # (**hparams) -> nn.Module
  init_state: Optional[Callable] = None  # (ctx: BuildContext, rng, **hparams) -> pytree
  doc: str = ""
  views: Optional[ViewSpec] = None
  monitor: bool = False  # metrics only, no loss (see the module docstring)

  @property
  def static_taps(self) -> bool:
    """Whether the taps are known without the models (no ``taps`` function)."""
    return self.taps is None

  def resolve_taps(
    self, hparams: Mapping, student_shapes: Optional[Mapping], teacher_shapes: Optional[Mapping]
  ) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """The ``(student, teacher)`` tap keys this term reads for these models and hyper-parameters."""
    if self.taps is None:
      return self.student_taps, self.teacher_taps
    s, t = self.taps(dict(student_shapes or {}), dict(teacher_shapes or {}), **hparams)
    return tuple(s), tuple(t)


_TERMS: Dict[str, TermSpec] = {}


def register_term(
  name: str,
  *,
  student_taps=(),
  teacher_taps=(),
  taps: Optional[Callable] = None,
  needs_teacher: bool = True,
  connector: Optional[Callable] = None,
  init_state: Optional[Callable] = None,
  views: Optional[ViewSpec] = None,
  monitor: bool = False,
):
  """Decorator registering a loss adapter as the method term ``name`` (see the module docstring).
  Give either static ``student_taps`` / ``teacher_taps`` or a ``taps`` function."""
  if taps is not None and (student_taps or teacher_taps):
    raise ValueError(
      f"term {name!r}: give static student_taps/teacher_taps or a taps function, not both."
    )

  def deco(fn):
    if name in _TERMS:
      raise ValueError(f"method term {name!r} registered twice")
    _TERMS[name] = TermSpec(
      name,
      fn,
      tuple(student_taps),
      tuple(teacher_taps),
      taps,
      needs_teacher,
      connector,
      init_state,
      (fn.__doc__ or "").strip(),
      views,
      monitor,
    )
    return fn

  return deco


def get_term(name: str) -> Optional[TermSpec]:
  return _TERMS.get(name)


def term_names():
  return sorted(_TERMS)
