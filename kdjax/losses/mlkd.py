r"""MLKD: multi-level logit distillation (instance, batch and class level), per example.

Jin, Wang, Lin, "Multi-Level Logit Distillation", CVPR 2023 (code: Jin-Ying/
Multi-Level-Logit-Distillation, built on mdistiller: ``mdistiller/distillers/KD_ours.py``,
``tools/train_ours.py``, trainer ``ours`` = ``AugTrainer``; the same loss is
sunshangquan/logit-standardization-KD ``mdistiller/distillers/MLKD.py``).

Every example is seen twice, a *weak* view (random crop + flip) and a *strong* one (crop + flip
+ RandAugment(2, 10) + Cutout); ``w`` denotes the weak and ``s`` the strong view's logits,
``z`` the student's and ``v`` the teacher's. With ``p^T = softmax(·/T)`` over the classes and
the temperature set ``𝒯 = (4, 3, 5, 2, 6)`` (``cfg.KD.TEMPERATURE`` 4, then the hard-coded 3, 5,
2, 6; the paper's "prediction augmentation"):

* **instance level** (``KD_T`` the batch mean of ``T² · KL(p^T(v) ‖ p^T(z))``, T² included):

  ``L_ins = m_B · Σ_{T∈𝒯} KD_T(z_w, v_w) + Σ_{T∈𝒯} KD_T(z_{s|w}, v_{s|w})``,

  where the released code computes the second sum's T = 2 and T = 6 parts on the **weak** view
  (``kd_loss(logits_student_weak, ...)`` inside ``loss_kd_strong``; ``strong_on_weak``
  reproduces it, ``strong_on_weak=()`` is the paper's all-strong sum);
* **batch level** (input correlation, the ``B × B`` prediction Gram ``G = p pᵀ``; no T²):

  ``L_batch = m_B · Σ_{T∈𝒯} ‖G^T(v_w) − G^T(z_w)‖²_F / B``;
* **class level** (category correlation, the ``C × C`` matrix ``M = pᵀ p``; no T²):

  ``L_class = m_C · Σ_{T∈𝒯} ‖M^T(v_w) − M^T(z_w)‖²_F / C``.

The released ``forward_train`` returns ``loss_kd = L_ins``, ``loss_cc = L_class`` and
``loss_bc = L_batch`` (the strong-view class/batch sums it computes are never used), each
multiplied by ``KD_WEIGHT`` (0.9), plus ``0.1 · (CE(z_w) + CE(z_s))``.

**Confidence masking as released.** ``mask = conf ≤ median(conf)`` with ``conf_b = max_k
softmax(v_w)_bk`` (T = 1, ``np.percentile(·, 50)``, linear interpolation) and
``class_conf_mask = c ≤ median(c)`` with ``c_k = Σ_b softmax(v_w)_bk``. Because ``kd_loss``,
``bc_loss`` and ``cc_loss`` are called with ``reduce=True`` (the ``reduce=False`` lines are
commented out), ``(loss * mask).mean()`` multiplies a *scalar* loss by the **fraction**
``m_B = mean(mask)`` (``m_C = mean(class_conf_mask)``): about 1/2 (exactly 1/2 for an even
batch of distinct confidences), never a per-example selection. :func:`confidence_fractions`
computes these constants (no gradient: they depend on the teacher only).

**Reduction convention.** Every function returns ``(B,)`` whose **batch mean** is the reference
scalar: the instance terms are true per-example values (``m_B`` a batch constant); the batch-
and class-level losses do not decompose over examples, so their batch value is broadcast to
``(B,)`` (as :mod:`kdjax.losses.itrd` does). ``B`` is the number of examples (one view each).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import jax
import jax.numpy as jnp

from kdjax import checks
from kdjax.errors import UserError
from kdjax.losses.logits import kd

__all__ = [
  "DEFAULT_TEMPERATURES",
  "DEFAULT_STRONG_ON_WEAK",
  "confidence_fractions",
  "batch_correlation",
  "class_correlation",
  "mlkd_instance",
  "mlkd_batch",
  "mlkd_class",
]

# cfg.KD.TEMPERATURE (4, mdistiller's default; no MLKD yaml overrides it), then 3, 5, 2, 6.
DEFAULT_TEMPERATURES: Tuple[float, ...] = (4.0, 3.0, 5.0, 2.0, 6.0)
# The temperatures whose "strong" instance term the released code takes on the weak view.
DEFAULT_STRONG_ON_WEAK: Tuple[float, ...] = (2.0, 6.0)


def check_temperatures(name: str, temperatures) -> Tuple[float, ...]:
  """``temperatures`` as a non-empty tuple of finite positive floats (UserError otherwise)."""
  if isinstance(temperatures, (int, float)) and not isinstance(temperatures, bool):
    temperatures = (temperatures,)
  try:
    temps = tuple(temperatures)
  except TypeError:
    temps = None
  if not temps:
    raise UserError(
      f"{name} must be a non-empty sequence of temperatures > 0, got {temperatures!r}."
    )
  return tuple(checks.positive(f"{name}[{i}]", t) for i, t in enumerate(temps))


def _probs(logits, temperature):
  z = jnp.asarray(logits, jnp.result_type(logits, float))
  return jax.nn.softmax(z / temperature, axis=-1)


def confidence_fractions(teacher_logits: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """The released code's mask *fractions* ``(m_B, m_C)`` from the teacher's weak-view logits.

  ``m_B = mean_b [conf_b ≤ median(conf)]``, ``conf_b = max_k softmax(v)_bk``;
  ``m_C = mean_k [c_k ≤ median(c)]``, ``c_k = Σ_b softmax(v)_bk`` (T = 1; median = 50th
  percentile with linear interpolation, as ``np.percentile``). Gradient-free scalars.
  """
  p = jax.lax.stop_gradient(_probs(teacher_logits, 1.0))
  conf = jnp.max(p, axis=-1)
  m_b = jnp.mean((conf <= jnp.percentile(conf, 50.0)).astype(p.dtype))
  col = jnp.sum(p, axis=0)
  m_c = jnp.mean((col <= jnp.percentile(col, 50.0)).astype(p.dtype))
  return m_b, m_c


def batch_correlation(student_logits, teacher_logits, *, temperature: float) -> jax.Array:
  """``‖G_t − G_s‖²_F / B`` with ``G = p pᵀ`` (``B × B``), ``p = softmax(z / T)`` (the reference's
  ``bc_loss``, no T²). A batch scalar."""
  ps, pt = _probs(student_logits, temperature), _probs(teacher_logits, temperature)
  d = pt @ pt.T - ps @ ps.T
  return jnp.sum(d * d) / ps.shape[0]


def class_correlation(student_logits, teacher_logits, *, temperature: float) -> jax.Array:
  """``‖M_t − M_s‖²_F / C`` with ``M = pᵀ p`` (``C × C``), ``p = softmax(z / T)`` (the reference's
  ``cc_loss``, no T²). A batch scalar."""
  ps, pt = _probs(student_logits, temperature), _probs(teacher_logits, temperature)
  d = pt.T @ pt - ps.T @ ps
  return jnp.sum(d * d) / ps.shape[-1]


def _check_pair(name, s, t):
  if s.ndim != 2 or s.shape != t.shape:
    raise ValueError(
      f"{name}: student and teacher logits must both be (B, C), got {s.shape} and {t.shape}."
    )


def mlkd_instance(
  student_weak: jax.Array,
  teacher_weak: jax.Array,
  student_strong: jax.Array,
  teacher_strong: jax.Array,
  *,
  temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
  strong_on_weak: Sequence[float] = DEFAULT_STRONG_ON_WEAK,
  confidence_mask: bool = True,
) -> jax.Array:
  """Instance-level alignment, per example ``(B,)`` (batch mean = the reference's ``loss_kd``
  divided by ``KD_WEIGHT``):

  ``m_B · Σ_{T∈𝒯} T² KL_b(p^T(v_w) ‖ p^T(z_w)) + Σ_{T∈𝒯} T² KL_b(p^T(v_x) ‖ p^T(z_x))``,
  ``x`` the strong view, or the weak one for ``T ∈ strong_on_weak`` (the released code: 2, 6).
  ``confidence_mask=False`` sets ``m_B = 1``.
  """
  temps = check_temperatures("mlkd temperatures", temperatures)
  on_weak = check_temperatures("mlkd strong_on_weak", strong_on_weak) if strong_on_weak else ()
  missing = [t for t in on_weak if t not in temps]
  if missing:
    raise UserError(
      f"mlkd strong_on_weak must be a subset of temperatures {temps}, got {tuple(strong_on_weak)}."
    )
  _check_pair("mlkd_instance (weak)", student_weak, teacher_weak)
  _check_pair("mlkd_instance (strong)", student_strong, teacher_strong)
  m_b = confidence_fractions(teacher_weak)[0] if confidence_mask else 1.0
  weak = sum(kd(student_weak, teacher_weak, temperature=t) for t in temps)
  strong = sum(
    kd(student_weak, teacher_weak, temperature=t)
    if t in on_weak
    else kd(student_strong, teacher_strong, temperature=t)
    for t in temps
  )
  return m_b * weak + strong


def mlkd_batch(
  student_weak: jax.Array,
  teacher_weak: jax.Array,
  *,
  temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
  confidence_mask: bool = True,
) -> jax.Array:
  """Batch-level alignment ``m_B · Σ_T ‖G^T(v_w) − G^T(z_w)‖²_F / B`` (the reference's ``loss_bc``
  divided by ``KD_WEIGHT``), the batch scalar broadcast to ``(B,)``."""
  temps = check_temperatures("mlkd temperatures", temperatures)
  _check_pair("mlkd_batch", student_weak, teacher_weak)
  m_b = confidence_fractions(teacher_weak)[0] if confidence_mask else 1.0
  val = sum(batch_correlation(student_weak, teacher_weak, temperature=t) for t in temps)
  return jnp.full((student_weak.shape[0],), m_b * val)


def mlkd_class(
  student_weak: jax.Array,
  teacher_weak: jax.Array,
  *,
  temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
  confidence_mask: bool = True,
) -> jax.Array:
  """Class-level alignment ``m_C · Σ_T ‖M^T(v_w) − M^T(z_w)‖²_F / C`` (the reference's ``loss_cc``
  divided by ``KD_WEIGHT``), the batch scalar broadcast to ``(B,)``."""
  temps = check_temperatures("mlkd temperatures", temperatures)
  _check_pair("mlkd_class", student_weak, teacher_weak)
  m_c = confidence_fractions(teacher_weak)[1] if confidence_mask else 1.0
  val = sum(class_correlation(student_weak, teacher_weak, temperature=t) for t in temps)
  return jnp.full((student_weak.shape[0],), m_c * val)
