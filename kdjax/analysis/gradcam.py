"""Grad-CAM (Selvaraju et al., ICCV 2017) on kdjax models, and agreement between two CAMs.

Ojha et al. (NeurIPS 2023), methods.md §6.3.1: Grad-CAM of the ground-truth class for the teacher,
the distilled and the independent student; the metric is the share of images with
``cos(CAM_T, CAM_distilled) > cos(CAM_T, CAM_independent)`` (:func:`cam_preference`).

Grad-CAM for a feature map ``A ∈ R^{H×W×C}`` and class ``c``:

    α_k = (1 / HW) Σ_{i,j} ∂z_c / ∂A_ijk,      CAM = ReLU(Σ_k α_k A_k),

then min–max normalised to ``[0, 1]`` per example (an all-zero map stays zero).

Gradients w.r.t. an intermediate feature map use the kdjax block protocol (see
``kdjax.models.registry``): the stem and stages ``1..K`` produce ``A`` (the post-activation output of
stage ``K``, i.e. tap ``stageK``; ``stage=0`` is the ``stem`` tap), and ``z = head(stages_{K+1..N}(A))``
is differentiated w.r.t. ``A``. Models run with ``train=False`` (BatchNorm running averages), so
examples are independent and one VJP of ``Σ_b z_{b, c_b}`` gives every example's gradient.
"""

from __future__ import annotations

import functools
import math
from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from kdjax import checks

__all__ = ["gradcam", "cam_agreement", "cam_preference", "stage_features"]


def _num_stages(model) -> int:
  n = getattr(model, "num_stages", None)
  if not isinstance(n, int) or n < 1:
    raise ValueError(
      f"{type(model).__name__} does not follow the kdjax block protocol "
      "(needs an int class attribute num_stages >= 1)"
    )
  return n


def stage_features(model, variables, x, *, stage: int) -> jax.Array:
  """Output of the stem (``stage=0``) or of stage ``stage`` (tap ``stage{K}``), ``train=False``."""
  n = _num_stages(model)
  stage = checks.integer("stage", stage, minimum=0, maximum=n, strict=True)
  h, _ = model.apply(variables, x, train=False, method="apply_stem")
  for i in range(1, stage + 1):
    h, _ = model.apply(variables, h, i, train=False, method="apply_stage")
  return h


def _head_from(model, variables, h, stage: int, n: int) -> jax.Array:
  for i in range(stage + 1, n + 1):
    h, _ = model.apply(variables, h, i, train=False, method="apply_stage")
  logits, _ = model.apply(variables, h, train=False, method="apply_head")
  return logits


