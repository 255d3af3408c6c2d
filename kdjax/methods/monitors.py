r"""Monitor terms: per-step metrics that add no loss (TTM paper, Zheng & Yang ICLR 2024, Figs. 1-2).

A monitor is a term registered with ``monitor=True`` (:mod:`kdjax.methods.registry`): it returns
a dict of per-example values, evaluated on stop-gradient outputs, that the train step logs as
batch means ``<term key>/<name>`` beside the loss terms. Add one to any method::

  config.method.terms.ttm_stats = dict(gamma=0.25)      # weight 0 (the default): no loss
  config.method.terms.entropy = dict()                  # H(q) only; runs without a teacher

TTM's quantities, with ``q = softmax(z_s)``, ``q_T = softmax(z_s / T)``, ``p_t = softmax(z_t)``,
``γ = 1/T`` and the power-transformed teacher ``p̂ = p_t^γ / Σ p_t^γ = softmax(γ z_t)``:

* ``entropy``   Shannon entropy ``H(q)`` of the student (paper Fig. 1 / App. A.1: KD at T = 4
  lowers it, label smoothing ε = 0.5 raises it, TTM keeps it high).
* ``ttm_kl``    ``D(p̂ ‖ q)`` (Fig. 2), the TTM loss per example.
* ``kd_kl``     ``D(p̂ ‖ q_T)``, KD's KL at temperature T (no T²).
* ``renyi``     the Rényi entropy ``H_{1/T}(q) = (1/(1 - 1/T)) log Σ_i q_i^{1/T}`` (= ``H_γ``).
* ``teacher_entropy``  ``H(p̂)``, a teacher-only constant.

They satisfy the paper's decomposition (Sec. 3, methods.md §3.2)::

  D(p̂ ‖ q) = T · D(p̂ ‖ q_T) − (T − 1) · H_{1/T}(q) + (T − 1) · H(p̂)

so with ``β = λT/(1−λ)``, ``H(y,q) + β D(p̂‖q) = (1/(1−λ))·[L_KD − λT(T−1) H_{1/T}(q)] + const``:
TTM is KD plus a Rényi-entropy (confidence-penalty) regulariser (``tests/test_ttm_logging.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import checks, losses
from kdjax.methods.registry import register_term


def _f32(z):
  return z.astype(jnp.promote_types(z.dtype, jnp.float32))


def shannon_entropy(logits: jax.Array) -> jax.Array:
  """``H(softmax(z)) = −Σ_i q_i log q_i`` per example ``(B,)`` (nats)."""
  logq = jax.nn.log_softmax(_f32(logits), axis=-1)
  return -jnp.sum(jnp.exp(logq) * logq, axis=-1)


def renyi_entropy(logits: jax.Array, alpha: float) -> jax.Array:
  """Rényi entropy of order ``alpha`` of ``softmax(z)``, per example ``(B,)``:
  ``H_α(q) = (1/(1−α)) log Σ_i q_i^α``, computed as ``logsumexp(α log q) / (1 − α)``;
  ``alpha = 1`` is the Shannon limit."""
  if alpha == 1:
    return shannon_entropy(logits)
  checks.positive("renyi_entropy: alpha", alpha)
  logq = jax.nn.log_softmax(_f32(logits), axis=-1)
  return jax.nn.logsumexp(alpha * logq, axis=-1) / (1.0 - alpha)


def ttm_statistics(student_logits: jax.Array, teacher_logits: jax.Array, *, gamma: float):
  """The TTM paper's per-example quantities (module docstring), ``T = 1/gamma``: a dict
  ``entropy, ttm_kl, kd_kl, renyi, teacher_entropy`` of ``(B,)`` arrays."""
  checks.in_range("ttm_stats: gamma (= 1/T)", gamma, 0, 1, open_lo=True)
  zs, zt = _f32(student_logits), _f32(teacher_logits)
  temperature = 1.0 / gamma
  return dict(
    entropy=shannon_entropy(zs),
    ttm_kl=losses.ttm(zs, zt, gamma=gamma),
    kd_kl=losses.kd(zs, zt, temperature=temperature, t2_scale=False),
    renyi=renyi_entropy(zs, gamma),
    teacher_entropy=shannon_entropy(gamma * zt),
  )


@register_term("ttm_stats", monitor=True)
def ttm_stats_term(s, t, batch, *, gamma: float = 0.25):
  """Monitor: H(q), D(p̂‖q), D(p̂‖q_T), H_{1/T}(q), H(p̂) (TTM Figs. 1-2; γ = 1/T, default T = 4)."""
  del batch
  return ttm_statistics(s.logits, t.logits, gamma=gamma)


@register_term("entropy", monitor=True, needs_teacher=False)
def entropy_term(s, t, batch, *, renyi_alpha=None):
  """Monitor: the student's Shannon entropy H(q) (and ``H_α(q)`` when ``renyi_alpha`` is set);
  needs no teacher (label-smoothing and CE baselines of TTM App. A.1)."""
  del t, batch
  out = dict(entropy=shannon_entropy(s.logits))
  if renyi_alpha is not None:
    out["renyi"] = renyi_entropy(s.logits, float(renyi_alpha))
  return out
