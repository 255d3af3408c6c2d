"""The one set of number validators (issue 11, item 7): every hyper-parameter check in kdjax.

Each check returns the value (a Python float/int for concrete numbers) and raises
:class:`kdjax.errors.UserError` (a ``ValueError``) with one message naming the parameter, the
allowed range and the value given. A traced value (a JAX tracer: a hyper-parameter swept under
``jax.vmap`` / ``jit``) cannot be inspected and is returned unchanged, unchecked. Booleans and
strings are refused where a number is expected (``True`` is an ``int`` in Python, never a
temperature; ``"4"`` in a config is a typo, not a number).

  positive(name, v)            finite, > 0
  nonnegative(name, v)         finite, >= 0
  finite(name, v)              finite
  in_range(name, v, lo, hi)    finite, lo <= v <= hi (``open_lo`` / ``open_hi`` for strict)
  integer(name, v, minimum=, maximum=, strict=)
                               an integral value in [minimum, maximum] (returned as int);
                               ``strict``: an int by type (``3.0`` refused)
"""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import numpy as np

from kdjax.errors import UserError


def _traced(value) -> bool:
  return isinstance(value, jax.core.Tracer)


def _refuse_non_numbers(name: str, value, what: str) -> None:
  if isinstance(value, (bool, np.bool_)):
    raise UserError(f"{name} must be {what}, got the bool {value!r}.")
  if isinstance(value, (str, bytes)):
    raise UserError(f"{name} must be {what}, got the string {value!r}.")


def _as_float(name: str, value) -> float:
  _refuse_non_numbers(name, value, "a number")
  try:
    v = float(value)
  except (TypeError, ValueError) as e:
    raise UserError(f"{name} must be a real number, got {value!r}.") from e
  if not math.isfinite(v):
    raise UserError(f"{name} must be a finite number, got {value!r}.")
  return v


def finite(name: str, value) -> Any:
  """``value`` as a float if finite (tracers pass unchecked)."""
  if _traced(value):
    return value
  return _as_float(name, value)


def positive(name: str, value) -> Any:
  """``value`` as a float if finite and > 0 (tracers pass unchecked)."""
  if _traced(value):
    return value
  v = _as_float(name, value)
  if not v > 0:
    raise UserError(f"{name} must be a finite number > 0, got {value!r}.")
  return v


def nonnegative(name: str, value) -> Any:
  """``value`` as a float if finite and >= 0 (tracers pass unchecked)."""
  if _traced(value):
    return value
  v = _as_float(name, value)
  if not v >= 0:
    raise UserError(f"{name} must be a finite number >= 0, got {value!r}.")
  return v


def in_range(
  name: str,
  value,
  lo: Optional[float] = None,
  hi: Optional[float] = None,
  *,
  open_lo: bool = False,
  open_hi: bool = False,
) -> Any:
  """``value`` as a float if finite and within ``[lo, hi]`` (``(`` / ``)`` where open)."""
  if _traced(value):
    return value
  v = _as_float(name, value)
  bad_lo = lo is not None and (v <= lo if open_lo else v < lo)
  bad_hi = hi is not None and (v >= hi if open_hi else v > hi)
  if bad_lo or bad_hi:
    left = "-inf" if lo is None else f"{lo:g}"
    right = "inf" if hi is None else f"{hi:g}"
    interval = ("(" if open_lo or lo is None else "[") + f"{left}, {right}"
    interval += ")" if open_hi or hi is None else "]"
    raise UserError(f"{name} must be in {interval}, got {value!r}.")
  return v


def _is_int(value) -> bool:
  """A Python/NumPy integer or a 0-d array of integer dtype (not a bool)."""
  if isinstance(value, (int, np.integer)):
    return True
  dtype = getattr(value, "dtype", None)
  return dtype is not None and np.issubdtype(dtype, np.integer) and np.ndim(value) == 0


def integer(
  name: str,
  value,
  *,
  minimum: Optional[int] = None,
  maximum: Optional[int] = None,
  strict: bool = False,
) -> Any:
  """``value`` as an int if integral (``3`` or ``3.0``) and within ``[minimum, maximum]``.

  ``strict`` refuses floats, even integral ones: for counts and indices that must be ints by type
  (a Python or NumPy integer), e.g. where ``2.0`` would be a mistaken config value."""
  if _traced(value):
    return value
  _refuse_non_numbers(name, value, "an integer")
  if _is_int(value):
    v = int(value)  # exact, also beyond 2**53
  elif strict:
    raise UserError(f"{name} must be an integer (int), got {value!r}.")
  else:
    try:
      f = float(value)
    except (TypeError, ValueError) as e:
      raise UserError(f"{name} must be an integer, got {value!r}.") from e
    if not math.isfinite(f) or f != int(f):
      raise UserError(f"{name} must be an integer, got {value!r}.")
    v = int(f)
  if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
    if maximum is None:
      raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if minimum is None:
      raise UserError(f"{name} must be an integer <= {maximum}, got {value!r}.")
    raise UserError(f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}.")
  return v
