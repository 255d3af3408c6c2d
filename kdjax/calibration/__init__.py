"""kdjax calibration: ECE/MCE/class-wise ECE, NLL, Brier, temperature scaling, reliability diagrams.

Fan et al. (ICML 2024), methods.md §2: teacher calibration (ECE, after Guo et al. 2017) versus
student accuracy. Public API::

  ece(probs, labels, *, num_bins=15, binning='equal_width'|'equal_mass', norm='l1'|'l2'|'max')
  mce, classwise_ece, nll, brier, accuracy, reliability_data, calibration_report(logits, labels)
  fit_temperature(logits, labels) -> T,  apply_temperature(logits, T)
  reliability_diagram(probs, labels, path)
"""

from kdjax.calibration.metrics import (
  accuracy,
  brier,
  calibration_report,
  classwise_calibration_error,
  classwise_ece,
  ece,
  mce,
  nll,
  probs_from_logits,
  reliability_data,
  top_label_calibration_error,
)
from kdjax.calibration.plots import reliability_diagram
from kdjax.calibration.temperature import apply_temperature, fit_temperature, temperature_nll

__all__ = [
  "accuracy",
  "brier",
  "calibration_report",
  "classwise_calibration_error",
  "classwise_ece",
  "ece",
  "mce",
  "nll",
  "probs_from_logits",
  "reliability_data",
  "top_label_calibration_error",
  "reliability_diagram",
  "apply_temperature",
  "fit_temperature",
  "temperature_nll",
]
