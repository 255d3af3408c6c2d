"""On-device batch augmentation: pure, jittable JAX functions.

All functions take a whole batch (B, H, W, C). Python-level arguments (`pad`,
`flip`, `info`, mean/std) are static: close over them or mark them static
when jitting.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from kdjax.data.registry import DatasetInfo


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
  if pad < 0:
    raise ValueError(f'pad must be >= 0, got {pad}.')
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
  view), the layout of :class:`kdjax.methods.base.ViewSpec`. Needs square images.
  """
  images = jnp.asarray(images)
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError(f"rotation views need a (B, H, W, C) batch of square images, got shape "
                     f"{images.shape}.")
  if not 1 <= num_views <= 4:
    raise ValueError(f"rotation views: num_views must be in 1..4, got {num_views}.")
  flip_rng, rng = jax.random.split(rng)
  x = random_flip(images, flip_rng)
  views = jnp.stack([jnp.rot90(x, k, axes=(1, 2)) for k in range(num_views)], axis=1)
  return transform(views.reshape((-1,) + images.shape[1:]), rng)


def train_transform(info: DatasetInfo, images, rng, *, crop_pad: int = 4,
                    flip: bool = True):
  """Training-time batch transform -> float32 normalized images.

  In-memory datasets (CIFAR, (Fashion-)MNIST): random crop (zero padding
  `crop_pad`; 0 disables) + random horizontal flip (if `flip`) + normalize.
  ImageNet: the host stream has already cropped and flipped, so only normalize.
  """
  if info.in_memory:
    images = random_crop_flip(images, rng, pad=crop_pad, flip=flip)
  return normalize(images, info.mean, info.std)


def eval_transform(info: DatasetInfo, images):
  """Evaluation-time batch transform: normalize only."""
  return normalize(images, info.mean, info.std)
