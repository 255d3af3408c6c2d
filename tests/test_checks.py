"""kdjax.checks: the one set of number validators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import checks, losses
from kdjax.data import augment, batching
from kdjax.losses import online
from kdjax.errors import UserError


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "x", "4", b"4", None])
def test_positive_refuses(bad):
  with pytest.raises(UserError, match="temperature"):
    checks.positive("temperature", bad)


def test_positive_accepts_and_converts():
  assert checks.positive("t", 4) == 4.0 and isinstance(checks.positive("t", 4), float)
  assert checks.positive("t", jnp.float32(2.5)) == 2.5


@pytest.mark.parametrize("bad", [-1e-9, float("nan"), -float("inf"), False, np.True_])
def test_nonnegative_refuses(bad):
  with pytest.raises(UserError, match=r"w must"):
    checks.nonnegative("w", bad)


def test_nonnegative_accepts_zero():
  assert checks.nonnegative("w", 0) == 0.0


def test_in_range_closed_and_open():
  assert checks.in_range("p", 0.0, 0, 1) == 0.0
  assert checks.in_range("p", 1.0, 0, 1) == 1.0
  with pytest.raises(UserError, match=r"\(0, 1\]"):
    checks.in_range("p", 0.0, 0, 1, open_lo=True)
  with pytest.raises(UserError, match=r"\[0, 1\)"):
    checks.in_range("p", 1.0, 0, 1, open_hi=True)
  with pytest.raises(UserError, match=r"\[0, inf\)"):
    checks.in_range("p", -2.0, 0)


def test_integer():
  assert checks.integer("n", 3.0, minimum=1) == 3 and isinstance(checks.integer("n", 3.0), int)
  for bad in (2.5, True, "a", "3", float("inf")):
    with pytest.raises(UserError, match="n must be an integer"):
      checks.integer("n", bad)
  with pytest.raises(UserError, match=">= 1"):
    checks.integer("n", 0, minimum=1)


def test_tracers_pass_unchecked():
  # Hyper-parameters swept under vmap/jit cannot be inspected; they are returned as they are.
  out = jax.vmap(lambda t: checks.positive("t", t) * 2.0)(jnp.array([-1.0, 2.0]))
  assert out.tolist() == [-2.0, 4.0]
  jax.jit(lambda t: checks.in_range("p", t, 0, 1) + checks.integer("n", t))(jnp.float32(5.0))


def test_numeric_strings_are_refused():
  # float("4") is 4.0: a quoted number in a config must not pass as a number.
  for check in (checks.finite, checks.positive, checks.nonnegative, checks.in_range):
    with pytest.raises(UserError, match=r"t must be a number, got the string '4'"):
      check("t", "4")
  with pytest.raises(UserError, match=r"n must be an integer, got the string '4'"):
    checks.integer("n", "4")


def test_integer_strict_and_maximum():
  assert checks.integer("k", np.int64(3), strict=True) == 3
  assert checks.integer("k", jnp.int32(3), strict=True) == 3
  assert checks.integer("k", 2**60 + 1) == 2**60 + 1  # exact, no float round trip
  for bad in (2.0, jnp.float32(2.0)):
    with pytest.raises(UserError, match=r"k must be an integer \(int\)"):
      checks.integer("k", bad, strict=True)
  assert checks.integer("k", 4, minimum=0, maximum=4) == 4
  with pytest.raises(UserError, match=r"k must be an integer in \[0, 4\], got 5"):
    checks.integer("k", 5, minimum=0, maximum=4)
  with pytest.raises(UserError, match=r"k must be an integer <= 4, got 5"):
    checks.integer("k", 5, maximum=4)


_Z, _Y, _F = jnp.zeros((2, 5)), jnp.zeros((2,), jnp.int32), jnp.ones((2, 4, 4, 3))


@pytest.mark.parametrize(
  "call, message",
  [
    (
      lambda: losses.kd(_Z, _Z, temperature=0.0),
      r"temperature must be a finite number > 0, got 0.0",
    ),
    (
      lambda: online.dml([_Z, _Z], _Y, weight=-1.0),
      r"weight must be a finite number >= 0, got -1.0",
    ),
    (lambda: losses.at([_F], [_F], p="2"), r"p must be a number, got the string '2'"),
    (lambda: losses.listmle(_Z, _Z, top_k=2.0), r"top_k \(None or 1..num_classes=5\) must be an"),
    (lambda: losses.crd_init_memory(None, 2.5, 4), r"num_data must be an integer, got 2.5"),
    (lambda: batching.batch_indices(10, 0, seed=0, epoch=0), r"batch_size must be an integer >= 1"),
    (
      lambda: augment.jitter_magnitudes((0, 0, 0, 0.6)),
      r"dataset.color_jitter.hue \(a shift of the hue circle\) must be in \[0, 0.5\], got 0.6",
    ),
  ],
)
def test_library_sites_raise_the_uniform_messages(call, message):
  # The private validators are gone: every site speaks kdjax.checks' one message format.
  with pytest.raises(UserError, match=message):
    call()
