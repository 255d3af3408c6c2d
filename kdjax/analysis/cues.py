"""Shifted and cue-conflict evaluation sets from an in-memory split (Ojha et al., NeurIPS 2023).

methods.md §6.3.4–6.3.6: the paper measures the **consensus score** (same class as the teacher,
right or wrong) on unseen domains (Geirhos et al. 2021: sketch, stylized, edge, silhouette,
cue-conflict), the shape bias on cue-conflict images, and "domain transfer for free" on
MNIST-Color / MNIST-M, VLCS and PACS. Those sets are external downloads; this module builds small
offline stand-ins from the evaluation split held in memory, so the same probes run anywhere:

* ``inverted``: ``255 − x`` (a polarity shift: dark objects on a light background);
* ``noise``: additive band-limited "texture" noise (Gaussian noise low-passed with σ = 0.7 px,
  rescaled to standard deviation ``noise_sigma`` in ``[0, 1]`` units, fixed by the seed);
* ``blur``: Gaussian low-pass (σ = ``blur_sigma`` px): shape kept, texture removed;
* ``edge``: Sobel edge magnitude of the grey image (an "edge" set in the sense of Geirhos et al.);
* ``cue_conflict``: the low-pass (shape) of image *i* plus the high-pass (texture) of an image *j*
  of another class; labelled by the shape class, with the texture class kept for the shape bias
  ``#shape / (#shape + #texture)`` (Geirhos et al. 2019; methods.md §6.3.5);
* ``color_biased``: a class-correlated tint (image of class ``c`` multiplied towards hue
  ``c / K``); RGB data only, or grayscale data when every model accepts 3-channel input
  (replicated grey channels); otherwise it is skipped with a note;
* ``grayscale``: colour removed (RGB data only).

All builders are deterministic NumPy functions on ``uint8 (N, H, W, C)`` images.
:func:`load_tfds_set` reads an external TFDS dataset (PACS, VLCS, FairFace, the Geirhos sets, …)
for the same probes and raises :class:`kdjax.data.DatasetNotFoundError` with a clear message when
it is not on the machine.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from kdjax.data import DatasetNotFoundError
from kdjax.data import arrays as arrays_lib

__all__ = [
  "CUE_SETS",
  "ShiftedSet",
  "inverted",
  "texture_noise",
  "gaussian_blur",
  "edges",
  "cue_conflict",
  "class_tint",
  "grayscale",
  "build_shifted_sets",
  "load_tfds_set",
]

CUE_SETS = ("inverted", "noise", "blur", "edge", "cue_conflict", "color_biased", "grayscale")


@dataclasses.dataclass
class ShiftedSet:
  """One shifted evaluation set: ``images`` uint8 ``(N, H, W, C)``, ``labels`` ``(N,)``;
  ``texture_labels`` (cue-conflict only) the class of the texture source; ``note`` a sentence."""

  name: str
  images: np.ndarray
  labels: np.ndarray
  texture_labels: Optional[np.ndarray] = None
  note: str = ""


def _check(images) -> np.ndarray:
  x = np.asarray(images)
  if x.ndim != 4 or x.dtype != np.uint8:
    raise ValueError(f"expected uint8 (N, H, W, C) images, got {x.dtype} {x.shape}")
  return x


def _to_u8(x01) -> np.ndarray:
  return np.clip(np.round(np.asarray(x01) * 255.0), 0, 255).astype(np.uint8)


def _gauss_kernel(sigma: float) -> np.ndarray:
  r = max(1, int(np.ceil(3.0 * sigma)))
  t = np.arange(-r, r + 1, dtype=np.float64)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  return k / k.sum()


def _blur01(x: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of float ``(N, H, W, C)`` images, reflect padding."""
  if sigma <= 0:
    return x
  k = _gauss_kernel(sigma)
  r = len(k) // 2
  out = x
  for axis in (1, 2):
    pad = [(0, 0)] * 4
    pad[axis] = (r, r)
    p = np.pad(out, pad, mode="reflect" if out.shape[axis] > r else "edge")
    n = out.shape[axis]
    acc = np.zeros_like(out, dtype=np.float64)
    for i, w in enumerate(k):
      acc += w * np.take(p, np.arange(i, i + n), axis=axis)
    out = acc
  return out


def inverted(images) -> np.ndarray:
  """``255 − x``."""
  return (255 - _check(images)).astype(np.uint8)


def texture_noise(images, *, sigma: float = 0.2, seed: int = 0) -> np.ndarray:
  """Adds band-limited Gaussian noise of standard deviation ``sigma`` (``[0, 1]`` units)."""
  x = _check(images).astype(np.float64) / 255.0
  rng = np.random.default_rng(seed)
  n = _blur01(rng.standard_normal(x.shape[:3] + (1,)), 0.7)
  n = n / max(float(np.std(n)), 1e-12) * float(sigma)
  return _to_u8(x + n)


def gaussian_blur(images, *, sigma: float = 1.5) -> np.ndarray:
  """Gaussian low-pass filter with standard deviation ``sigma`` pixels."""
  return _to_u8(_blur01(_check(images).astype(np.float64) / 255.0, float(sigma)))


