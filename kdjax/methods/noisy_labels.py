"""Teacher-free noisy-soft-label term (Ojha et al., NeurIPS 2023, App. 11.2 control).

``noisy_labels(noise_variance, label_temperature, student_temperature, t2_scale, form, seed,
resample)``: the student is distilled from ``softmax((one_hot(y) + ε) / τ_l)``, ``ε ~ N(0, σ²)``
(:func:`kdjax.losses.noisy_labels.noisy_label_kd`); no teacher is loaded. The noise of an example
is a pure function of ``(seed, dataset index)`` (``resample=True``: and of the epoch), so runs are
reproducible and the soft label of an image does not depend on its batch.

Preset ``noisy_labels``: the paper's construction (σ² 0.2, τ_l 0.15) with the KL weights of its
R50 -> R18 setting (γ 0.5 CE + α 0.5; design decision: App. 11.2 does not restate them), student
temperature 1 (design decision).
"""

from __future__ import annotations

from kdjax.losses import noisy_labels as nl
from kdjax.methods.registry import register_term


@register_term("noisy_labels", needs_teacher=False)
def noisy_labels_term(
  s,
  t,
  batch,
  *,
  noise_variance: float = 0.2,
  label_temperature: float = 0.15,
  student_temperature: float = 1.0,
  t2_scale: bool = True,
  form: str = "cross_entropy",
  seed: int = 0,
  resample: bool = False,
):
  """Distillation from teacher-free soft labels ``softmax((one-hot + N(0, σ²)) / τ_l)`` (Ojha et
  al. App. 11.2; defaults σ² 0.2, τ_l 0.15, T_s 1, per-example noise fixed across epochs)."""
  del t
  noise = nl.label_noise(
    seed,
    batch.index,
    s.logits.shape[-1],
    variance=noise_variance,
    epoch=batch.epoch if resample else None,
  )
  return nl.noisy_label_kd(
    s.logits,
    batch.labels,
    noise,
    label_temperature=label_temperature,
    student_temperature=student_temperature,
    t2_scale=t2_scale,
    form=form,
  )


def noisy_labels_preset(
  *,
  ce_weight: float = 0.5,
  weight: float = 0.5,
  noise_variance: float = 0.2,
  label_temperature: float = 0.15,
  student_temperature: float = 1.0,
  seed: int = 0,
  resample: bool = False,
):
  """CE + the noisy-soft-label term (Ojha et al. App. 11.2 construction)."""
  return dict(
    name="noisy_labels",
    ce_weight=ce_weight,
    terms=dict(
      noisy_labels=dict(
        weight=weight,
        noise_variance=noise_variance,
        label_temperature=label_temperature,
        student_temperature=student_temperature,
        seed=seed,
        resample=resample,
      )
    ),
  )


PRESETS = {"noisy_labels": noisy_labels_preset}
