"""The training state pytree (everything needed to resume bit-for-bit) and its one builder,
:func:`init_train_state`."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp

from kdjax.methods import BuildContext, Method


@flax.struct.dataclass
class TrainState:
  """Trainable parameters, BN statistics, optimiser state, step and RNG.

  ``params`` is ``{'student': ..., 'connectors': ...}``: exactly what is optimised. The teacher is
  never part of the state (it is loaded from its own checkpoint and never modified).
  ``batch_stats`` mirrors it for BatchNorm running statistics. ``rng`` is the run's base key; the
  per-step key is ``fold_in(rng, step)``, so the data position and the randomness both follow from
  ``step`` on resume.
  """

  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jnp.ndarray
  method_state: Any = None


def create(params, batch_stats, tx, rng, method_state=None) -> TrainState:
  """``params``/``batch_stats``: ``{'student': ..., 'connectors': {term key: ...}}``."""
  params = {"connectors": {}, **params}
  batch_stats = {"connectors": {}, **batch_stats}
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    rng=rng,
    method_state={} if method_state is None else method_state,
  )


def tap_shapes(module, variables, x):
  """key -> shape of the taps ``module.apply(variables, x, train=False)`` returns (abstractly)."""
  _, taps = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, x)
  return {k: tuple(v.shape) for k, v in taps.items()}


@dataclasses.dataclass
class InitResult:
  """What :func:`init_train_state` builds. ``method`` is the input method bound to the pair
  (its taps resolved), to pass to ``make_steps``; ``connectors`` the connector modules (term key
  -> ``nn.Module``); ``params`` / ``batch_stats`` ``{'student': ..., 'connectors': ...}``;
  ``state`` the :class:`TrainState` when a ``tx`` was given (else :meth:`create` makes it)."""

  method: Any
  student_variables: Any
  params: Any
  batch_stats: Any
  method_state: Any
  connectors: Dict[str, Any]
  student_shapes: Dict[str, Tuple[int, ...]]
  teacher_shapes: Optional[Dict[str, Tuple[int, ...]]]
  rng: jnp.ndarray
  state: Optional[TrainState] = None

  def create(self, tx) -> TrainState:
    """A fresh :class:`TrainState` (step 0) of these parameters with optimiser ``tx``."""
    return create(self.params, self.batch_stats, tx, self.rng, self.method_state)


def _teacher_parts(teacher):
  if teacher is None:
    return None, None
  if isinstance(teacher, tuple):
    return teacher
  return teacher.module, teacher.variables


def init_train_state(
  student,
  teacher,
  method: Method,
  example_input,
  rng,
  *,
  tx=None,
  num_examples: int = 0,
  student_variables=None,
) -> InitResult:
  """Builds everything a run trains, in one place (the loop, the benches and the tests call it).

  Tap shapes of both models on ``example_input`` (e.g. zeros of ``(1, H, W, C)``) -> the method
  bound to them (taps resolved and checked, :meth:`~kdjax.methods.Method.bind`) -> connectors
  ``init``-ed on zeros of their taps -> the explicit term states (:class:`BuildContext` with
  ``num_examples`` and the teacher's variables) -> the state.

  Args:
    student: the student linen module.
    teacher: None, a loaded teacher (``.module``, ``.variables``) or a ``(module, variables)``
      pair (an ensemble: ``variables`` a list).
    method: a :class:`~kdjax.methods.Method` (``build_method(config.method)``).
    example_input: an input batch of the right shape (values unused).
    rng: the run's key, split into (student init, connectors, run) as the trainer always did.
    tx: optional optax transformation: if given, ``result.state`` is the :class:`TrainState`.
    num_examples: the dataset's index space (CRD's memory banks).
    student_variables: use these instead of ``student.init`` (e.g. a pretrained SFTN teacher).
  """
  k_init, k_conn, k_run = jax.random.split(rng, 3)
  if student_variables is None:
    student_variables = student.init(k_init, example_input, train=False)
  t_module, t_vars = _teacher_parts(teacher)
  s_shapes = tap_shapes(student, student_variables, example_input)
  t_shapes = tap_shapes(t_module, t_vars, example_input) if t_module is not None else None
  method = method.bind(s_shapes, t_shapes)
  modules, conn_params, conn_stats = method.init_connectors(s_shapes, t_shapes, k_conn)
  params = {"student": student_variables["params"], "connectors": conn_params}
  batch_stats = {"student": student_variables.get("batch_stats", {}), "connectors": conn_stats}
  ctx = BuildContext(
    num_examples=int(num_examples),
    teacher_variables=t_vars,
    student_shapes=s_shapes,
    teacher_shapes=t_shapes or {},
  )
  method_state = method.init_states(ctx, jax.random.fold_in(k_conn, 999))
  out = InitResult(
    method, student_variables, params, batch_stats, method_state, modules, s_shapes, t_shapes, k_run
  )
  if tx is not None:
    out.state = out.create(tx)
  return out
