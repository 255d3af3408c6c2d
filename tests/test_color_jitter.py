"""Train-time colour jitter (kdjax.data.augment): determinism, per-op bounds, config selection."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.ojha import jitter_teacher
from kdjax.analysis import invariance
from kdjax.data import augment, registry
from kdjax.errors import UserError

KEY = jax.random.PRNGKey(3)


def _imgs(n=64, lo=0.0, hi=1.0, c=3, hw=6, seed=0):
  return jax.random.uniform(jax.random.PRNGKey(seed), (n, hw, hw, c), minval=lo, maxval=hi)


def test_deterministic_per_key_and_jit_equals_eager():
  x = _imgs()
  a = augment.color_jitter(x, KEY, **augment.OJHA_JITTER)
  np.testing.assert_array_equal(a, augment.color_jitter(x, KEY, **augment.OJHA_JITTER))
  jitted = jax.jit(lambda im, k: augment.color_jitter(im, k, **augment.OJHA_JITTER))
  # float32 op-order rounding: 4 ops (HSV round trip with divisions), a few ulps of 1 each
  np.testing.assert_allclose(jitted(x, KEY), a, atol=1e-5)
  b = augment.color_jitter(x, jax.random.PRNGKey(4), **augment.OJHA_JITTER)
  assert float(jnp.abs(a - b).max()) > 0.05
  assert a.dtype == jnp.float32 and float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_same_draws_as_the_evaluation_probe():
  # The probe (kdjax.analysis.invariance) and the train-time jitter share the draw layout, so a
  # model trained with the jitter is evaluated under the same distribution of transforms.
  x = _imgs(16)
  for order in (True, False):
    np.testing.assert_allclose(
      augment.color_jitter(x, KEY, random_order=order, **augment.OJHA_JITTER),
      invariance.color_jitter(x, KEY, random_order=order, **augment.OJHA_JITTER),
      atol=1e-5,
    )


def test_brightness_scales_each_image_by_one_factor_in_bounds():
  x = _imgs(256, 0.05, 0.5)  # 1.4 * 0.5 < 1: no clipping
  y = augment.color_jitter(x, KEY, brightness=0.4)
  ratio = np.asarray(y / x).reshape(256, -1)
  np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-5)
  f = ratio[:, 0]
  assert f.min() >= 0.6 - 1e-6 and f.max() <= 1.4 + 1e-6
  assert f.min() < 0.7 and f.max() > 1.3  # spans the range (P(fail) ~ 0.875^256)


def test_contrast_keeps_mean_grey_and_scales_spread():
  x = _imgs(128, 0.3, 0.7)  # no clipping for factors in [0.6, 1.4]
  y = augment.color_jitter(x, KEY, contrast=0.4)
  gx, gy = (np.asarray(augment._gray(v)).reshape(128, -1) for v in (x, y))  # pylint: disable=protected-access
  # grey weights sum to 0.9999 (torchvision's 0.2989 + 0.587 + 0.114): the mean moves by
  # (1 - c) * 1e-4 * mean <= 0.4 * 1e-4 * 0.7 ~ 3e-5
  np.testing.assert_allclose(gy.mean(1), gx.mean(1), atol=5e-5)
  f = gy.std(1) / gx.std(1)
  assert f.min() >= 0.6 - 1e-4 and f.max() <= 1.4 + 1e-4 and f.max() - f.min() > 0.5


def test_saturation_keeps_grey_and_hue_keeps_value_and_saturation():
  x = _imgs(64, 0.2, 0.8)
  y = augment.color_jitter(x, KEY, saturation=0.4)
  # grey moves by (1 - s) * 1e-4 * grey <= 3.2e-5 (grey weights sum to 0.9999)
  np.testing.assert_allclose(augment._gray(y), augment._gray(x), atol=5e-5)  # pylint: disable=protected-access
  assert float(jnp.abs(y - x).max()) > 0.01
  z = augment.color_jitter(x, KEY, hue=0.2)
  hx, sx, vx = augment._rgb_to_hsv(x)  # pylint: disable=protected-access
  hz, sz, vz = augment._rgb_to_hsv(z)  # pylint: disable=protected-access
  np.testing.assert_allclose(vz, vx, atol=1e-5)
  np.testing.assert_allclose(sz, sx, atol=1e-4)
  d = np.asarray(jnp.mod(hz - hx + 0.5, 1.0) - 0.5).reshape(64, -1)  # circular hue shift
  np.testing.assert_allclose(d, d[:, :1] * np.ones_like(d), atol=1e-3)
  assert np.abs(d).max() <= 0.2 + 1e-3 and np.abs(d[:, 0]).max() > 0.15


def test_grayscale_saturation_and_hue_are_identity():
  x = _imgs(8, c=1)
  np.testing.assert_array_equal(augment.color_jitter(x, KEY, saturation=0.9, hue=0.5), x)
  assert float(jnp.abs(augment.color_jitter(x, KEY, brightness=0.4) - x).max()) > 0.01


def test_magnitudes_from_config_and_errors():
  assert augment.jitter_magnitudes(None) is None
  assert augment.jitter_magnitudes({}) is None
  assert augment.jitter_magnitudes((0, 0, 0, 0)) is None
  cd = ml_collections.ConfigDict(dict(brightness=0.4, hue=0.2))
  assert augment.jitter_magnitudes(cd) == (0.4, 0.0, 0.0, 0.2)
  for bad in ({"brightnes": 0.4}, (0.4, 0.4), (-0.1, 0, 0, 0), (0, 0, 0, 0.6), "strong"):
    with pytest.raises(UserError):
      augment.jitter_magnitudes(bad)


def test_dataset_train_transform_selects_jitter_and_keeps_crop_flip_draws():
  info = registry.info("cifar10")
  raw = (np.asarray(_imgs(8, hw=32)) * 255).astype(np.uint8)
  rng = jax.random.PRNGKey(11)
  plain = ml_collections.ConfigDict(dict(crop_pad=4, flip=True))  # no color_jitter key
  jit_cfg = ml_collections.ConfigDict(
    dict(crop_pad=4, flip=True, color_jitter=dict(augment.OJHA_JITTER))
  )
  p = augment.dataset_train_transform(info, plain)(raw, rng)
  np.testing.assert_array_equal(p, augment.train_transform(info, raw, rng, crop_pad=4, flip=True))
  j = augment.dataset_train_transform(info, jit_cfg)(raw, rng)
  # The jittered batch is the same crop/flip, jittered with the salted key, then normalised.
  cropped = augment.random_crop_flip(raw, rng, pad=4, flip=True)
  want = augment.normalize(
    augment.color_jitter(
      cropped.astype(np.float32) / 255.0,
      jax.random.fold_in(rng, augment._JITTER_SALT),  # pylint: disable=protected-access
      **augment.OJHA_JITTER,
    )
    * 255.0,
    info.mean,
    info.std,
  )
  np.testing.assert_allclose(j, want, atol=1e-5)
  assert float(jnp.abs(j - p).max()) > 0.1
  step = jax.jit(augment.dataset_train_transform(info, jit_cfg))
  np.testing.assert_allclose(step(raw, rng), j, atol=1e-4)  # ~1e-6 x 1/std (normalised units)


def test_jitter_teacher_config_selects_the_papers_jitter():
  c = jitter_teacher.get_config("imagenet")
  assert c.model == "resnet50_imagenet" and c.dataset.name == "imagenet2012"
  assert augment.jitter_magnitudes(c.dataset.color_jitter) == (0.4, 0.4, 0.4, 0.2)
  assert (
    augment.jitter_magnitudes(jitter_teacher.get_config("imagenet,control").dataset.color_jitter)
    is None
  )
  s = jitter_teacher.get_config("cifar100,resnet56")
  assert s.model == "resnet56" and augment.jitter_magnitudes(s.dataset.color_jitter) is not None
  with pytest.raises(ValueError):
    jitter_teacher.get_config("mnist")
