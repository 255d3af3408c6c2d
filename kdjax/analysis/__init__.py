"""kdjax analysis: probes of what knowledge gets distilled (Ojha et al., NeurIPS 2023; methods.md §6).

Pure functions over model outputs or kdjax model apply-functions::

  top1_agreement, kl_divergence, js_divergence, per_class_agreement      (agreement.py)
  linear_cka(x, y, *, unbiased=False), CKAAccumulator                     (cka.py)
  gradcam(model, variables, x, *, stage, class_idx=None), cam_agreement,
  cam_preference                                                          (gradcam.py)
  fgsm, ifgsm, pgd, attack_sweep, transfer_success                        (adversarial.py)
  color_jitter, prediction_consistency, transform_consistency             (invariance.py)
  per_group_accuracy, worst_group_accuracy, accuracy_gap,
  group_fairness_report                                                   (fairness.py)

The report (:func:`analyze`, :func:`base_config`) runs the probes of :mod:`kdjax.analysis.probes`
(one module each, resolved by ``type=`` like big_vision's evaluators).

Calibration transfer (teacher vs. student ECE, methods.md §2) uses :mod:`kdjax.calibration`;
``ece`` and ``calibration_report`` are re-exported here for convenience.
"""

from kdjax.analysis.adversarial import attack_sweep, fgsm, ifgsm, logits_fn, pgd, transfer_success
from kdjax.analysis.agreement import (
  js_divergence,
  kl_divergence,
  per_class_agreement,
  top1_agreement,
)
from kdjax.analysis.cka import CKAAccumulator, gram_linear, hsic_biased, hsic_unbiased, linear_cka
from kdjax.analysis.fairness import (
  accuracy_gap,
  group_fairness_report,
  per_group_accuracy,
  worst_group_accuracy,
)
from kdjax.analysis.gradcam import cam_agreement, cam_preference, gradcam, stage_features
from kdjax.analysis.invariance import (
  adjust_brightness,
  adjust_contrast,
  adjust_hue,
  adjust_saturation,
  color_jitter,
  prediction_consistency,
  rgb_to_grayscale,
  transform_consistency,
)
from kdjax.calibration import calibration_report, ece

__all__ = [
  "top1_agreement",
  "kl_divergence",
  "js_divergence",
  "per_class_agreement",
  "linear_cka",
  "CKAAccumulator",
  "gram_linear",
  "hsic_biased",
  "hsic_unbiased",
  "gradcam",
  "cam_agreement",
  "cam_preference",
  "stage_features",
  "fgsm",
  "ifgsm",
  "pgd",
  "attack_sweep",
  "transfer_success",
  "logits_fn",
  "color_jitter",
  "adjust_brightness",
  "adjust_contrast",
  "adjust_saturation",
  "adjust_hue",
  "rgb_to_grayscale",
  "prediction_consistency",
  "transform_consistency",
  "per_group_accuracy",
  "worst_group_accuracy",
  "accuracy_gap",
  "group_fairness_report",
  "ece",
  "calibration_report",
]

# What-gets-distilled report over saved runs and the shifted / cue-conflict sets.
from kdjax.analysis.cues import (  # noqa: E402
  CUE_SETS,
  build_shifted_sets,
  cue_conflict,
  load_tfds_set,
)
from kdjax.analysis.report import ALL_PROBES, analyze, base_config  # noqa: E402

__all__ += [
  "analyze",
  "base_config",
  "ALL_PROBES",
  "CUE_SETS",
  "build_shifted_sets",
  "cue_conflict",
  "load_tfds_set",
]
