r"""The teacher-free noisy-soft-label control of Ojha et al. (NeurIPS 2023, App. 11.2), per example.

Ojha, Li, Sundara Rajan, Liang, Lee, "What Knowledge Gets Distilled in Knowledge Distillation?"
(arXiv 2205.16004), App. 11.2: to test whether the properties a student inherits come from the
teacher or merely from training on *soft* labels, the student is distilled from soft labels built
without any teacher, "one-hot + Gaussian noise of variance 0.2, softmax at temperature 0.15"
(methods.md §6.3.9), which gives only marginal gains. With ``e_y`` the one-hot label and
``ε ~ N(0, σ² I_K)``, ``σ² = 0.2``:

  ``p̃ = softmax((e_y + ε) / τ_l)``,  ``τ_l = 0.15``                         (the soft label)
  ``L_b = c · Σ_k −p̃_k log softmax(z_s / T_s)_k``  (``form='cross_entropy'``, the paper's L_KL)
  or ``c · KL(p̃ ‖ softmax(z_s / T_s))``            (``form='kl'``),  ``c = T_s²`` if ``t2_scale``

i.e. :func:`kdjax.losses.kl_per_example` with the "teacher logits" ``e_y + ε`` at teacher
temperature ``τ_l``. Design decisions where the paper is silent (unverified: our reading): the
student temperature ``T_s = 1`` by default; the noise is drawn once per training example (a fixed
soft label per image, as a fixed teacher's output would be) from the key
``fold_in(PRNGKey(seed), index)`` of its dataset index, or anew every epoch with
``fold_in(…, epoch)`` (:func:`label_noise` ``epoch=``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import checks
from kdjax.losses.logits import _check_labels, kl_per_example

__all__ = ["label_noise", "noisy_soft_labels", "noisy_label_kd"]


def label_noise(
  seed, index: jax.Array, num_classes: int, *, variance: float = 0.2, epoch=None
) -> jax.Array:
  """``(B, K)`` Gaussian noise ``N(0, variance)`` per example, a pure function of ``(seed,
  index[, epoch])``: example ``b`` uses ``fold_in(fold_in(PRNGKey(seed), index[b]), epoch)``
  (without ``epoch``: the same noise every time the example is seen), so the draw does not depend
  on the batch's composition or order."""
  v = checks.nonnegative("variance", variance)
  base = jax.random.PRNGKey(seed)
  index = jnp.asarray(index)

  def one(i):
    k = jax.random.fold_in(base, i)
    if epoch is not None:
      k = jax.random.fold_in(k, epoch)
    return jax.random.normal(k, (int(num_classes),), jnp.float32)

  return jax.vmap(one)(index) * jnp.sqrt(jnp.float32(v))


def noisy_soft_labels(
  labels: jax.Array, noise: jax.Array, *, temperature: float = 0.15
) -> jax.Array:
  """``softmax((one_hot(labels) + noise) / temperature)``, ``(B, K)`` rows summing to 1."""
  checks.positive("temperature", temperature)
  noise = jnp.asarray(noise)
  if noise.ndim != 2:
    raise ValueError(f"noise must be (B, K), got shape {noise.shape}")
  y = _check_labels(labels, noise.shape)
  return jax.nn.softmax(
    (jax.nn.one_hot(y, noise.shape[1], dtype=noise.dtype) + noise) / temperature, axis=-1
  )


def noisy_label_kd(
  student_logits: jax.Array,
  labels: jax.Array,
  noise: jax.Array,
  *,
  label_temperature: float = 0.15,
  student_temperature: float = 1.0,
  t2_scale: bool = True,
  form: str = "cross_entropy",
) -> jax.Array:
  """Distillation from teacher-free noisy soft labels, per example (module docstring).

  Args:
    student_logits: ``(B, K)``.
    labels: ``(B,)`` integer classes.
    noise: ``(B, K)`` noise added to the one-hot labels (e.g. :func:`label_noise`).
    label_temperature: ``τ_l > 0`` of the soft label's softmax (paper: 0.15).
    student_temperature: ``T_s > 0``.
    t2_scale: multiply by ``T_s²``.
    form: ``'cross_entropy'`` (the paper's L_KL) or ``'kl'``.

  Returns:
    ``(B,)`` per-example losses.
  """
  z = jnp.asarray(student_logits)
  noise = jnp.asarray(noise, z.dtype)
  if noise.shape != z.shape:
    raise ValueError(f"noise shape {noise.shape} != student logits shape {z.shape}")
  y = _check_labels(labels, z.shape)
  target_logits = jax.nn.one_hot(y, z.shape[1], dtype=z.dtype) + noise
  return kl_per_example(
    z,
    target_logits,
    teacher_temperature=label_temperature,
    student_temperature=student_temperature,
    t2_scale=t2_scale,
    form=form,
  )