def _minmax(cam: jax.Array) -> jax.Array:
  lo = jnp.min(cam, axis=(1, 2), keepdims=True)
  hi = jnp.max(cam, axis=(1, 2), keepdims=True)
  rng = hi - lo
  return jnp.where(rng > 0, (cam - lo) / jnp.where(rng > 0, rng, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames=("model", "stage"))
def _gradcam_kernel(model, variables, x, cls, use_pred, *, stage):
  n = _num_stages(model)
  feats = stage_features(model, variables, x, stage=stage)
  if feats.ndim != 4:
    raise ValueError(f"stage {stage} output must be (B, H, W, C), got shape {feats.shape}")
  logits, vjp = jax.vjp(lambda a: _head_from(model, variables, a, stage, n), feats)
  b, k = logits.shape
  cls = jnp.where(use_pred, jnp.argmax(logits, axis=-1).astype(jnp.int32), cls)
  (grads,) = vjp(jax.nn.one_hot(cls, k, dtype=logits.dtype))
  alpha = jnp.mean(grads, axis=(1, 2))  # (B, C)
  cam = jax.nn.relu(jnp.einsum("bhwc,bc->bhw", feats, alpha))
  return _minmax(cam), logits


def gradcam(model, variables, x, *, stage: int, class_idx=None, return_logits: bool = False):
  """Grad-CAM maps of a kdjax model at the output of stage ``stage``.

  Args:
    model: a kdjax model (Flax module with ``apply_stem`` / ``apply_stage`` / ``apply_head``).
    variables: its variables (``{'params': ..., 'batch_stats': ...}``).
    x: ``(B, H, W, C)`` normalised input images.
    stage: Python int, ``0`` (stem) .. ``model.num_stages``; the last stage is the usual choice
      (the "last conv layer" of Selvaraju et al.).
    class_idx: None (each example's predicted class), a Python int (same class for all) or a
      ``(B,)`` integer array (e.g. the ground-truth labels, as in Ojha et al.).
    return_logits: also return the ``(B, K)`` logits.

  Returns:
    ``(B, h, w)`` maps in ``[0, 1]`` at the stage's spatial resolution (and the logits if asked).
    Runs as one jitted kernel keyed on the (static, hashable) model and stage, so repeated
    calls over batches or checkpoints compile once; also usable inside an outer ``jax.jit``.
  """
  n = _num_stages(model)
  stage = checks.integer("stage", stage, minimum=0, maximum=n, strict=True)
  x = jnp.asarray(x)
  if x.ndim != 4:
    raise ValueError(f"expected (B, H, W, C) images, got shape {x.shape}")
  b = x.shape[0]
  use_pred = class_idx is None
  cls = (
    jnp.zeros((b,), jnp.int32)
    if use_pred
    else jnp.broadcast_to(jnp.asarray(class_idx).astype(jnp.int32), (b,))
  )
  cam, logits = _gradcam_kernel(model, variables, x, cls, jnp.asarray(use_pred), stage=stage)
  return (cam, logits) if return_logits else cam


def _resize(maps: jax.Array, size: Tuple[int, int]) -> jax.Array:
  if maps.shape[1:] == tuple(size):
    return maps
  return jax.image.resize(maps, (maps.shape[0], *size), method="bilinear")


def _avg_ranks(v: jax.Array) -> jax.Array:
  """0-based average ranks (ties share their mean rank) of a 1-D vector."""
  s = jnp.sort(v)
  left = jnp.searchsorted(s, v, side="left")
  right = jnp.searchsorted(s, v, side="right")
  return (left + right - 1).astype(jnp.float32) / 2.0


def _pearson(a: jax.Array, b: jax.Array) -> jax.Array:
  a = a - jnp.mean(a)
  b = b - jnp.mean(b)
  den = jnp.sqrt(jnp.sum(a * a) * jnp.sum(b * b))
  return jnp.where(den > 0, jnp.sum(a * b) / jnp.where(den > 0, den, 1.0), jnp.nan)


def cam_agreement(
  map_a, map_b, *, top_frac: float = 0.2, size: Optional[Tuple[int, int]] = None
) -> Dict[str, jax.Array]:
  """Per-example agreement of two sets of saliency maps.

  Both ``(B, Ha, Wa)`` and ``(B, Hb, Wb)`` maps are bilinearly resized (``jax.image.resize``) to
  ``size`` (default: the larger of the two resolutions, per axis), flattened, and compared by

  * ``spearman``: Spearman rank correlation (Pearson correlation of average ranks, ties
    averaged; NaN when a map is constant),
  * ``iou_top``: IoU of the top-``top_frac`` pixel sets (``ceil(top_frac · HW)`` largest values
    of each map; ties broken by pixel index),
  * ``cosine``: cosine similarity of the maps (Ojha et al.'s metric; NaN for an all-zero map).

  Args:
    map_a: ``(B, Ha, Wa)`` maps.
    map_b: ``(B, Hb, Wb)`` maps.
    top_frac: fraction of pixels in the "top" region, in ``(0, 1]``.
    size: common ``(H, W)``; optional.

  Returns:
    Dict of ``(B,)`` arrays ``spearman``, ``iou_top``, ``cosine``.
  """
  checks.in_range("top_frac", top_frac, 0, 1, open_lo=True)
  a, b = jnp.asarray(map_a, jnp.float32), jnp.asarray(map_b, jnp.float32)
  if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
    raise ValueError(f"expected (B, H, W) maps with the same B, got {a.shape} and {b.shape}")
  if size is None:
    size = (max(a.shape[1], b.shape[1]), max(a.shape[2], b.shape[2]))
  size = (int(size[0]), int(size[1]))
  p = size[0] * size[1]
  k = max(1, min(p, int(math.ceil(top_frac * p - 1e-9))))
  return _cam_agreement_kernel(a, b, size=size, k=k)


@functools.partial(jax.jit, static_argnames=("size", "k"))
def _cam_agreement_kernel(a, b, *, size, k):
  a = _resize(a, size).reshape(a.shape[0], -1)
  b = _resize(b, size).reshape(b.shape[0], -1)
  p = a.shape[1]

  def one(u, v):
    rho = _pearson(_avg_ranks(u), _avg_ranks(v))
    _, iu = jax.lax.top_k(u, k)
    _, iv = jax.lax.top_k(v, k)
    mu = jnp.zeros((p,), bool).at[iu].set(True)
    mv = jnp.zeros((p,), bool).at[iv].set(True)
    iou = jnp.sum(mu & mv) / jnp.sum(mu | mv)
    nu, nv = jnp.linalg.norm(u), jnp.linalg.norm(v)
    cos = jnp.where(nu * nv > 0, jnp.dot(u, v) / jnp.where(nu * nv > 0, nu * nv, 1.0), jnp.nan)
    return rho, iou.astype(jnp.float32), cos

  rho, iou, cos = jax.vmap(one)(a, b)
  return {"spearman": rho, "iou_top": iou, "cosine": cos}


def cam_preference(cam_teacher, cam_distilled, cam_independent) -> jax.Array:
  """Ojha et al. (2023) localisation metric: share of images with
  ``cos(CAM_T, CAM_distilled) > cos(CAM_T, CAM_independent)`` (50 % is chance).

  Maps are resized to the teacher's resolution first. Returns a scalar in ``[0, 1]``.
  """
  t = jnp.asarray(cam_teacher, jnp.float32)
  size = t.shape[1:]
  cd = cam_agreement(t, cam_distilled, size=size)["cosine"]
  ci = cam_agreement(t, cam_independent, size=size)["cosine"]
  return jnp.mean((jnp.nan_to_num(cd, nan=-2.0) > jnp.nan_to_num(ci, nan=-2.0)).astype(jnp.float32))
