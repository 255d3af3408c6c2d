r"""MLKD terms: multi-level logit distillation on a weak and a strong view of every example.

Jin, Wang, Lin, "Multi-Level Logit Distillation", CVPR 2023 (Jin-Ying/
Multi-Level-Logit-Distillation ``KD_ours``; losses in :mod:`kdjax.losses.mlkd`). Four terms, all
on :data:`WEAK_STRONG_VIEWS` (row ``2b`` the weak view, ``2b + 1`` the strong view of example
``b``; the method's CE and any other term see the weak rows):

* ``mlkd_instance``: multi-temperature KD on both views (``loss_kd``), confidence-fraction
  weighted on the weak view;
* ``mlkd_batch``: the ``B × B`` prediction-Gram alignment on the weak view (``loss_bc``);
* ``mlkd_class``: the ``C × C`` class-correlation alignment on the weak view (``loss_cc``);
* ``mlkd_strong_ce``: the student's CE on the strong view (the reference's
  ``CE(z_w) + CE(z_s)``, the weak half being the method's own CE).

Preset ``mlkd``: ``0.1 · CE_w + 0.1 · CE_s + 0.9 · (instance + batch + class)`` at the
temperatures ``(4, 3, 5, 2, 6)`` (mdistiller's ``KD.LOSS`` defaults CE 0.1 / KD 0.9 and
``KD.TEMPERATURE`` 4, which the MLKD yaml files do not override). Per-pair schedules and the
published numbers: ``configs/cifar100/mlkd.py``.

**The views and what differs from the original** (``mdistiller/dataset/cifar100.py``
``get_cifar100_train_transform_strong``: weak = RandomCrop(32, 4) + flip; strong = RandomCrop +
flip + FixMatch ``RandAugment(2, 10)`` + Cutout, on PIL images):

* :func:`weak_strong_views` flips each view independently, applies :func:`rand_augment` to the
  strong view **before** the dataset's random crop (the reference crops first); every view then
  goes through the run's train transform (crop + normalise), with independent crops;
* :func:`rand_augment` is our JAX re-implementation of the 14 FixMatch ops with the reference's
  ranges (two ops drawn with replacement, a uniform magnitude each, then Cutout of side
  ``U(0, 0.5) · 32`` filled with (125, 123, 114)), following PIL's formulas (nearest-neighbour
  affine sampling with zero fill, ``Image.blend``'s truncation, the autocontrast / equalize look-up
  tables); ``tests/test_mlkd.py`` checks every op against Pillow pixel for pixel. The magnitudes
  and the Cutout corner come from JAX's generator, not Python's ``random`` / NumPy's;
* the train step runs the student once on all ``2B`` rows, so BatchNorm's batch statistics mix
  both views (the reference makes two forward passes, one per view, each updating the running
  statistics). The teacher runs in eval mode in both.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from kdjax.data import augment
from kdjax.losses import cross_entropy
from kdjax.losses import mlkd as mlkd_losses
from kdjax.methods.registry import ViewSpec, register_term

NUM_VIEWS = 2  # row 2b: weak view, row 2b + 1: strong view
CUTOUT_FILL = (125.0, 123.0, 114.0)

# FixMatch's augment_list as the reference uses it (op, min, max); the value is min + (max − min)·U.
RA_OPS = (
  ("AutoContrast", 0.0, 1.0),
  ("Brightness", 0.05, 0.95),
  ("Color", 0.05, 0.95),
  ("Contrast", 0.05, 0.95),
  ("Equalize", 0.0, 1.0),
  ("Identity", 0.0, 1.0),
  ("Posterize", 4.0, 8.0),
  ("Rotate", -30.0, 30.0),
  ("Sharpness", 0.05, 0.95),
  ("ShearX", -0.3, 0.3),
  ("ShearY", -0.3, 0.3),
  ("Solarize", 0.0, 256.0),
  ("TranslateX", -0.3, 0.3),
  ("TranslateY", -0.3, 0.3),
)
_OP = {name: i for i, (name, _, _) in enumerate(RA_OPS)}
_GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def _gray(img):
  """PIL's ``L`` conversion (ITU-R 601-2 luma), float."""
  return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def _blend(degenerate, img, factor):
  """``ImageEnhance`` (``Image.blend``): ``degenerate + factor · (img − degenerate)``, truncated
  and clipped to 0..255."""
  return jnp.clip(jnp.trunc(degenerate + factor * (img - degenerate)), 0.0, 255.0)


