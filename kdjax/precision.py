"""Mixed-precision policies: ``'float32'`` | ``'bfloat16'`` compute, set for student and teacher
separately.

A policy fixes the *compute* dtype of a model's convolutions, dense layers and BatchNorm outputs
(Flax ``dtype=``); under every policy

* parameters (the optimiser's master weights) stay float32 (``param_dtype=float32`` in
  ``kdjax.models.cifar.common``), so updates are applied in float32;
* BatchNorm batch statistics are reduced in float32 (Flax ``force_float32_reductions``) and the
  running statistics are stored in float32;
* global average pooling accumulates in float32 (``common.global_avg_pool``);
* the logits and taps a model returns are cast to float32 before any loss sees them
  (:func:`outputs_f32`, called by the train step), so every loss, softmax and batch mean is a
  float32 reduction.

bfloat16 halves activation memory and, on GPUs/TPUs (and CPUs with bf16 matrix units), runs the
convolutions on the fast units; it keeps float32's exponent range, so no loss scaling is needed.

Config (proposed): ``config.precision.student`` / ``config.precision.teacher``, each a policy name;
``model_kwargs(policy)`` gives the constructor arguments for ``kdjax.models.get``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp

from kdjax import models
from kdjax.errors import UserError

POLICIES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Policy:
  """``compute_dtype`` for activations/matmuls; parameters and reductions stay float32."""

  name: str
  compute_dtype: Any
  param_dtype: Any = jnp.float32
  output_dtype: Any = jnp.float32

  @property
  def is_mixed(self) -> bool:
    return self.compute_dtype != jnp.float32


_POLICIES = {
  "float32": Policy("float32", jnp.float32),
  "bfloat16": Policy("bfloat16", jnp.bfloat16),
}


def get_policy(name) -> Policy:
  """The :class:`Policy` called ``name`` (a Policy is returned as is)."""
  if isinstance(name, Policy):
    return name
  if name not in _POLICIES:
    raise UserError(
      f"Unknown precision policy {name!r}: use one of {', '.join(POLICIES)} "
      "(e.g. config.precision.student = 'bfloat16')."
    )
  return _POLICIES[name]


def model_kwargs(policy) -> Dict[str, Any]:
  """Constructor keywords for ``kdjax.models.get`` under ``policy``: ``{}`` for float32 (the
  models' default), ``{'dtype': jnp.bfloat16}`` for bfloat16."""
  p = get_policy(policy)
  return {"dtype": p.compute_dtype} if p.is_mixed else {}


def build_model(name: str, *, num_classes: int, policy="float32", **kwargs):
  """``kdjax.models.get(name, ...)`` with the policy's compute dtype; a model without dtype
  plumbing raises a UserError naming the fix under a mixed policy."""
  extra = model_kwargs(policy)
  try:
    return models.get(name, num_classes=num_classes, **extra, **kwargs)
  except TypeError as e:
    if extra and "dtype" in str(e):
      raise UserError(
        f"Model {name!r} has no compute-dtype option, so it cannot run under the "
        f"{get_policy(policy).name!r} policy: use precision 'float32' for it."
      ) from e
    raise


def _up(a):
  """float16/bfloat16 -> float32; float32/float64 (and non-floats) unchanged."""
  if jnp.issubdtype(a.dtype, jnp.floating) and jnp.dtype(a.dtype).itemsize < 4:
    return a.astype(jnp.float32)
  return a


def outputs_f32(logits, taps=None) -> Tuple[jax.Array, Any]:
  """Casts a model's half-precision logits (and taps, a pytree) to float32 for the losses; a
  no-op for float32 (and float64) models (XLA fuses the cast into the consumer otherwise)."""
  cast = _up
  return cast(logits), (jax.tree_util.tree_map(cast, taps) if taps is not None else None)


def describe(student, teacher=None) -> str:
  s = get_policy(student).name
  return s if teacher is None else f"student {s}, teacher {get_policy(teacher).name}"
