"""Tests for kdjax.calibration (Fan et al. 2024, methods.md §2: ECE, NLL, Brier, temperature scaling)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax as np_log_softmax
from scipy.special import softmax as np_softmax

from kdjax import calibration as cal

# Four predictions in known equal-width bins (M = 5, edges 0, .2, .4, .6, .8, 1):
#   conf .55 -> bin 2 (correct); .65 -> bin 3 (wrong); .70 -> bin 3 (correct); .90 -> bin 4 (correct)
HAND_PROBS = np.array([[0.55, 0.45], [0.65, 0.35], [0.30, 0.70], [0.10, 0.90]])
HAND_LABELS = np.array([0, 1, 1, 1])


def _sample_labels(rng, probs):
  u = rng.random((probs.shape[0], 1))
  return np.minimum((np.cumsum(probs, axis=1) < u).sum(axis=1), probs.shape[1] - 1)


def test_ece_hand_example():
  # bin2: |1 - .55| = .45 (n=1); bin3: |.5 - .675| = .175 (n=2); bin4: |1 - .9| = .1 (n=1)
  assert cal.ece(HAND_PROBS, HAND_LABELS, num_bins=5) == pytest.approx((0.45 + 2 * 0.175 + 0.1) / 4)
  assert cal.mce(HAND_PROBS, HAND_LABELS, num_bins=5) == pytest.approx(0.45)
  l2 = np.sqrt((0.45**2 + 2 * 0.175**2 + 0.1**2) / 4)
  assert cal.ece(HAND_PROBS, HAND_LABELS, num_bins=5, norm="l2") == pytest.approx(l2, rel=1e-5)
  # equal mass, 2 bins: {.55 c, .65 w} -> |.5 - .6| = .1; {.7 c, .9 c} -> |1 - .8| = .2
  assert cal.ece(HAND_PROBS, HAND_LABELS, num_bins=2, binning="equal_mass") == pytest.approx(0.15)
  # class-wise: per class the four gaps sum to 1.5 (each class) -> (1.5/4 + 1.5/4) / 2
  assert cal.classwise_ece(HAND_PROBS, HAND_LABELS, num_bins=5) == pytest.approx(0.375)
  # jax inputs work the same and return Python floats
  out = cal.ece(jnp.asarray(HAND_PROBS, jnp.float32), jnp.asarray(HAND_LABELS), num_bins=5)
  assert isinstance(out, float) and out == pytest.approx(0.225, abs=1e-6)


def test_ece_bin_boundary_convention():
  # Guo et al.: bins are (lower, upper]; conf exactly 0.6 belongs to (0.4, 0.6].
  probs = np.array([[0.6, 0.4]])
  d = cal.reliability_data(probs, np.array([0]), num_bins=5)
  assert d["bin_count"].tolist() == [0, 0, 1, 0, 0]


def test_reliability_data_hand_example():
  d = cal.reliability_data(HAND_PROBS, HAND_LABELS, num_bins=5)
  np.testing.assert_allclose(d["bin_edges"], np.linspace(0, 1, 6), atol=1e-7)
  assert d["bin_count"].tolist() == [0, 0, 1, 2, 1]
  np.testing.assert_allclose(d["bin_confidence"][2:], [0.55, 0.675, 0.9], atol=1e-6)
  np.testing.assert_allclose(d["bin_accuracy"][2:], [1.0, 0.5, 1.0], atol=1e-6)
  assert np.isnan(d["bin_accuracy"][:2]).all()


def test_perfectly_calibrated_data_has_small_ece():
  rng = np.random.default_rng(0)
  probs = np_softmax(2.0 * rng.standard_normal((100_000, 10)), axis=1)
  labels = _sample_labels(rng, probs)
  assert cal.ece(probs, labels) < 0.01
  assert cal.ece(probs, labels, binning="equal_mass") < 0.01
  assert cal.classwise_ece(probs, labels) < 0.01
  # an over-confident version of the same predictions is clearly miscalibrated
  sharp = np_softmax(3 * np.log(probs), axis=1)
  assert cal.ece(sharp, labels) > 0.05


@pytest.mark.parametrize("n,m", [(1000, 15), (1003, 15), (60, 7)])
def test_equal_mass_bins_have_equal_counts(n, m):
  rng = np.random.default_rng(n)
  probs = np_softmax(rng.standard_normal((n, 5)) * rng.exponential(size=(n, 1)), axis=1)
  labels = rng.integers(0, 5, n)
  d = cal.reliability_data(probs, labels, num_bins=m, binning="equal_mass")
  counts = d["bin_count"]
  assert counts.sum() == n
  assert set(counts.tolist()) <= {n // m, -(-n // m)}
  if n % m == 0:
    assert (counts == n // m).all()
  # edges are non-decreasing and bracket the bins' mean confidences
  e = d["bin_edges"]
  assert np.all(np.diff(e) >= 0)
  assert np.all(d["bin_confidence"] >= e[:-1] - 1e-6) and np.all(
    d["bin_confidence"] <= e[1:] + 1e-6
  )


def test_nll_and_brier_match_numpy():
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((257, 7)) * 3
  labels = rng.integers(0, 7, 257)
  ref_nll = -np.mean(np_log_softmax(logits, axis=1)[np.arange(257), labels])
  probs = np_softmax(logits, axis=1)
  ref_brier = np.mean(np.sum((probs - np.eye(7)[labels]) ** 2, axis=1))
  assert cal.nll(logits, labels) == pytest.approx(ref_nll, rel=1e-5)
  assert cal.nll(probs, labels, from_logits=False) == pytest.approx(ref_nll, rel=1e-5)
  assert cal.brier(probs, labels) == pytest.approx(ref_brier, rel=1e-5)
  assert cal.accuracy(logits, labels) == pytest.approx(np.mean(logits.argmax(1) == labels))


def test_calibration_report_keys_and_values():
  rng = np.random.default_rng(2)
  logits = rng.standard_normal((300, 10)) * 2
  labels = rng.integers(0, 10, 300)
  rep = cal.calibration_report(logits, labels, num_bins=10)
  probs = np_softmax(logits, axis=1)
  assert set(rep) == {
    "accuracy",
    "ece",
    "ece_equal_mass",
    "mce",
    "classwise_ece",
    "nll",
    "brier",
    "num_examples",
  }
  assert all(isinstance(v, float) for v in rep.values())
  assert rep["ece"] == pytest.approx(cal.ece(probs, labels, num_bins=10), abs=1e-6)
  assert rep["ece_equal_mass"] == pytest.approx(
    cal.ece(probs, labels, num_bins=10, binning="equal_mass"), abs=1e-6
  )
  assert rep["mce"] >= rep["ece"]


def test_kernels_are_jittable():
  f = jax.jit(lambda z, y: cal.top_label_calibration_error(jax.nn.softmax(z), y, num_bins=5))
  assert float(f(jnp.log(jnp.asarray(HAND_PROBS)), jnp.asarray(HAND_LABELS))) == pytest.approx(
    0.225, abs=1e-6
  )


def test_input_validation():
  with pytest.raises(ValueError):
    cal.ece(HAND_PROBS, HAND_LABELS, binning="quantile")
  with pytest.raises(ValueError):
    cal.ece(HAND_PROBS, HAND_LABELS.astype(float))
  with pytest.raises(ValueError):
    cal.ece(HAND_PROBS[0], HAND_LABELS)
  with pytest.raises(ValueError):
    cal.ece(HAND_PROBS, HAND_LABELS, num_bins=0)


def test_temperature_recovers_planted_temperature():
  rng = np.random.default_rng(3)
  z = rng.standard_normal((20_000, 10)) * 4
  t_star = 2.5
  labels = _sample_labels(rng, np_softmax(z / t_star, axis=1))
  t1 = cal.fit_temperature(z, labels)
  assert abs(t1 - t_star) / t_star < 0.05
  # deterministic and independent of the starting point
  assert cal.fit_temperature(z, labels) == t1
  assert cal.fit_temperature(jnp.asarray(z, jnp.float32), labels, init=0.3) == pytest.approx(
    t1, rel=1e-4
  )
  assert cal.fit_temperature(z, labels, init=50.0) == pytest.approx(t1, rel=1e-6)
  # the fitted temperature is a minimum of the NLL and improves calibration
  nll = lambda t: cal.temperature_nll(z, labels, t)  # noqa: E731
  assert nll(t1) <= min(nll(t1 * 1.01), nll(t1 / 1.01))
  scaled = np.asarray(cal.apply_temperature(z, t1))
  assert cal.ece(np_softmax(scaled, axis=1), labels) < cal.ece(np_softmax(z, axis=1), labels)
  np.testing.assert_array_equal(scaled.argmax(1), z.argmax(1))


def test_temperature_bounds_for_separable_data():
  # perfectly separated data: NLL decreases as T -> 0, so the fit stops at min_t
  z = np.array([[5.0, 0.0], [0.0, 5.0]] * 10)
  labels = np.array([0, 1] * 10)
  assert cal.fit_temperature(z, labels, min_t=0.5) == pytest.approx(0.5)
  assert cal.fit_temperature(z, labels) < 0.2  # stops where the float64 NLL underflows


def test_reliability_diagram_writes_png(tmp_path):
  rng = np.random.default_rng(4)
  probs = np_softmax(rng.standard_normal((500, 10)) * 2, axis=1)
  labels = rng.integers(0, 10, 500)
  for binning in ("equal_width", "equal_mass"):
    path = tmp_path / "sub" / f"rel_{binning}.png"
    out = cal.reliability_diagram(
      probs, labels, path, num_bins=10, binning=binning, title="teacher"
    )
    assert out == str(path) and os.path.getsize(path) > 1000
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