def _autocontrast(img):
  lo = jnp.min(img, axis=(0, 1), keepdims=True)
  hi = jnp.max(img, axis=(0, 1), keepdims=True)
  scale = 255.0 / jnp.where(hi > lo, hi - lo, 1.0)  # PIL's LUT: int(x · scale − lo · scale)
  return jnp.where(hi > lo, jnp.clip(jnp.trunc(img * scale - lo * scale), 0.0, 255.0), img)


def _equalize(img):
  """PIL ``ImageOps.equalize`` per channel of a uint8-valued HWC image: with the channel's
  histogram ``h``, ``step = (Σh − h[last non-empty level]) // 255`` and the look-up table
  ``lut[i] = (Σ_{j<i} h_j + step // 2) // step`` (identity where ``step`` is 0)."""
  c = img.shape[-1]
  q = jnp.clip(jnp.round(img), 0, 255).astype(jnp.int32).reshape(-1, c)
  levels = jnp.arange(256)
  hist = jnp.sum(q[:, :, None] == levels, axis=0)  # (C, 256): compare-and-sum, no scatter
  top = jnp.max(jnp.where(hist > 0, levels, 0), axis=-1, keepdims=True)
  last = jnp.sum(jnp.where(levels == top, hist, 0), axis=-1, keepdims=True)
  step = (jnp.sum(hist, axis=-1, keepdims=True) - last) // 255
  lut = (jnp.cumsum(hist, axis=-1) - hist + step // 2) // jnp.maximum(step, 1)
  lut = jnp.clip(lut, 0, 255)
  out = jnp.take_along_axis(lut, q.T, axis=-1).T  # (HW, C)
  out = jnp.where(step[:, 0] > 0, out, q).astype(img.dtype)
  return out.reshape(img.shape)


def _sharpness_degenerate(img):
  """PIL's SMOOTH filter ((1 1 1; 1 5 1; 1 1 1) / 13) inside, the original on the border."""
  p = jnp.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
  h, w = img.shape[:2]
  acc = sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) + 4.0 * img
  smooth = jnp.round(acc / 13.0)
  inside = jnp.zeros((h, w, 1), bool).at[1:-1, 1:-1].set(True)
  return jnp.where(inside, smooth, img)


def _affine_sample(img, m):
  """PIL ``Image.transform(AFFINE, m)`` / ``rotate``: output pixel centre ``(x, y)`` reads the
  input at ``(a x + b y + c, d x + e y + f)``, nearest neighbour, zero outside."""
  h, w = img.shape[:2]
  yc, xc = jnp.meshgrid(jnp.arange(h) + 0.5, jnp.arange(w) + 0.5, indexing="ij")
  xi = jnp.floor(m[0] * xc + m[1] * yc + m[2]).astype(jnp.int32)
  yi = jnp.floor(m[3] * xc + m[4] * yc + m[5]).astype(jnp.int32)
  ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
  out = img[jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)]
  return jnp.where(ok[..., None], out, 0.0)


def _affine_matrix(op, v, h, w):
  """The inverse affine map of geometric op ``op`` at value ``v`` (identity otherwise)."""
  a = -v * math.pi / 180.0  # PIL rotate: angle = −radians(v), about the centre
  cx, cy = w / 2.0, h / 2.0
  cos, sin = jnp.cos(a), jnp.sin(a)
  rot = jnp.stack([cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy])
  one, zero = jnp.ones_like(v), jnp.zeros_like(v)
  mats = {
    "Rotate": rot,
    "ShearX": jnp.stack([one, v, zero, zero, one, zero]),
    "ShearY": jnp.stack([one, zero, zero, v, one, zero]),
    "TranslateX": jnp.stack([one, zero, v * w, zero, one, zero]),
    "TranslateY": jnp.stack([one, zero, zero, zero, one, v * h]),
  }
  ident = jnp.stack([one, zero, zero, zero, one, zero])
  out = ident
  for name, mat in mats.items():
    out = jnp.where(op == _OP[name], mat, out)
  return out


