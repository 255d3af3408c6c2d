"""Deprecated: the pre-split API of ``kdjax.methods`` (use :mod:`kdjax.methods.registry` and
:mod:`kdjax.methods.core`). Kept so that old imports work; ``register_term`` here takes the old
``init_state(num_examples, student_shapes, teacher_shapes, rng, **hparams)`` signature."""
from __future__ import annotations

from kdjax.methods import registry as _registry
from kdjax.methods.core import (DEFAULT_TRAINABLE, TRAINABLE_GROUPS, Batch, Method,  # noqa: F401
                                Outputs, Stage, Term, build_method, parse_trainable)
from kdjax.methods.registry import _TERMS, TermSpec, ViewSpec, term_names  # noqa: F401


def register_term(name, *, student_taps=(), teacher_taps=(), needs_teacher=True,
                  init_state=None, views=None):
  """The old decorator (static taps, no connector): an ``init_state(num_examples, s_shapes,
  t_shapes, rng, **hparams)`` is adapted to ``init_state(ctx, rng, **hparams)``."""
  adapted = None
  if init_state is not None:
    def adapted(ctx, rng, **hp):
      return init_state(ctx.num_examples, ctx.student_shapes, ctx.teacher_shapes, rng, **hp)
  return _registry.register_term(name, student_taps=student_taps, teacher_taps=teacher_taps,
                                 needs_teacher=needs_teacher, init_state=adapted, views=views)
