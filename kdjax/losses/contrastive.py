"""Contrastive representation distillation (CRD): memory-bank NCE and a FIFO-queue variant.

Tian, Krishnan, Isola, "Contrastive Representation Distillation", ICLR 2020. Reference:
HobbitLong/RepDistiller ``crd/criterion.py`` (``CRDLoss``, ``ContrastLoss``), ``crd/memory.py``
(``ContrastMemory``, ``AliasMethod``) and ``dataset/cifar100.py`` (``CIFAR100InstanceSample``).

The reference, with ``v_s``/``v_t`` the L2-normalised student/teacher embeddings (``Embed``,
:class:`kdjax.losses.connectors.Embed`), memories ``M_s``/``M_t`` (``N × D``, one row per training
image; ``memory_v1``/``memory_v2`` there) and per-example index rows ``idx[b] = (i_b, n_1..n_K)``
(positive first, then K negatives):

* scores, memory rows detached: ``P_s[b, k] = exp(⟨M_t[idx[b,k]], v_s[b]⟩ / T) / Z_s`` (student
  anchor, teacher memory) and ``P_t[b, k] = exp(⟨M_s[idx[b,k]], v_t[b]⟩ / T) / Z_t``;
* ``Z`` is set ONCE, from the first batch, as ``mean(exp(·/T)) · N`` (per view) and then fixed; it
  is a constant (no gradient) also on that first batch (the reference stores ``.item()``);
* NCE (``ContrastLoss``, Eq. 18) per view with ``P_n = 1/N``, ``m = K``, ``eps = 1e-7``:
  ``−[Σ_b log(P[b,0]/(P[b,0] + m·P_n + eps)) + Σ_{b,k≥1} log(m·P_n/(P[b,k] + m·P_n + eps))] / B``;
  the two views are summed;
* after scoring, the memories are updated at the positives:
  ``M_s[i_b] ← normalize(m·M_s[i_b] + (1 − m)·v_s[b])`` (momentum ``nce_m = 0.5``), same for
  ``M_t`` with ``v_t``; no gradient.

Here everything is a pure function of explicit arrays (the memories and ``Z`` are the state of
the ``crd`` method term, :mod:`kdjax.methods.crd`); the per-example split of the NCE loss is
``L_b = −[log D1_b + Σ_k log D0_{b,k}]`` summed over the two views, whose batch mean is the
reference value. Numerics: the scores are kept in log space (``log P = ⟨·,·⟩/T − log Z``) and
``log(P/(P + c))`` is evaluated as ``log P − logaddexp(log P, log c)``, mathematically identical
to the reference and free of ``exp`` overflow for small temperatures.

Memory-bank scoring is computed either by gathering the ``(B, K+1, D)`` memory rows (as the
reference's ``index_select`` + ``bmm``) or, when cheaper, as the full ``(B, N)`` score table
``v @ Mᵀ`` followed by a gather of the ``K+1`` columns (``N ≤ (K+1)·D``, e.g. CIFAR-100 with
K = 16384: 3.2 M instead of 134 M floats per view). Both give the same dot products.

The queue variant (:func:`crd_queue`) is for datasets whose ``N × D`` memory bank does not fit
(RepDistiller#40; ImageNet-21k and friends): a MoCo-style FIFO queue of the last ``Q`` detached
embeddings of each network replaces the per-example memory. The positive of a student anchor is
the current (detached) teacher embedding of the same image and its negatives are all ``Q``
entries of the teacher queue; symmetrically for the teacher anchor. The NCE formula and the
fixed-``Z`` convention are the same (``m = Q``, ``P_n = 1/num_data``). It is NOT the reference
algorithm (positives are not momentum-averaged memory rows, negatives are the most recent
examples rather than uniform draws, and a queue entry may be the anchor's own image from an
earlier step); no published number uses it.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from kdjax import checks

__all__ = [
  "crd",
  "crd_scores",
  "crd_nce",
  "crd_update_memory",
  "crd_init_memory",
  "crd_sample_negatives",
  "crd_queue",
  "crd_enqueue",
]

_HIGHEST = jax.lax.Precision.HIGHEST
CRD_EPS = 1e-7  # crd/criterion.py ``eps``
NEGATIVE_MODES = ("uniform", "other_class")


def _check_2d(name, x, dim=None):
  shape = tuple(jnp.shape(x))
  if len(shape) != 2 or (dim is not None and shape[1] != dim):
    want = f"(B, {dim})" if dim is not None else "2-D (B, D)"
    raise ValueError(f"{name} must be {want}, got {name}.shape={shape}")
  return shape


def crd_init_memory(key, num_data: int, dim: int, dtype=jnp.float32) -> jax.Array:
  """A memory bank initialised as the reference: ``U(−s, s)`` with ``s = 1/sqrt(dim/3)``.

  (``ContrastMemory.__init__``: ``torch.rand(N, D).mul_(2·stdv).add_(−stdv)``; the rows are not
  normalised. The torch RNG stream is not reproduced.)"""
  num_data = checks.integer("num_data", num_data, minimum=1)
  dim = checks.integer("dim", dim, minimum=1)
  stdv = 1.0 / math.sqrt(dim / 3.0)
  return jax.random.uniform(key, (num_data, dim), dtype, -stdv, stdv)


def _dots(anchor, memory, idx, score_mode):
  """``⟨memory[idx[b, k]], anchor[b]⟩`` of shape ``(B, K+1)``, memory detached."""
  mem = jax.lax.stop_gradient(jnp.asarray(memory, anchor.dtype))
  n, d = mem.shape
  k1 = idx.shape[1]
  if score_mode == "auto":
    score_mode = "table" if n <= k1 * d else "gather"
  if score_mode == "table":
    table = jnp.matmul(anchor, mem.T, precision=_HIGHEST)  # (B, N)
    return jnp.take_along_axis(table, idx, axis=1)
  if score_mode == "gather":
    return jnp.einsum("bkd,bd->bk", mem[idx], anchor, precision=_HIGHEST)
  raise ValueError(f"score_mode must be 'auto', 'table' or 'gather', got {score_mode!r}")


def _resolve_log_z(logits, z, num_data):
  """``log Z``: the stored ``z`` if it is set (> 0), else ``log(mean(exp(logits))·N)`` from this
  batch (constant: no gradient), as ``ContrastMemory`` on its first call."""
  batch_log_z = jax.lax.stop_gradient(
    jax.nn.logsumexp(logits) - math.log(logits.size) + jnp.log(jnp.asarray(num_data, logits.dtype))
  )
  z = jnp.asarray(z, logits.dtype)
  is_set = z > 0
  return jnp.where(is_set, jnp.log(jnp.where(is_set, z, 1.0)), batch_log_z)


def crd_nce(log_p: jax.Array, num_data, *, eps: float = CRD_EPS) -> jax.Array:
  """RepDistiller's ``ContrastLoss`` per example from log-scores ``log P`` of shape ``(B, 1+K)``
  (column 0 the positive): ``−[log(P₀/(P₀ + K/N + eps)) + Σ_k log((K/N)/(P_k + K/N + eps))]``.
  The batch mean equals ``ContrastLoss.forward``."""
  m = log_p.shape[1] - 1
  if m < 1:
    raise ValueError(f"log_p must have at least one negative column, got shape {log_p.shape}")
  mpn = m / jnp.asarray(num_data, log_p.dtype)
  log_c = jnp.log(mpn + eps)
  denom = jnp.logaddexp(log_p, log_c)  # log(P + m·Pn + eps)
  log_d1 = log_p[:, 0] - denom[:, 0]
  log_d0 = jnp.log(mpn) - denom[:, 1:]
  return -(log_d1 + jnp.sum(log_d0, axis=1))


def crd_scores(
  embed_s,
  embed_t,
  memory_s,
  memory_t,
  index,
  contrast_idx,
  *,
  nce_t: float,
  score_mode: str = "auto",
):
  """Unnormalised log-scores ``(⟨M_t[idx], v_s⟩/T, ⟨M_s[idx], v_t⟩/T)``, each ``(B, 1+K)``, with
  ``idx = [index, contrast_idx]`` (positive in column 0). Memory rows carry no gradient."""
  nce_t = checks.positive("nce_t", nce_t)
  b, d = _check_2d("embed_s", embed_s)
  _check_2d("embed_t", embed_t, d)
  if jnp.shape(embed_t)[0] != b:
    raise ValueError(
      f"embed_s and embed_t must have the same batch; got {jnp.shape(embed_s)}, "
      f"{jnp.shape(embed_t)}"
    )
  for name, mem in (("memory_s", memory_s), ("memory_t", memory_t)):
    _check_2d(name, mem, d)
  if tuple(jnp.shape(memory_s)) != tuple(jnp.shape(memory_t)):
    raise ValueError(
      f"memory_s and memory_t must have the same shape; got "
      f"{jnp.shape(memory_s)}, {jnp.shape(memory_t)}"
    )
  index = jnp.asarray(index, jnp.int32)
  contrast_idx = jnp.asarray(contrast_idx, jnp.int32)
  if index.shape != (b,) or contrast_idx.ndim != 2 or contrast_idx.shape[0] != b:
    raise ValueError(
      f"index must be (B,) and contrast_idx (B, K) with B = {b}; got "
      f"index.shape={index.shape}, contrast_idx.shape={contrast_idx.shape}"
    )
  dtype = jnp.result_type(embed_s, embed_t, float)
  v_s = jnp.asarray(embed_s, dtype)
  v_t = jnp.asarray(embed_t, dtype)
  idx = jnp.concatenate([index[:, None], contrast_idx], axis=1)
  logits_s = _dots(v_s, memory_t, idx, score_mode) / nce_t
  logits_t = _dots(v_t, memory_s, idx, score_mode) / nce_t
  return logits_s, logits_t


def crd(
  embed_s: jax.Array,
  embed_t: jax.Array,
  memory_s: jax.Array,
  memory_t: jax.Array,
  index: jax.Array,
  contrast_idx: jax.Array,
  *,
  nce_t: float = 0.07,
  num_data: Optional[int] = None,
  z_s=-1.0,
  z_t=-1.0,
  eps: float = CRD_EPS,
  score_mode: str = "auto",
  return_z: bool = False,
):
  """CRD's two-view NCE loss against memory banks, per example.

  Args:
    embed_s: ``(B, D)`` student embedding (``Embed`` output, unit rows); receives gradients.
    embed_t: ``(B, D)`` teacher embedding (its ``Embed`` is trainable too).
    memory_s: ``(N, D)`` student memory (RepDistiller ``memory_v1``; scores the teacher anchor).
    memory_t: ``(N, D)`` teacher memory (``memory_v2``; scores the student anchor).
    index: ``(B,)`` dataset indices: the positives (``mode='exact'``).
    contrast_idx: ``(B, K)`` negative indices (the reference's ``contrast_idx[:, 1:]``).
    nce_t: temperature ``> 0`` (0.07).
    num_data: ``N`` of the noise distribution ``P_n = 1/N`` and of ``Z``; default: the memory rows.
    z_s, z_t: the normalisers ``Z`` of the student / teacher anchor views (``Z_v1``, ``Z_v2``);
      a value ``<= 0`` (the reference's initial −1) means "not set": it is computed from this
      batch. Scalars, may be traced.
    eps: the NCE epsilon (1e-7).
    score_mode: ``'auto'`` | ``'table'`` | ``'gather'`` (see the module docstring).
    return_z: also return the ``(z_s, z_t)`` used (set on this call if they were unset).

  Returns:
    ``(B,)`` per-example losses (student-anchor + teacher-anchor views); with ``return_z``,
    ``(loss, (z_s, z_t))``.

  Raises:
    ValueError: on malformed shapes or ``nce_t <= 0``.
  """
  if num_data is None:
    num_data = jnp.shape(memory_s)[0]
  checks.in_range("num_data", num_data, 1)
  checks.nonnegative("eps", eps)
  logits_s, logits_t = crd_scores(
    embed_s, embed_t, memory_s, memory_t, index, contrast_idx, nce_t=nce_t, score_mode=score_mode
  )
  log_zs = _resolve_log_z(logits_s, z_s, num_data)
  log_zt = _resolve_log_z(logits_t, z_t, num_data)
  loss = crd_nce(logits_s - log_zs, num_data, eps=eps) + crd_nce(
    logits_t - log_zt, num_data, eps=eps
  )
  if return_z:
    return loss, (jnp.exp(log_zs), jnp.exp(log_zt))
  return loss


def crd_update_memory(
  memory: jax.Array, embed: jax.Array, index: jax.Array, *, momentum: float = 0.5
) -> jax.Array:
  """``memory[index] ← normalize(momentum·memory[index] + (1 − momentum)·embed)`` (no gradient).

  ``ContrastMemory.forward``'s update (``l_pos.mul_(momentum).add_(v·(1−momentum))``, divided by
  its L2 norm, ``index_copy_``). Duplicate indices within a batch keep one of the updates
  (unspecified which; the reference's ``index_copy_`` is likewise unspecified)."""
  checks.in_range("momentum", momentum, 0, 1)
  n, d = _check_2d("memory", memory)
  _check_2d("embed", embed, d)
  index = jnp.asarray(index, jnp.int32)
  rows = memory[index] * momentum + jax.lax.stop_gradient(embed).astype(memory.dtype) * (
    1.0 - momentum
  )
  rows = rows / jnp.sqrt(jnp.sum(rows * rows, axis=1, keepdims=True))
  return memory.at[index].set(rows)


def crd_sample_negatives(
  key,
  batch_size: int,
  num_negatives: int,
  num_data: int,
  *,
  labels: Optional[jax.Array] = None,
  label_bank: Optional[jax.Array] = None,
  rounds: int = 4,
) -> jax.Array:
  """``(B, K)`` negative indices drawn uniformly with replacement from ``[0, N)``.

  Without ``labels``: the reference's ``AliasMethod`` with uniform weights (``ContrastMemory``
  when no ``contrast_idx`` is given). With ``labels`` (``(B,)``) and ``label_bank`` (``(N,)``, the
  label of each dataset index, ``-1`` if unknown), draws whose known label equals the anchor's are
  redrawn up to ``rounds`` times: an approximation of ``CIFAR100InstanceSample``, which draws K
  indices of OTHER classes without replacement (with replacement here; indices of unknown label
  are accepted, so same-class draws can remain until the bank is filled, i.e. during the first
  epoch, and with probability ``(1/num_classes)^(rounds+1)`` afterwards)."""
  shape = (int(batch_size), int(num_negatives))
  k0, key = jax.random.split(key)
  neg = jax.random.randint(k0, shape, 0, num_data, dtype=jnp.int32)
  if labels is None:
    return neg
  if label_bank is None:
    raise ValueError("labels given without label_bank")
  labels = jnp.asarray(labels, jnp.int32)[:, None]
  for _ in range(int(rounds)):
    k0, key = jax.random.split(key)
    bad = label_bank[neg] == labels
    neg = jnp.where(bad, jax.random.randint(k0, shape, 0, num_data, dtype=jnp.int32), neg)
  return neg


def crd_queue(
  embed_s: jax.Array,
  embed_t: jax.Array,
  queue_s: jax.Array,
  queue_t: jax.Array,
  *,
  nce_t: float = 0.07,
  num_data,
  z_s=-1.0,
  z_t=-1.0,
  eps: float = CRD_EPS,
  return_z: bool = False,
):
  """CRD's NCE with FIFO queues instead of memory banks, per example (see the module docstring).

  Student anchor ``v_s[b]``: positive ``sg(v_t[b])``, negatives the ``Q`` rows of ``sg(queue_t)``;
  teacher anchor ``v_t[b]``: positive ``sg(v_s[b])``, negatives ``sg(queue_s)``. Then exactly
  :func:`crd`'s NCE with ``m = Q`` and ``P_n = 1/num_data``, ``Z`` fixed from the first batch.

  Returns:
    ``(B,)`` losses; with ``return_z``, ``(loss, (z_s, z_t))``.
  """
  nce_t = checks.positive("nce_t", nce_t)
  b, d = _check_2d("embed_s", embed_s)
  _check_2d("embed_t", embed_t, d)
  _check_2d("queue_s", queue_s, d)
  _check_2d("queue_t", queue_t, d)
  dtype = jnp.result_type(embed_s, embed_t, float)
  v_s, v_t = jnp.asarray(embed_s, dtype), jnp.asarray(embed_t, dtype)
  sg = jax.lax.stop_gradient

  def logits(anchor, positive, queue):
    pos = jnp.sum(anchor * sg(positive), axis=1, keepdims=True)
    neg = jnp.matmul(anchor, sg(jnp.asarray(queue, dtype)).T, precision=_HIGHEST)
    return jnp.concatenate([pos, neg], axis=1) / nce_t

  logits_s = logits(v_s, v_t, queue_t)
  logits_t = logits(v_t, v_s, queue_s)
  log_zs = _resolve_log_z(logits_s, z_s, num_data)
  log_zt = _resolve_log_z(logits_t, z_t, num_data)
  loss = crd_nce(logits_s - log_zs, num_data, eps=eps) + crd_nce(
    logits_t - log_zt, num_data, eps=eps
  )
  if return_z:
    return loss, (jnp.exp(log_zs), jnp.exp(log_zt))
  return loss


def crd_enqueue(queue: jax.Array, embed: jax.Array, ptr):
  """Writes the detached ``embed`` rows at ``ptr, ptr+1, ...`` (mod Q); returns ``(queue, ptr')``."""
  q = queue.shape[0]
  b = embed.shape[0]
  if b > q:
    raise ValueError(f"batch {b} larger than the queue {q}")
  pos = (jnp.asarray(ptr, jnp.int32) + jnp.arange(b, dtype=jnp.int32)) % q
  queue = queue.at[pos].set(jax.lax.stop_gradient(embed).astype(queue.dtype))
  return queue, (jnp.asarray(ptr, jnp.int32) + b) % q