def _apply_op(img, op, u):
  """One FixMatch op (index ``op`` into :data:`RA_OPS`) with ``u ~ U(0, 1)`` on an HWC float
  image in 0..255."""
  lo = jnp.asarray([r[1] for r in RA_OPS], img.dtype)[op]
  hi = jnp.asarray([r[2] for r in RA_OPS], img.dtype)[op]
  v = lo + (hi - lo) * u
  h, w = img.shape[:2]
  gray = _gray(img)[..., None]
  bits = jnp.maximum(jnp.floor(v), 1.0)
  keep = 2.0 ** (8.0 - bits)
  colour = {
    "AutoContrast": _autocontrast(img),
    "Brightness": _blend(jnp.zeros_like(img), img, v),
    "Color": _blend(jnp.round(gray), img, v),
    "Contrast": _blend(jnp.round(jnp.mean(jnp.round(gray))), img, v),
    "Equalize": _equalize(img),
    "Identity": img,
    "Posterize": jnp.floor(img / keep) * keep,
    "Sharpness": _blend(_sharpness_degenerate(img), img, v),
    "Solarize": jnp.where(img < v, img, 255.0 - img),
  }
  out = _affine_sample(img, _affine_matrix(op, v, h, w))  # identity for the colour ops
  for name, res in colour.items():
    out = jnp.where(op == _OP[name], res, out)
  return jnp.round(out)  # PIL keeps uint8 pixels between ops


def _cutout(img, r):
  """FixMatch ``Cutout(img, U(0, 0.5))``: a square of side ``v = U·0.5·W`` at ``x0 = int(max(0,
  c − v/2))`` (``c`` from ``np.random.uniform(W)``, i.e. U(1, W)), clipped, filled grey.
  ``r``: three U(0, 1) draws (side, x, y)."""
  h, w = img.shape[:2]
  side = r[0] * 0.5 * w
  cx = 1.0 + r[1] * (w - 1.0)
  cy = 1.0 + r[2] * (h - 1.0)
  x0 = jnp.floor(jnp.maximum(0.0, cx - side / 2.0))
  y0 = jnp.floor(jnp.maximum(0.0, cy - side / 2.0))
  x1, y1 = jnp.minimum(w, x0 + side), jnp.minimum(h, y0 + side)
  ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  box = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1) & (side > 0)
  return jnp.where(box[..., None], jnp.asarray(CUTOUT_FILL, img.dtype), img)


def rand_augment(images, rng, *, num_ops: int = 2):
  """FixMatch ``RandAugment(n=2, m=10)`` + Cutout as MLKD's strong view uses it, per example:
  ``num_ops`` ops drawn uniformly with replacement from :data:`RA_OPS`, each with a uniform
  value in its range, then Cutout. ``images``: ``(B, H, W, 3)`` uint8 or float pixels 0..255;
  returns float32 pixels 0..255."""
  x = jnp.asarray(images).astype(jnp.float32)
  b = x.shape[0]
  k_op, k_u, k_cut = jax.random.split(rng, 3)
  ops = jax.random.randint(k_op, (b, num_ops), 0, len(RA_OPS))
  us = jax.random.uniform(k_u, (b, num_ops))

  cut = jax.random.uniform(k_cut, (b, 3))

  def one(img, ops_b, us_b, cut_b):
    for i in range(num_ops):
      img = _apply_op(img, ops_b[i], us_b[i])
    return _cutout(img, cut_b)

  return jax.vmap(one)(x, ops, us, cut)


def weak_strong_views(images, rng, transform):
  """MLKD's two views, ``(2B, ...)`` rows ``2b`` (weak: flip) and ``2b + 1`` (strong: flip +
  :func:`rand_augment`), each through ``transform(x, rng)`` (the run's train augmentation
  without its flip: random crop + normalisation)."""
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"MLKD views need a (B, H, W, C) batch, got shape {images.shape}.")
  k_fw, k_fs, k_ra, k_t = jax.random.split(rng, 4)
  weak = augment.random_flip(images, k_fw).astype(jnp.float32)
  strong = rand_augment(augment.random_flip(images, k_fs), k_ra)
  x = jnp.stack([weak, strong], axis=1).reshape((-1,) + images.shape[1:])
  return transform(x, k_t)


WEAK_STRONG_VIEWS = ViewSpec("weak_strong", NUM_VIEWS, weak_strong_views)


