"""Online (peer) distillation losses: DML and KDCL (pure functions, per-peer per-example outputs).

K >= 2 peer networks are trained together; there is no pre-trained teacher. Every function takes
the peers' logits as a sequence of ``(B, C)`` arrays (or one ``(K, B, C)`` array; different
architectures are fine, they only share the class count) and integer labels ``(B,)``, and returns
a ``(K, B)`` array: row ``i`` is peer ``i``'s per-example loss. The train step
(:mod:`kdjax.train.online`) reduces the batch with the mean and sums over peers; because every
target built from *other* peers' logits is under ``stop_gradient`` here, the gradient of that sum
w.r.t. peer ``i``'s parameters is exactly the gradient of ``L_i`` -- the same update as training
each peer separately against frozen peer predictions (what the references do with ``.detach()``
and one optimizer per network).

Conventions (methods.md §0.2 and §7.2): log-probabilities from ``log_softmax``, ``0 · log 0 = 0``,
KL via :func:`kdjax.losses.logits.kl_per_example` with the target distribution first.

* DML -- Zhang, Xiang, Hospedales, Lu. "Deep Mutual Learning", CVPR 2018.
* KDCL -- Guo, Wang, Wu, Yan, Shao, Wang, Luo. "Online Knowledge Distillation via Collaborative
  Learning", CVPR 2020. No reference code; the ensemble builders are our reading of the paper
  (methods.md §7.2 KDCL, unverified).
"""

from __future__ import annotations

from typing import Sequence, Union

import jax
import jax.numpy as jnp

from kdjax import checks
from kdjax.losses.logits import cross_entropy, kl_per_example

__all__ = [
  "dml",
  "kdcl",
  "kdcl_ensemble",
  "ensemble_naive",
  "ensemble_minlogit",
  "ensemble_linear",
  "linear_ensemble_weights",
  "ENSEMBLES",
]

ENSEMBLES = ("minlogit", "naive", "linear")

Logits = Union[jax.Array, Sequence[jax.Array]]


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------


def _stack(logits_list: Logits, labels) -> tuple[jax.Array, jax.Array]:
  if isinstance(logits_list, (list, tuple)):
    shapes = [jnp.shape(z) for z in logits_list]
    if len(set(shapes)) > 1:
      raise ValueError(f"all peers' logits must have the same (batch, classes) shape, got {shapes}")
    z = jnp.stack([jnp.asarray(x) for x in logits_list]) if logits_list else jnp.zeros((0,))
  else:
    z = jnp.asarray(logits_list)
  if z.ndim != 3:
    raise ValueError(
      "logits_list must be K arrays of shape (batch, classes) or one (K, batch, "
      f"classes) array; got shape {z.shape}"
    )
  if z.shape[0] < 2:
    raise ValueError(f"online distillation needs at least 2 peers, got {z.shape[0]}")
  if jnp.shape(labels) != (z.shape[1],):
    raise ValueError(
      f"labels must have shape ({z.shape[1]},) to match logits {z.shape}; got {jnp.shape(labels)}"
    )
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise ValueError(f"labels must be integer class indices, got dtype {jnp.result_type(labels)}")
  z = z.astype(jnp.result_type(z, float))
  return z, jnp.asarray(labels)


def _ce(z: jax.Array, labels: jax.Array) -> jax.Array:
  """``-log softmax(z)_y`` for ``z`` of shape ``(..., B, C)`` -> ``(..., B)``."""
  return cross_entropy(z, labels)


# --------------------------------------------------------------------------------------------
# DML
# --------------------------------------------------------------------------------------------


def dml(
  logits_list: Logits,
  labels,
  *,
  temperature: float = 1.0,
  weight: float = 1.0,
  return_parts: bool = False,
):
  """Deep Mutual Learning (Zhang et al., CVPR 2018), K peers, per peer and example.

  ``L_i = CE(z_i, y) + weight · 1/(K−1) · Σ_{j≠i} T² · KL(softmax(sg(z_j)/T) ‖ softmax(z_i/T))``

  ``sg`` is ``stop_gradient``: each peer learns from the others' (frozen) predictions, exactly as
  AberHu/Knowledge-Distillation-Zoo ``train_dml.py`` ``.detach()``-es the peer's output. The
  defaults are the paper's / reference's setting (methods.md §7.2 DML): T = 1 (so the T² factor is
  1; for T ≠ 1 it is a design decision following Hinton's convention), weight λ = 1, and the
  batch mean of these per-example values is PyTorch's ``kl_div(..., reduction='batchmean')``
  (unverified: our reading of the KL form). For K = 2 this is the two-network form of
  ``train_dml.py``; for K > 2 the paper's average over the other peers.

  Args:
    logits_list: K ``(B, C)`` logits (or one ``(K, B, C)`` array), K >= 2.
    labels: ``(B,)`` integer labels.
    temperature: T > 0.
    weight: λ >= 0, the weight of the mimicry term.
    return_parts: also return ``{'ce': (K, B), 'kl': (K, B)}`` (``kl`` before ``weight``).

  Returns:
    ``(K, B)`` per-peer per-example losses (and the parts if requested).
  """
  checks.positive("temperature", temperature)
  checks.nonnegative("weight", weight)
  z, y = _stack(logits_list, labels)
  k = z.shape[0]
  ce = _ce(z, y)
  target = jax.lax.stop_gradient(z)
  kl = []
  for i in range(k):
    terms = [
      kl_per_example(
        z[i],
        target[j],
        teacher_temperature=temperature,
        student_temperature=temperature,
        t2_scale=True,
      )
      for j in range(k)
      if j != i
    ]
    kl.append(sum(terms) / (k - 1))
  kl = jnp.stack(kl)
  total = ce + weight * kl
  return (total, {"ce": ce, "kl": kl}) if return_parts else total


