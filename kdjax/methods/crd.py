"""Contrastive representation distillation (Tian et al., ICLR 2020; RepDistiller ``CRDLoss``,
``ContrastMemory``) and its queue variant ``crd_queue``.

Student and teacher ``pooled`` features -> two trainable ``Embed`` (Linear + L2; the connector
:class:`~kdjax.methods.cc_rkd_pkt.PairEmbed`) -> NCE against memory banks held in the term state
(``BuildContext.num_examples`` rows per network).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import checks
from kdjax.errors import UserError
from kdjax.losses import contrastive as crd_lib
from kdjax.methods.cc_rkd_pkt import PairEmbed
from kdjax.methods.registry import BuildContext, register_term


def _embed_connector(term):
  def make(*, feat_dim=128, **_):
    feat_dim = checks.integer(f"term {term}: feat_dim", feat_dim, minimum=1)
    return PairEmbed(feat_dim, normalize=True)

  return make


def _check_crd(term, feat_dim, nce_t, extra):
  checks.integer(f"term {term}: feat_dim", feat_dim, minimum=1)
  checks.positive(f"term {term}: nce_t", nce_t)
  for name, (value, lo) in extra.items():
    checks.integer(f"term {term}: {name}", value, minimum=lo)


def _raw_key(rng):
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(rng)
  return jnp.asarray(rng, jnp.uint32)


def _crd_init_state(
  ctx: BuildContext,
  rng,
  *,
  feat_dim=128,
  nce_k=16384,
  nce_t=0.07,
  nce_m=0.5,
  negatives="uniform",
  **_,
):
  num_examples = ctx.num_examples
  _check_crd("crd", feat_dim, nce_t, {"nce_k": (nce_k, 1)})
  checks.in_range("term crd: nce_m", nce_m, 0, 1)
  if negatives not in crd_lib.NEGATIVE_MODES:
    raise UserError(
      f"term crd: negatives must be one of {crd_lib.NEGATIVE_MODES}, got {negatives!r}."
    )
  if int(num_examples) < 2:
    raise UserError(f"term crd: needs a dataset index space of >= 2 examples, got {num_examples}.")
  k_s, k_t, k_r = jax.random.split(jax.random.fold_in(rng, 0), 3)
  state = {
    "memory_s": crd_lib.crd_init_memory(k_s, int(num_examples), int(feat_dim)),
    "memory_t": crd_lib.crd_init_memory(k_t, int(num_examples), int(feat_dim)),
    "z_s": jnp.full((), -1.0, jnp.float32),
    "z_t": jnp.full((), -1.0, jnp.float32),
    "rng": _raw_key(k_r),
  }
  if negatives == "other_class":
    state["labels"] = jnp.full((int(num_examples),), -1, jnp.int32)
  return state


@register_term(
  "crd",
  student_taps=("pooled",),
  teacher_taps=("pooled",),
  connector=_embed_connector("crd"),
  init_state=_crd_init_state,
)
def crd_term(
  s,
  t,
  batch,
  *,
  connector=None,
  state=None,
  feat_dim: int = 128,
  nce_k: int = 16384,
  nce_t: float = 0.07,
  nce_m: float = 0.5,
  negatives: str = "uniform",
):
  """Contrastive representation distillation (Tian et al. 2020; RepDistiller ``CRDLoss``,
  ``ContrastMemory``): student and teacher ``pooled`` -> trainable ``Embed`` (Linear + L2,
  ``feat_dim`` 128; the connector) -> two-view NCE against memory banks (state ``memory_s``,
  ``memory_t``: index-space × feat_dim, uniform init as the reference) with ``nce_k`` negatives
  per example, temperature ``nce_t``, ``Z`` per view fixed from the first batch (state ``z_s``,
  ``z_t``, initially −1), then the momentum update of the rows at ``batch.index`` (``nce_m``).
  Positives (slot 0) are ``batch.index`` (``mode='exact'``). Negatives are drawn with
  ``jax.random`` from the state's ``rng`` (split every step: deterministic and resumable):
  ``'uniform'`` = the reference's ``AliasMethod`` with uniform weights (used when no
  ``contrast_idx`` is given); ``'other_class'`` approximates ``CIFAR100InstanceSample`` (K
  OTHER-class indices without replacement) by rejection against a label bank filled as batches
  arrive (state ``labels``; with replacement; see ``kdjax.losses.crd_sample_negatives``). The
  memory holds one row per dataset index (N × 128 floats per network); for datasets where that
  does not fit use ``crd_queue``."""
  del feat_dim
  if negatives not in crd_lib.NEGATIVE_MODES:
    raise UserError(f"crd negatives must be one of {crd_lib.NEGATIVE_MODES}, got {negatives!r}.")
  e_s, e_t = connector((s.taps["pooled"],), (t.taps["pooled"],))
  mem_s, mem_t = state["memory_s"], state["memory_t"]
  n = mem_s.shape[0]
  index = jnp.asarray(batch.index, jnp.int32)
  rng, key = jax.random.split(state["rng"])
  new_state = dict(state)
  if negatives == "other_class":
    bank = state["labels"].at[index].set(jnp.asarray(batch.labels, jnp.int32))
    neg = crd_lib.crd_sample_negatives(
      key, index.shape[0], nce_k, n, labels=batch.labels, label_bank=bank
    )
    new_state["labels"] = bank
  else:
    neg = crd_lib.crd_sample_negatives(key, index.shape[0], nce_k, n)
  loss, (z_s, z_t) = crd_lib.crd(
    e_s,
    e_t,
    mem_s,
    mem_t,
    index,
    neg,
    nce_t=nce_t,
    num_data=n,
    z_s=state["z_s"],
    z_t=state["z_t"],
    return_z=True,
  )
  new_state.update(
    memory_s=crd_lib.crd_update_memory(mem_s, e_s, index, momentum=nce_m),
    memory_t=crd_lib.crd_update_memory(mem_t, e_t, index, momentum=nce_m),
    z_s=z_s.astype(state["z_s"].dtype),
    z_t=z_t.astype(state["z_t"].dtype),
    rng=rng,
  )
  return loss, new_state


def _crd_queue_init_state(
  ctx: BuildContext, rng, *, feat_dim=128, queue_size=16384, nce_t=0.07, num_data=0, **_
):
  num_examples = ctx.num_examples
  _check_crd(
    "crd_queue", feat_dim, nce_t, {"queue_size": (queue_size, 1), "num_data": (num_data, 0)}
  )
  n = int(num_data) or int(num_examples)
  if n < 1:
    raise UserError("term crd_queue: num_data (or the dataset index space) must be >= 1.")
  k_s, k_t = jax.random.split(jax.random.fold_in(rng, 0))
  return {
    "queue_s": crd_lib.crd_init_memory(k_s, int(queue_size), int(feat_dim)),
    "queue_t": crd_lib.crd_init_memory(k_t, int(queue_size), int(feat_dim)),
    "ptr": jnp.zeros((), jnp.int32),
    "z_s": jnp.full((), -1.0, jnp.float32),
    "z_t": jnp.full((), -1.0, jnp.float32),
    "num_data": jnp.full((), float(n), jnp.float32),
  }


@register_term(
  "crd_queue",
  student_taps=("pooled",),
  teacher_taps=("pooled",),
  connector=_embed_connector("crd_queue"),
  init_state=_crd_queue_init_state,
)
def crd_queue_term(
  s,
  t,
  batch,
  *,
  connector=None,
  state=None,
  feat_dim: int = 128,
  queue_size: int = 16384,
  nce_t: float = 0.07,
  num_data: int = 0,
):
  """CRD with MoCo-style FIFO queues instead of per-example memory banks, for datasets whose
  N × feat_dim banks do not fit (RepDistiller#40). State: ``queue_s``, ``queue_t``
  (``queue_size`` × feat_dim, detached past embeddings), ``ptr``, ``z_s``/``z_t`` (fixed from the
  first batch) and ``num_data`` (the noise prior 1/N; 0 = the dataset index space). Per anchor:
  positive = the other network's current (detached) embedding of the same image, negatives =
  the whole other queue; NCE as CRD (``kdjax.losses.crd_queue``). After scoring, the batch is
  enqueued. Not the reference algorithm and not behind any published number."""
  del batch, feat_dim, queue_size, num_data
  e_s, e_t = connector((s.taps["pooled"],), (t.taps["pooled"],))
  loss, (z_s, z_t) = crd_lib.crd_queue(
    e_s,
    e_t,
    state["queue_s"],
    state["queue_t"],
    nce_t=nce_t,
    num_data=state["num_data"],
    z_s=state["z_s"],
    z_t=state["z_t"],
    return_z=True,
  )
  q_s, ptr = crd_lib.crd_enqueue(state["queue_s"], e_s, state["ptr"])
  q_t, _ = crd_lib.crd_enqueue(state["queue_t"], e_t, state["ptr"])
  return loss, dict(
    state,
    queue_s=q_s,
    queue_t=q_t,
    ptr=ptr,
    z_s=z_s.astype(state["z_s"].dtype),
    z_t=z_t.astype(state["z_t"].dtype),
  )


CRD_HPARAMS = dict(feat_dim=128, nce_k=16384, nce_t=0.07, nce_m=0.5, negatives="other_class")

PRESETS = {
  # RepDistiller: -r 1 -a 0 -b 0.8, train_student.py defaults; negatives 'other_class'
  # approximates CIFAR100InstanceSample.
  "crd": dict(ce_weight=1.0, terms=dict(crd=dict(weight=0.8, **CRD_HPARAMS))),
}