def _gray01(x01: np.ndarray) -> np.ndarray:
  if x01.shape[-1] == 1:
    return x01
  w = np.asarray([0.2989, 0.587, 0.114])
  return (x01[..., :3] @ w)[..., None]


def edges(images) -> np.ndarray:
  """Sobel gradient magnitude of the grey image, min–max scaled per image, same channels."""
  x = _check(images)
  g = _gray01(x.astype(np.float64) / 255.0)[..., 0]
  p = np.pad(g, ((0, 0), (1, 1), (1, 1)), mode="edge")
  h, w = g.shape[1:]
  s = lambda dy, dx: p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]  # noqa: E731
  gx = (s(-1, 1) + 2 * s(0, 1) + s(1, 1)) - (s(-1, -1) + 2 * s(0, -1) + s(1, -1))
  gy = (s(1, -1) + 2 * s(1, 0) + s(1, 1)) - (s(-1, -1) + 2 * s(-1, 0) + s(-1, 1))
  m = np.hypot(gx, gy)
  hi = m.reshape(len(m), -1).max(axis=1)[:, None, None]
  m = np.where(hi > 0, m / np.where(hi > 0, hi, 1.0), 0.0)
  return np.repeat(_to_u8(m)[..., None], x.shape[-1], axis=-1)