# --------------------------------------------------------------------------------------------
# KDCL ensemble teachers
# --------------------------------------------------------------------------------------------


def ensemble_naive(logits_list: Logits, labels=None) -> jax.Array:
  """KDCL-Naive: the mean of the peers' logits, ``z_ens = 1/K Σ_k z_k`` -> ``(B, C)``."""
  z = jnp.asarray(jnp.stack(logits_list) if isinstance(logits_list, (list, tuple)) else logits_list)
  return z.mean(axis=0)


def ensemble_minlogit(logits_list: Logits, labels) -> jax.Array:
  """KDCL-MinLogit: per example, subtract each peer's ground-truth-class logit from its logits,
  then take the element-wise minimum over peers -> ``(B, C)``:

  ``z_ens[b, c] = min_k (z_k[b, c] − z_k[b, y_b])``

  The ground-truth entry is 0 and every other class gets the peers' smallest margin to the true
  class: the ensemble with the lowest CE that keeps each peer's relative logits (Guo et al. 2020,
  unverified: our reading). Needs the labels, so it is a training-time teacher only.
  """
  z, y = _stack(logits_list, labels)
  gt = jnp.take_along_axis(z, jnp.broadcast_to(y[None, :, None], z.shape[:2] + (1,)), axis=-1)
  return jnp.min(z - gt, axis=0)


def linear_ensemble_weights(logits_list: Logits, labels, *, steps: int = 50) -> jax.Array:
  """Convex weights ``w`` (K,) minimising the batch-mean ``CE(Σ_k w_k z_k, y)`` over the simplex.

  Exponentiated-gradient (mirror) descent from the uniform weights (= KDCL-Naive), ``steps``
  iterations with step size ``1 / max|z|`` (the CE gradient w.r.t. ``w_k`` is bounded by
  ``2 max|z|``). Design decision: fitted on the current training batch, no gradient flows
  through it (methods.md: KDCL's Linear variant, unverified: our reading).
  """
  z, y = _stack(logits_list, labels)
  z = jax.lax.stop_gradient(z)
  k = z.shape[0]
  onehot = jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)
  eta = 1.0 / (jnp.max(jnp.abs(z)) + 1e-6)

  def body(_, log_w):
    w = jax.nn.softmax(log_w)
    p = jax.nn.softmax(jnp.einsum("k,kbc->bc", w, z), axis=-1)
    g = jnp.einsum("bc,kbc->k", p - onehot, z) / z.shape[1]
    return jax.nn.log_softmax(log_w - eta * g)

  log_w = jax.lax.fori_loop(0, int(steps), body, jnp.full((k,), -jnp.log(k), z.dtype))
  return jax.nn.softmax(log_w)


def ensemble_linear(logits_list: Logits, labels, *, steps: int = 50) -> jax.Array:
  """KDCL-Linear: ``z_ens = Σ_k w_k z_k`` with :func:`linear_ensemble_weights` -> ``(B, C)``."""
  z, y = _stack(logits_list, labels)
  w = linear_ensemble_weights(z, y, steps=steps)
  return jnp.einsum("k,kbc->bc", w, z)


def kdcl_ensemble(logits_list: Logits, labels, ensemble: str = "minlogit") -> jax.Array:
  """The ensemble teacher's logits ``(B, C)`` by name: one of :data:`ENSEMBLES`. KDCL-General
  (weights chosen on a held-out set for generalisation) is not provided."""
  if ensemble == "minlogit":
    return ensemble_minlogit(logits_list, labels)
  if ensemble == "naive":
    return ensemble_naive(logits_list, labels)
  if ensemble == "linear":
    return ensemble_linear(logits_list, labels)
  raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")


def kdcl(
  logits_list: Logits,
  labels,
  *,
  ensemble: str = "minlogit",
  temperature: float = 3.0,
  weight: float = 1.0,
  return_parts: bool = False,
):
  """KDCL (Guo et al., CVPR 2020), per peer and example.

  ``L_i = CE(z_i, y) + weight · T² · KL(softmax(sg(z_ens)/T) ‖ softmax(z_i/T))``

  ``z_ens = kdcl_ensemble(z_1..z_K, y, ensemble)`` is built from all peers' logits (each peer on
  its own augmented view of the batch in the train step) and stopped. Defaults (design
  decision, methods.md §7.2 KDCL, unverified): MinLogit, T = 3, λ = 1; batch mean.

  Args:
    logits_list: K ``(B, C)`` logits (or one ``(K, B, C)`` array), K >= 2.
    labels: ``(B,)`` integer labels.
    ensemble: ``'minlogit'`` | ``'naive'`` | ``'linear'``.
    temperature: T > 0.
    weight: λ >= 0.
    return_parts: also return ``{'ce': (K, B), 'kl': (K, B), 'ensemble': (B, C)}``.

  Returns:
    ``(K, B)`` per-peer per-example losses (and the parts if requested).
  """
  checks.positive("temperature", temperature)
  checks.nonnegative("weight", weight)
  if ensemble not in ENSEMBLES:
    raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
  z, y = _stack(logits_list, labels)
  z_ens = jax.lax.stop_gradient(kdcl_ensemble(z, y, ensemble))
  ce = _ce(z, y)
  kl = jnp.stack(
    [
      kl_per_example(
        z[i], z_ens, teacher_temperature=temperature, student_temperature=temperature, t2_scale=True
      )
      for i in range(z.shape[0])
    ]
  )
  total = ce + weight * kl
  return (total, {"ce": ce, "kl": kl, "ensemble": z_ens}) if return_parts else total