def _split(out):
  """(weak rows, strong rows) of ``2B``-row logits."""
  z = out.logits
  if z.shape[0] % NUM_VIEWS:
    raise ValueError(f"MLKD terms need 2·B rows (weak, strong per example), got {z.shape[0]}.")
  return z[0::NUM_VIEWS], z[1::NUM_VIEWS]


T_DEFAULT = mlkd_losses.DEFAULT_TEMPERATURES
ON_WEAK_DEFAULT = mlkd_losses.DEFAULT_STRONG_ON_WEAK


@register_term("mlkd_instance", views=WEAK_STRONG_VIEWS)
def mlkd_instance_term(
  s,
  t,
  batch,
  *,
  temperatures=T_DEFAULT,
  strong_on_weak=ON_WEAK_DEFAULT,
  confidence_mask: bool = True,
):
  """MLKD's instance level (``loss_kd`` / KD_WEIGHT): ``m_B Σ_T T² KL(weak) + Σ_T T² KL(strong)``
  over ``temperatures`` (default 4, 3, 5, 2, 6), the strong sum's ``strong_on_weak`` (2, 6) parts
  on the weak view as released; ``m_B`` the teacher's below-median-confidence fraction.
  ``temperatures`` / ``strong_on_weak`` are static Python numbers (not swept under ``vmap``)."""
  del batch
  (zw, zs), (vw, vs) = _split(s), _split(t)
  return mlkd_losses.mlkd_instance(
    zw,
    vw,
    zs,
    vs,
    temperatures=temperatures,
    strong_on_weak=strong_on_weak,
    confidence_mask=confidence_mask,
  )


@register_term("mlkd_batch", views=WEAK_STRONG_VIEWS)
def mlkd_batch_term(s, t, batch, *, temperatures=T_DEFAULT, confidence_mask: bool = True):
  """MLKD's batch level (``loss_bc`` / KD_WEIGHT): ``m_B Σ_T ‖G_t − G_s‖²_F / B`` of the weak
  view's ``B × B`` prediction Grams (the batch value, broadcast per example)."""
  del batch
  return mlkd_losses.mlkd_batch(
    _split(s)[0], _split(t)[0], temperatures=temperatures, confidence_mask=confidence_mask
  )


@register_term("mlkd_class", views=WEAK_STRONG_VIEWS)
def mlkd_class_term(s, t, batch, *, temperatures=T_DEFAULT, confidence_mask: bool = True):
  """MLKD's class level (``loss_cc`` / KD_WEIGHT): ``m_C Σ_T ‖M_t − M_s‖²_F / C`` of the weak
  view's ``C × C`` class correlations (the batch value, broadcast per example)."""
  del batch
  return mlkd_losses.mlkd_class(
    _split(s)[0], _split(t)[0], temperatures=temperatures, confidence_mask=confidence_mask
  )


@register_term("mlkd_strong_ce", views=WEAK_STRONG_VIEWS, needs_teacher=False)
def mlkd_strong_ce_term(s, t, batch):
  """The student's cross-entropy on the strong view with the hard labels (the reference's second
  CE; weight 0.1; ``method.label_smoothing`` applies to the method's weak-view CE only)."""
  del t
  zs = _split(s)[1]
  return cross_entropy(zs.astype(jnp.promote_types(zs.dtype, jnp.float32)), batch.labels)


def mlkd_preset(
  *,
  temperature: float = 4.0,
  extra_temperatures=(3.0, 5.0, 2.0, 6.0),
  kd_weight: float = 0.9,
  ce_weight: float = 0.1,
):
  """MLKD as released (``KD_ours`` with mdistiller's KD defaults): ``ce_weight · (CE_w + CE_s) +
  kd_weight · (instance + batch + class)`` at ``(temperature, *extra_temperatures)``."""
  temps = (float(temperature),) + tuple(float(x) for x in extra_temperatures)
  return dict(
    name="mlkd",
    ce_weight=ce_weight,
    terms=dict(
      mlkd_instance=dict(weight=kd_weight, temperatures=temps),
      mlkd_batch=dict(weight=kd_weight, temperatures=temps),
      mlkd_class=dict(weight=kd_weight, temperatures=temps),
      mlkd_strong_ce=dict(weight=ce_weight),
    ),
  )


PRESETS = {"mlkd": mlkd_preset}