def _other_class_partner(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """For each example, the index of a random example of a different class (itself if none)."""
  n = len(labels)
  partner = rng.permutation(n)
  for _ in range(20):
    same = labels[partner] == labels
    if not same.any():
      break
    partner[same] = rng.integers(0, n, int(same.sum()))
  same = labels[partner] == labels
  if same.any():  # a class-pure split: no conflict possible for these
    partner[same] = np.arange(n)[same]
  return partner


def cue_conflict(
  images, labels, *, sigma: float = 1.5, texture_gain: float = 1.0, seed: int = 0
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Shape of image ``i`` (low-pass) + texture of image ``j`` of another class (high-pass).

  Returns:
    ``(images, shape_labels, texture_labels)``.
  """
  x = _check(images).astype(np.float64) / 255.0
  y = np.asarray(labels).astype(np.int64)
  partner = _other_class_partner(y, np.random.default_rng(seed))
  low = _blur01(x, float(sigma))
  high = x - low
  out = low + float(texture_gain) * high[partner]
  return _to_u8(out), y.astype(np.int32), y[partner].astype(np.int32)


def _hue_rgb(h: np.ndarray) -> np.ndarray:
  """Fully saturated RGB colours of hues ``h ∈ [0, 1)``."""
  k = (np.asarray(h)[..., None] * 6.0 + np.asarray([5.0, 3.0, 1.0])) % 6.0
  return 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def class_tint(images, labels, num_classes: int, *, strength: float = 0.6) -> np.ndarray:
  """Class-correlated tint: ``x ← (1 − s) x + s · gray(x) · colour(c)``, hue ``c / K``.

  1-channel input is replicated to 3 channels first.
  """
  x = _check(images).astype(np.float64) / 255.0
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  elif x.shape[-1] != 3:
    raise ValueError(f"class_tint needs 1 or 3 channels, got {x.shape[-1]}")
  col = _hue_rgb(np.asarray(labels, np.float64) / max(int(num_classes), 1))[:, None, None, :]
  out = (1.0 - strength) * x + strength * _gray01(x) * col
  return _to_u8(out)


def grayscale(images) -> np.ndarray:
  """Colour removed (ITU-R 601 luma), replicated to the input's channels."""
  x = _check(images)
  g = _gray01(x.astype(np.float64) / 255.0)
  return np.repeat(_to_u8(g), x.shape[-1], axis=-1)


def build_shifted_sets(
  images,
  labels,
  *,
  num_classes: int,
  names: Sequence[str] = CUE_SETS,
  accepts_rgb: bool = False,
  noise_sigma: float = 0.2,
  blur_sigma: float = 1.5,
  tint_strength: float = 0.6,
  seed: int = 0,
) -> Tuple[Dict[str, ShiftedSet], Dict[str, str]]:
  """Builds the named shifted sets from one in-memory split.

  Args:
    images: uint8 ``(N, H, W, C)``.
    labels: ``(N,)`` class labels.
    num_classes: number of classes (for the tint palette).
    names: subset of :data:`CUE_SETS`.
    accepts_rgb: for 1-channel data, whether every model accepts 3-channel input (enables
      ``color_biased`` on replicated grey channels).
    noise_sigma, blur_sigma, tint_strength, seed: builder parameters.

  Returns:
    ``(sets, skipped)``: ``{name: ShiftedSet}`` and ``{name: reason}`` for the sets that do not
    apply to this data.
  """
  x = _check(images)
  y = np.asarray(labels).astype(np.int32)
  unknown = [n for n in names if n not in CUE_SETS]
  if unknown:
    raise ValueError(f"unknown cue sets {unknown}; known: {', '.join(CUE_SETS)}")
  rgb = x.shape[-1] == 3
  sets: Dict[str, ShiftedSet] = {}
  skipped: Dict[str, str] = {}
  for name in names:
    if name == "inverted":
      sets[name] = ShiftedSet(name, inverted(x), y, note="255 − x")
    elif name == "noise":
      sets[name] = ShiftedSet(
        name,
        texture_noise(x, sigma=noise_sigma, seed=seed),
        y,
        note=f"additive band-limited noise, σ = {noise_sigma}",
      )
    elif name == "blur":
      sets[name] = ShiftedSet(
        name, gaussian_blur(x, sigma=blur_sigma), y, note=f"Gaussian low-pass, σ = {blur_sigma} px"
      )
    elif name == "edge":
      sets[name] = ShiftedSet(name, edges(x), y, note="Sobel edge magnitude")
    elif name == "cue_conflict":
      xi, ys, yt = cue_conflict(x, y, sigma=blur_sigma, seed=seed)
      sets[name] = ShiftedSet(
        name,
        xi,
        ys,
        texture_labels=yt,
        note="shape (low-pass) of one class + texture (high-pass) of another; labelled by shape",
      )
    elif name == "color_biased":
      if rgb:
        sets[name] = ShiftedSet(
          name,
          class_tint(x, y, num_classes, strength=tint_strength),
          y,
          note=f"class-correlated tint, strength {tint_strength}",
        )
      elif accepts_rgb:
        sets[name] = ShiftedSet(
          name,
          class_tint(x, y, num_classes, strength=tint_strength),
          y,
          note="grey channels replicated to RGB, then a class-correlated tint",
        )
      else:
        skipped[name] = (
          "skipped: the data are grayscale and the models take 1-channel "
          "input, so a colour cue cannot be shown to them (the paper's "
          "colour transfer uses MNIST-Color, methods.md §6.3.6)"
        )
    elif name == "grayscale":
      if rgb:
        sets[name] = ShiftedSet(name, grayscale(x), y, note="colour removed")
      else:
        skipped[name] = "skipped: the data are already grayscale"
  return sets, skipped


def _resize_u8(images: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
  if images.shape[1:3] == tuple(hw):
    return images
  import jax

  out = jax.image.resize(
    images.astype(np.float32), (images.shape[0], *hw, images.shape[-1]), method="bilinear"
  )
  return np.clip(np.round(np.asarray(out)), 0, 255).astype(np.uint8)


def load_tfds_set(
  name: str,
  split: str,
  *,
  data_dir: Optional[str] = None,
  image_key: str = "image",
  label_key: str = "label",
  extra_keys: Sequence[str] = (),
  limit: Optional[int] = None,
  image_shape: Optional[Tuple[int, int, int]] = None,
  purpose: str = "this probe",
) -> dict:
  """An external, prepared TFDS dataset as arrays: ``{'images', 'labels', <extra_keys>...}``.

  Images are resized (bilinear) to ``image_shape[:2]`` when given; grey/RGB channel counts
  must match ``image_shape[2]`` (1 → 3 replicated; 3 → 1 rejected).

  Raises:
    kdjax.data.DatasetNotFoundError: no prepared copy under ``data_dir`` (the message says so
      and how to prepare one).
    ValueError: a missing feature key or an incompatible channel count.
  """
  where = data_dir if data_dir is not None else "~/tensorflow_datasets (or $TFDS_DATA_DIR)"
  try:
    source = arrays_lib.open_tfds_source(name, split, data_dir)
  except arrays_lib._Unavailable as e:  # pylint: disable=protected-access
    raise DatasetNotFoundError(
      f"{purpose} needs the TFDS dataset {name!r} (split {split!r}), which is not on this "
      f"machine: {e.args[0]} under data_dir={where!r}. Prepare it on a machine with "
      f"tensorflow (`tfds build {name} --data_dir DIR --file_format array_record`, or a "
      f"custom builder for datasets outside the TFDS catalog) and pass its data_dir; or "
      f"drop this probe / set."
    ) from None
  n = len(source) if limit is None else min(len(source), int(limit))
  recs = arrays_lib.fetch_records(source, range(n))
  if n == 0:
    raise ValueError(f"TFDS dataset {name!r} split {split!r} is empty")
  for k in (image_key, label_key, *extra_keys):
    if k not in recs[0]:
      raise ValueError(f"TFDS dataset {name!r} has no feature {k!r}; features: {sorted(recs[0])}")
  imgs = [np.asarray(r[image_key]) for r in recs]
  if image_shape is not None:
    hw, c = tuple(image_shape[:2]), int(image_shape[2])
    fixed = []
    for im in imgs:
      im = im[..., None] if im.ndim == 2 else im
      if im.shape[-1] == 1 and c == 3:
        im = np.repeat(im, 3, axis=-1)
      elif im.shape[-1] != c:
        raise ValueError(f"{name!r} images have {im.shape[-1]} channels, the models take {c}")
      fixed.append(_resize_u8(im[None].astype(np.uint8), hw)[0])
    imgs = fixed
  out = {
    "images": np.stack(imgs).astype(np.uint8),
    "labels": np.asarray([r[label_key] for r in recs]).astype(np.int32),
  }
  for k in extra_keys:
    out[k] = np.asarray([r[k] for r in recs])
  return out
