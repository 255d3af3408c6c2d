"""On-device batch augmentation: pure, jittable JAX functions.

All functions take a whole batch (B, H, W, C). Python-level arguments (`pad`,
`flip`, `info`, mean/std) are static: close over them or mark them static
when jitting.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from kdjax import checks
from kdjax.data.registry import DatasetInfo
from kdjax.errors import UserError


def normalize(images, mean: Sequence[float], std: Sequence[float]):
  """float32 ((x / 255) - mean) / std per channel.

  `images` are uint8 or float in 0..255 pixel units; mean/std in [0, 1] units.
  """
  x = jnp.asarray(images).astype(jnp.float32) * (1.0 / 255.0)
  mean = jnp.asarray(mean, jnp.float32)
  inv_std = 1.0 / jnp.asarray(std, jnp.float32)
  return (x - mean) * inv_std


def random_crop(images, rng, *, pad: int = 4):
  """Per-example random HxW crop of the zero-padded batch (torchvision
  `RandomCrop(size, padding=pad)`): offsets uniform in [0, 2*pad] per axis."""
  pad = checks.integer('pad', pad, minimum=0)
  if pad == 0:
    return images
  b, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(rng, (b, 2), 0, 2 * pad + 1)

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

  return jax.vmap(crop)(padded, offsets)


def random_flip(images, rng, *, p: float = 0.5):
  """Per-example horizontal flip with probability `p`."""
  flips = jax.random.bernoulli(rng, p, (images.shape[0],))
  return jnp.where(flips[:, None, None, None], images[:, :, ::-1, :], images)


def random_crop_flip(images, rng, *, pad: int = 4, flip: bool = True):
  """Random crop with zero padding `pad`, then random horizontal flip (p=0.5).

  Same dtype and shape as `images`. `pad=0, flip=False` is the identity.
  """
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f'expected a (B, H, W, C) batch, got shape {images.shape}.')
  crop_rng, flip_rng = jax.random.split(rng)
  out = random_crop(images, crop_rng, pad=pad)
  if flip:
    out = random_flip(out, flip_rng)
  return out


def rotation_views(images, rng, transform, *, num_views: int = 4):
  """SSKD's rotated views (xuguodong03/SSKD ``cifar.py``): a random horizontal flip per example
  (p = 0.5, shared by its views), then the rotations by ``k · 90°`` counter-clockwise
  (``np.rot90`` of the HWC image, ``k = 0 .. num_views − 1``), every view through
  ``transform(x, rng)`` (independent random crops: SSKD transforms each view separately).

  Returns ``(num_views · B, H, W, C)`` with row ``b · num_views + k`` (``k = 0``: the normal
  view), the layout of :class:`kdjax.methods.registry.ViewSpec`. Needs square images.
  """
  images = jnp.asarray(images)
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError(
      f"rotation views need a (B, H, W, C) batch of square images, got shape {images.shape}."
    )
  num_views = checks.integer('rotation views: num_views', num_views, minimum=1, maximum=4)
  flip_rng, rng = jax.random.split(rng)
  x = random_flip(images, flip_rng)
  views = jnp.stack([jnp.rot90(x, k, axes=(1, 2)) for k in range(num_views)], axis=1)
  return transform(views.reshape((-1,) + images.shape[1:]), rng)


# --------------------------------------------------------------------------------------------
# Colour jitter (torchvision ColorJitter), for training (Ojha et al.'s jitter-invariant teacher)
# --------------------------------------------------------------------------------------------

JITTER_KEYS = ('brightness', 'contrast', 'saturation', 'hue')
# Ojha et al., NeurIPS 2023 (methods.md 6.3.3): the colour-jitter teacher's augmentation,
# torchvision ColorJitter(0.4, 0.4, 0.4, 0.2).
OJHA_JITTER = {'brightness': 0.4, 'contrast': 0.4, 'saturation': 0.4, 'hue': 0.2}
# Salt folded into the step key for the jitter draws, so that the crop/flip draws (which use the
# step key itself) are the same with and without jitter.
_JITTER_SALT = 0x6A17


def jitter_magnitudes(spec) -> tuple[float, float, float, float] | None:
  """``(brightness, contrast, saturation, hue)`` magnitudes from a config value, or None (off).

  ``spec``: None, a mapping with keys among :data:`JITTER_KEYS` (missing keys are 0; e.g. a
  ``ConfigDict``), or a 4-sequence in that order. All-zero magnitudes mean off (None).
  Raises :class:`UserError` for unknown keys, negative magnitudes or a hue above 0.5.
  """
  if spec is None:
    return None
  if hasattr(spec, 'keys'):
    d = dict(spec.items())
    unknown = sorted(set(d) - set(JITTER_KEYS))
    if unknown:
      raise UserError(
        f'dataset.color_jitter: unknown keys {unknown}; use {list(JITTER_KEYS)} '
        '(e.g. dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)).'
      )
    vals = [d.get(k, 0.0) for k in JITTER_KEYS]
  else:
    try:
      vals = list(spec)
    except TypeError:
      vals = None
    if vals is None or len(vals) != 4:
      raise UserError(
        f'dataset.color_jitter must be None, a dict with keys {list(JITTER_KEYS)} '
        f'or 4 numbers (brightness, contrast, saturation, hue), got {spec!r}.'
      )
  m = tuple(checks.nonnegative(f'dataset.color_jitter.{k}', v) for k, v in zip(JITTER_KEYS, vals))
  checks.in_range('dataset.color_jitter.hue (a shift of the hue circle)', m[3], 0, 0.5)
  return m if any(m) else None


def _gray(img):
  """``0.2989 R + 0.587 G + 0.114 B`` with a channel axis of 1 (torchvision rgb_to_grayscale)."""
  if img.shape[-1] == 1:
    return img
  return (0.2989 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2])[..., None]


def _rgb_to_hsv(img):
  r, g, b = img[..., 0], img[..., 1], img[..., 2]
  maxc = jnp.max(img, axis=-1)
  minc = jnp.min(img, axis=-1)
  eqc = maxc == minc
  cr = maxc - minc
  ones = jnp.ones_like(maxc)
  s = cr / jnp.where(eqc, ones, maxc)
  crd = jnp.where(eqc, ones, cr)
  rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
  hr = (maxc == r) * (bc - gc)
  hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
  hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
  h = jnp.mod((hr + hg + hb) / 6.0 + 1.0, 1.0)
  return h, s, maxc


def _hsv_to_rgb(h, s, v):
  i = jnp.floor(h * 6.0)
  f = h * 6.0 - i
  i = i.astype(jnp.int32) % 6
  p = jnp.clip(v * (1.0 - s), 0.0, 1.0)
  q = jnp.clip(v * (1.0 - s * f), 0.0, 1.0)
  t = jnp.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
  r = jnp.choose(i, [v, q, p, p, t, v], mode='clip')
  g = jnp.choose(i, [t, v, v, q, p, p], mode='clip')
  b = jnp.choose(i, [p, p, t, v, v, q], mode='clip')
  return jnp.stack([r, g, b], axis=-1)


def _shift_hue(img, shift):
  """torchvision ``adjust_hue`` of one (H, W, 3) image in [0, 1] by ``shift`` (mod 1)."""
  h, s, v = _rgb_to_hsv(img)
  return _hsv_to_rgb(jnp.mod(h + shift, 1.0), s, v)


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
  """Per-example torchvision ``ColorJitter(brightness, contrast, saturation, hue)`` of a batch.

  ``images``: ``(B, H, W, C)``, ``C`` in {1, 3}, float in [0, 1] (returns float32 in [0, 1]).
  Factors ``b, c, s ~ U[max(0, 1 - m), 1 + m]``, hue shift ``h ~ U[-m_h, m_h]`` per example,
  applied in a random per-example order (torchvision's ``randperm(4)``; ``random_order=False``:
  brightness, contrast, saturation, hue). torchvision's float-tensor formulas:
  brightness ``clip(b x)``; contrast ``clip(c x + (1 - c) mean(gray(x)))`` (mean over the image);
  saturation ``clip(s x + (1 - s) gray(x))``; hue: RGB -> HSV, ``H <- (H + h) mod 1`` -> RGB.
  One channel: saturation and hue are the identity (as torchvision). A magnitude of 0 skips its
  transform. Magnitudes are static Python numbers; the same ``rng`` gives the same output.
  (Same semantics as :func:`kdjax.analysis.invariance.color_jitter`, the evaluation probe.)
  """
  mags = jitter_magnitudes((brightness, contrast, saturation, hue))
  images = jnp.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(
      f'color_jitter expects (B, H, W, C) images with C in (1, 3), got shape {images.shape}.'
    )
  x = images.astype(jnp.float32)
  if mags is None:
    return x
  return _jitter(x, rng, mags=mags, random_order=bool(random_order))


@functools.partial(jax.jit, static_argnames=('mags', 'random_order'))
def _jitter(x, rng, *, mags, random_order):
  mb, mc, ms, mh = mags
  n = x.shape[0]
  u = jax.random.uniform(rng, (n, 8), jnp.float32)

  def factor(col, m):
    lo = max(0.0, 1.0 - m)
    return lo + (1.0 + m - lo) * u[:, col]

  fb, fc, fs = factor(0, mb), factor(1, mc), factor(2, ms)
  fh = -mh + 2.0 * mh * u[:, 3]
  # argsort of i.i.d. uniforms: a uniformly random permutation per example.
  perms = jnp.argsort(u[:, 4:], axis=1) if random_order else jnp.broadcast_to(jnp.arange(4), (n, 4))
  rgb = x.shape[-1] == 3
  active = jnp.asarray([mb > 0, mc > 0, ms > 0 and rgb, mh > 0 and rgb])

  def one(img, perm, b_, c_, s_, h_):
    # Brightness, contrast and saturation are blends clip(f x + (1 - f) target) with target 0,
    # the mean grey level or the grey image: one blend per position, selected per example.
    for pos in range(4):
      k = perm[pos]
      gray = _gray(img)
      target = jnp.where(k == 0, 0.0, jnp.where(k == 1, jnp.mean(gray), gray))
      f = jnp.stack([b_, c_, s_, jnp.ones_like(b_)])[k]
      out = jnp.clip(f * img + (1.0 - f) * target, 0.0, 1.0)
      if rgb and mh > 0:
        out = jnp.where(k == 3, _shift_hue(img, h_), out)
      img = jnp.where(active[k], out, img)
    return img

  return jax.vmap(one)(x, perms, fb, fc, fs, fh)


def color_jitter_pixels(images, rng, magnitudes, *, random_order: bool = True):
  """:func:`color_jitter` on images in 0..255 pixel units (uint8 or float) -> float32 0..255
  (no rounding: the result goes straight to :func:`normalize`). ``magnitudes``: see
  :func:`jitter_magnitudes`; None = identity (the input as float32)."""
  m = jitter_magnitudes(magnitudes)
  x = jnp.asarray(images).astype(jnp.float32)
  if m is None:
    return x
  out = color_jitter(
    x * (1.0 / 255.0),
    rng,
    brightness=m[0],
    contrast=m[1],
    saturation=m[2],
    hue=m[3],
    random_order=random_order,
  )
  return out * 255.0


def train_transform(
  info: DatasetInfo, images, rng, *, crop_pad: int = 4, flip: bool = True, color_jitter=None
):
  """Training-time batch transform -> float32 normalized images.

  In-memory datasets (CIFAR, (Fashion-)MNIST): random crop (zero padding
  `crop_pad`; 0 disables) + random horizontal flip (if `flip`). ImageNet: the
  host stream has already cropped and flipped. Then, if `color_jitter` (see
  `jitter_magnitudes`: None/all zeros = off), torchvision-style colour jitter
  with its own key `fold_in(rng, salt)` (the crop/flip draws are unchanged),
  as in torchvision's RandomCrop, Flip, ColorJitter, ToTensor, Normalize; then
  normalize.
  """
  if info.in_memory:
    images = random_crop_flip(images, rng, pad=crop_pad, flip=flip)
  if jitter_magnitudes(color_jitter) is not None:
    images = color_jitter_pixels(images, jax.random.fold_in(rng, _JITTER_SALT), color_jitter)
  return normalize(images, info.mean, info.std)


def dataset_train_transform(info: DatasetInfo, dcfg, *, flip: bool | None = None):
  """``(images, rng) -> float images``: :func:`train_transform` with the options of a
  ``config.dataset`` block: ``crop_pad``, ``flip`` and ``color_jitter`` (read with defaults
  4 / True / None, so a config without the jitter key behaves as before). ``flip`` overrides the
  config's (view makers flip themselves: ``flip=False``)."""
  get = dcfg.get if hasattr(dcfg, 'get') else (lambda k, d=None: getattr(dcfg, k, d))
  crop_pad = int(get('crop_pad', 4))
  do_flip = bool(get('flip', True)) if flip is None else bool(flip)
  jitter = jitter_magnitudes(get('color_jitter', None))
  return lambda images, rng: train_transform(
    info, images, rng, crop_pad=crop_pad, flip=do_flip, color_jitter=jitter
  )


def eval_transform(info: DatasetInfo, images):
  """Evaluation-time batch transform: normalize only."""
  return normalize(images, info.mean, info.std)
