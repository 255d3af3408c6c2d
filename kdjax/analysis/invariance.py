"""Colour-jitter invariance (Ojha et al., NeurIPS 2023, methods.md §6.3.3).

:func:`color_jitter` reproduces torchvision ``ColorJitter(brightness, contrast, saturation, hue)``
on float images in ``[0, 1]`` (or uint8), per example:

* factors ``b, c, s ~ U[max(0, 1 − m), 1 + m]`` for magnitudes ``m`` (a magnitude of 0 skips the
  transform, as torchvision does), hue shift ``h ~ U[−m_h, m_h]`` with ``0 ≤ m_h ≤ 0.5``;
* the four transforms are applied in a random order (torchvision's ``randperm(4)``), drawn per
  example (``random_order=False`` fixes the order brightness, contrast, saturation, hue);
* torchvision.transforms.functional semantics on float tensors:
  brightness ``clip(b · x, 0, 1)``; contrast ``clip(c · x + (1 − c) · mean(gray(x)), 0, 1)`` with
  the mean over the whole image; saturation ``clip(s · x + (1 − s) · gray(x), 0, 1)`` with
  ``gray = 0.2989 R + 0.587 G + 0.114 B``; hue: RGB → HSV, ``H ← (H + h) mod 1``, HSV → RGB (the
  ``_rgb2hsv`` / ``_hsv2rgb`` formulas of torchvision).

**Grayscale** (``C = 1``) images get brightness and contrast only: saturation and hue are the
identity on one channel (torchvision returns 1-channel images unchanged there), so their random
factors are drawn but have no effect.

**uint8** input is converted to ``x / 255``, jittered, and converted back with rounding
(torchvision truncates instead; the difference is at most one grey level).

:func:`prediction_consistency` is the paper's agreement score: the fraction of images whose
top-1 prediction is unchanged by the jitter.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import checks
from kdjax.data import augment
from kdjax.analysis._predict import predict_classes

__all__ = [
  "color_jitter",
  "adjust_brightness",
  "adjust_contrast",
  "adjust_saturation",
  "adjust_hue",
  "rgb_to_grayscale",
  "prediction_consistency",
  "transform_consistency",
]

_KEYS = ("brightness", "contrast", "saturation", "hue")


# --------------------------------------------------------------------------------------------
# single-image ops on (H, W, C) floats in [0, 1] (torchvision.transforms.functional_tensor)
# --------------------------------------------------------------------------------------------


def rgb_to_grayscale(img: jax.Array) -> jax.Array:
  """``0.2989 R + 0.587 G + 0.114 B`` keeping a channel axis of size 1 (1-channel: unchanged)."""
  if img.shape[-1] == 1:
    return img
  r, g, b = img[..., 0], img[..., 1], img[..., 2]
  return (0.2989 * r + 0.587 * g + 0.114 * b)[..., None].astype(img.dtype)


def _blend(a, b, ratio):
  return jnp.clip(ratio * a + (1.0 - ratio) * b, 0.0, 1.0)


@jax.jit
def adjust_brightness(img, factor):
  """``clip(factor · img, 0, 1)`` (torchvision ``adjust_brightness``)."""
  return _blend(img, jnp.zeros_like(img), factor)


@jax.jit
def adjust_contrast(img, factor):
  """Blend with the mean grey level of the image (torchvision ``adjust_contrast``)."""
  mean = jnp.mean(rgb_to_grayscale(img), axis=(-3, -2, -1), keepdims=True)
  return _blend(img, mean, factor)


@jax.jit
def adjust_saturation(img, factor):
  """Blend with the grayscale image (torchvision ``adjust_saturation``); 1-channel: identity."""
  if img.shape[-1] == 1:
    return img
  return _blend(img, rgb_to_grayscale(img), factor)


@jax.jit
def adjust_hue(img, hue_factor):
  """Shift the hue by ``hue_factor ∈ [−0.5, 0.5]`` in HSV space (torchvision ``adjust_hue``).

  1-channel images are returned unchanged.
  """
  if img.shape[-1] == 1:
    return img
  h, s, v = augment._rgb_to_hsv(img)
  h = jnp.mod(h + hue_factor, 1.0)
  return augment._hsv_to_rgb(h, s, v).astype(img.dtype)


# --------------------------------------------------------------------------------------------
# batched random jitter
# --------------------------------------------------------------------------------------------


def _check_magnitudes(brightness, contrast, saturation, hue):
  for name, m in zip(_KEYS, (brightness, contrast, saturation, hue)):
    if isinstance(m, jax.core.Tracer):
      raise ValueError(f"{name} must be a concrete Python number (static), got a tracer")
  b, c, s = (
    checks.nonnegative(f"{name} magnitude", m)
    for name, m in zip(_KEYS, (brightness, contrast, saturation))
  )
  return b, c, s, checks.in_range("hue magnitude", hue, 0, 0.5)


@functools.partial(
  jax.jit, static_argnames=("brightness", "contrast", "saturation", "hue", "random_order")
)
def _jitter_float(images, rng, *, brightness, contrast, saturation, hue, random_order):
  b = images.shape[0]
  # One uniform draw per example: 3 factors, the hue shift and 4 keys of the random order
  # (argsort of i.i.d. uniforms is a uniformly random permutation, like torch.randperm).
  u = jax.random.uniform(rng, (b, 8), images.dtype)

  def factors(col, m):
    lo = max(0.0, 1.0 - m)
    return lo + (1.0 + m - lo) * u[:, col]

  fb, fc, fs = factors(0, brightness), factors(1, contrast), factors(2, saturation)
  fh = -hue + 2.0 * hue * u[:, 3]
  if random_order:
    perms = jnp.argsort(u[:, 4:], axis=1)
  else:
    perms = jnp.broadcast_to(jnp.arange(4), (b, 4))

  # Brightness, contrast and saturation are all blends ``clip(f · x + (1 − f) · target)`` with
  # target 0, the mean grey level or the grey image, so each of the 4 positions of the random
  # order costs one blend plus (if hue is active) one hue shift, selected per example; this is
  # the same computation as a per-example ``lax.switch`` but much cheaper to compile.
  active = jnp.asarray([brightness > 0, contrast > 0, saturation > 0, hue > 0])

  def one(img, perm, b_, c_, s_, h_):
    for pos in range(4):
      k = perm[pos]
      gray = rgb_to_grayscale(img)
      target = jnp.where(k == 0, 0.0, jnp.where(k == 1, jnp.mean(gray), gray))
      f = jnp.stack([b_, c_, s_, jnp.ones_like(b_)])[k]
      blended = _blend(img, target, f)
      if img.shape[-1] == 1:  # saturation / hue are the identity on one channel
        blended = jnp.where(k >= 2, img, blended)
      out = jnp.where(k == 3, adjust_hue(img, h_), blended) if hue > 0 else blended
      img = jnp.where(active[k], out, img)
    return img

  return jax.vmap(one)(images, perms, fb, fc, fs, fh)


def color_jitter(
  images,
  rng,
  *,
  brightness: float = 0.0,
  contrast: float = 0.0,
  saturation: float = 0.0,
  hue: float = 0.0,
  random_order: bool = True,
):
  """Per-example torchvision-style ``ColorJitter`` on a batch (see the module docstring).

  Args:
    images: ``(B, H, W, C)`` float images in ``[0, 1]`` or uint8 in ``[0, 255]``; ``C ∈ {1, 3}``.
    rng: PRNG key (the same key gives the same output).
    brightness: magnitude ``m_b ≥ 0``: factor ``~ U[max(0, 1 − m_b), 1 + m_b]``.
    contrast: magnitude ``m_c ≥ 0``.
    saturation: magnitude ``m_s ≥ 0`` (no effect when ``C = 1``).
    hue: magnitude ``m_h ∈ [0, 0.5]``: shift ``~ U[−m_h, m_h]`` (no effect when ``C = 1``).
    random_order: apply the four transforms in a random per-example order (torchvision).

  Returns:
    Jittered images, same shape and dtype. With all magnitudes 0 the input is returned
    unchanged. Magnitudes are static: jit with them as static arguments (this function is
    already jitted internally).
  """
  m = _check_magnitudes(brightness, contrast, saturation, hue)
  images = jnp.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"expected (B, H, W, C) images with C in (1, 3), got {images.shape}")
  if not any(m):
    return images
  is_uint8 = images.dtype == jnp.uint8
  x = images.astype(jnp.float32) / 255.0 if is_uint8 else images
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
  out = _jitter_float(
    x,
    rng,
    brightness=m[0],
    contrast=m[1],
    saturation=m[2],
    hue=m[3],
    random_order=bool(random_order),
  )
  if is_uint8:
    out = jnp.clip(jnp.round(out * 255.0), 0, 255).astype(jnp.uint8)
  return out


# --------------------------------------------------------------------------------------------
# agreement score
# --------------------------------------------------------------------------------------------


def _to01(images):
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images


def transform_consistency(
  apply_fn: Callable,
  images01,
  rng,
  *,
  transform: Callable,
  normalize_fn: Optional[Callable] = None,
  n_views: int = 1,
  batch_size: Optional[int] = None,
  require_all: bool = False,
) -> float:
  """Agreement score under an arbitrary random transform ``transform(images01, key)``.

  The prediction on each transformed view is compared with the prediction on the untransformed
  image. View ``v`` of batch ``j`` uses ``fold_in(fold_in(rng, v), j)``.

  Args:
    apply_fn: ``x -> logits`` or ``x -> (logits, ...)`` on model inputs.
    images01: ``(N, H, W, C)`` images in ``[0, 1]`` (uint8 is converted).
    rng: PRNG key.
    transform: ``(images01_batch, key) -> images01_batch``.
    normalize_fn: maps ``[0, 1]`` images to model inputs, e.g.
      ``lambda x: kdjax.data.augment.normalize(x * 255.0, info.mean, info.std)``; None = identity.
    n_views: independent transformed views per image.
    batch_size: examples per batch (default: all).
    require_all: count an image as consistent only if all views agree; otherwise (default) the
      score is the mean over (image, view) pairs.

  Returns:
    Python float in ``[0, 1]``.
  """
  n_views = checks.integer("n_views", n_views, minimum=1)
  x = _to01(images01)
  n = x.shape[0]
  bs = n if batch_size is None else int(batch_size)

  def predict(xs):
    return predict_classes(apply_fn, None, xs, batch_size=bs, preprocess=normalize_fn)

  base = predict(x)
  agree = []
  for j, i in enumerate(range(0, n, bs)):
    xb = x[i : i + bs]
    views = [
      predict(transform(xb, jax.random.fold_in(jax.random.fold_in(rng, v), j))) == base[i : i + bs]
      for v in range(int(n_views))
    ]
    agree.append(np.stack(views, axis=1))
  a = np.concatenate(agree)
  return float(np.mean(a.all(axis=1)) if require_all else np.mean(a))


def prediction_consistency(
  apply_fn: Callable,
  images01,
  rng,
  *,
  magnitudes: Union[Mapping[str, float], Sequence[float]],
  normalize_fn: Optional[Callable] = None,
  n_views: int = 1,
  batch_size: Optional[int] = None,
  require_all: bool = False,
  random_order: bool = True,
) -> float:
  """Ojha et al.'s colour agreement score: fraction of images whose prediction is unchanged.

  Args:
    apply_fn: ``x -> logits`` (or ``(logits, taps)``), e.g.
      ``lambda x: model.apply(variables, x, train=False)``.
    images01: ``(N, H, W, C)`` images in ``[0, 1]`` (uint8 is converted).
    rng: PRNG key.
    magnitudes: ``{'brightness': .4, 'contrast': .4, 'saturation': .4, 'hue': .2}`` (missing keys
      are 0) or a 4-sequence in that order.
    normalize_fn: ``[0, 1]`` images -> model inputs (see :func:`transform_consistency`).
    n_views: jittered views per image.
    batch_size: examples per batch.
    require_all: see :func:`transform_consistency`.
    random_order: torchvision's random order of the four transforms.

  Returns:
    Python float in ``[0, 1]``.
  """
  if isinstance(magnitudes, Mapping):
    unknown = set(magnitudes) - set(_KEYS)
    if unknown:
      raise ValueError(f"unknown magnitude keys {sorted(unknown)}; expected {_KEYS}")
    mags = {k: float(magnitudes.get(k, 0.0)) for k in _KEYS}
  else:
    if len(magnitudes) != 4:
      raise ValueError(f"magnitudes must have 4 entries {_KEYS}, got {magnitudes!r}")
    mags = dict(zip(_KEYS, map(float, magnitudes)))
  _check_magnitudes(*mags.values())

  def transform(xb, key):
    return color_jitter(xb, key, random_order=random_order, **mags)

  return transform_consistency(
    apply_fn,
    images01,
    rng,
    transform=transform,
    normalize_fn=normalize_fn,
    n_views=n_views,
    batch_size=batch_size,
    require_all=require_all,
  )
