r"""Domain datasets of Ojha et al. (NeurIPS 2023) "domain knowledge transfers for free" (§4.3,
methods.md §6.3.6-7): MNIST-Color and MNIST-M(-style) from MNIST arrays, leave-one-domain-out
splits of PACS / VLCS directory trees, and FairFace subsets by race.

Everything here is host-side numpy (built once, offline). The MNIST builders take ``(images,
labels)`` arrays (e.g. ``kdjax.data.load_arrays('mnist', 'train')`` when the MNIST IDX files are
present, :func:`load_mnist`), so they also work on any grey digit set.

**MNIST-Color** (:func:`mnist_color`): the digit's strokes take an RGB colour on a black
background, ``out = gray / 255 · colour``. ``mode='random'``: a colour drawn uniformly per image
(hue uniform, saturation and value in [0.5, 1]; the domain shift is colour itself); ``mode='class'``:
the spurious-correlation construction, each class ``c`` has a palette colour (``CLASS_PALETTE``,
ten well-separated hues) used with probability ``p_correlated`` and a uniformly random *other*
palette colour otherwise, so colour predicts the label in training but not necessarily at test
time. methods.md §6 names MNIST-Color without its construction; both modes are our reading
(unverified), ``random`` the default.

**MNIST-M-style** (:func:`mnist_m`): Ganin & Lempitsky's (ICML 2015) MNIST-M blend,
``out = |patch − digit|`` per channel (the digit replicated to 3 channels), where the original
crops the patches from BSDS500 photographs. BSDS500 is not available offline, so this is an
**MNIST-M-style substitute**: patches are random crops of ``textures`` when given (any uint8
``(M, H, W, 3)`` colour images, e.g. CIFAR-10 training images), otherwise procedural colour
textures (:func:`procedural_textures`: per channel, a sum of random low-frequency sinusoids plus
bilinearly upsampled coarse noise, rescaled to a random sub-range of 0..255). Numbers on it are
not comparable with the paper's MNIST-M column.

**As datasets** (:func:`load_digit_domain`, what ``kdjax.data.load_arrays`` returns for them):
``mnist_rgb`` (MNIST, grey replicated), ``mnist_color``, ``mnist_m`` and ``mnist_domains`` (their
union, the teacher's set) are registered in :mod:`kdjax.data.registry` (``config.dataset.name``;
``config.dataset.idx_dir`` = MNIST's IDX directory). Every colour / patch draw is keyed by the
digit's MNIST index (:func:`keyed_uniform`), so slices and limits do not change a digit's
rendering; the four share MNIST's normalisation. ``pacs`` / ``vlcs`` (:func:`load_lodo`) are
registered too: ``config.dataset.data_dir`` = the tree below, the split a ``+``-joined list of
domains (``'art_painting+cartoon+sketch'``, ``'photo'``, ``'photo[:80%]'``).

**PACS / VLCS** (:func:`lodo_split`): the directory layout ``<root>/<domain>/<class>/*.jpg``
(``.jpg``, ``.jpeg``, ``.png``); the held-out domain is the test split, the others the training
split (students without Caltech101 on VLCS, without photo on PACS).

**FairFace** (:func:`fairface_subset`): ``<root>/<csv>`` with columns ``file,age,gender,race``
(FairFace's ``fairface_label_train.csv``; ``file`` relative to ``root``) and the images; per-race
sample counts (the paper's D_s / D_t: :data:`FAIRFACE_COUNTS`), gender labels.
"""

from __future__ import annotations

import colorsys
import csv
import dataclasses
import os
import re
from typing import Mapping, Sequence

import numpy as np

# A module reference (not ``from ... import``): kdjax.data.arrays imports this module to dispatch
# the digit-domain and PACS/VLCS names, so the two import each other; names are read at call time.
from kdjax.data import arrays as arrays_lib
from kdjax.data import registry
from kdjax.errors import UserError

__all__ = [
  "CLASS_PALETTE",
  "DIGIT_DOMAINS",
  "FAIRFACE_COUNTS",
  "FAIRFACE_RACES",
  "KNOWN_DOMAINS",
  "DomainSplit",
  "FairFaceSubset",
  "digit_domains",
  "fairface_subset",
  "keyed_uniform",
  "load_digit_domain",
  "load_images",
  "load_lodo",
  "load_mnist",
  "lodo_root",
  "lodo_split",
  "missing_mnist_message",
  "mnist_color",
  "mnist_m",
  "procedural_textures",
  "to_rgb",
]

# Ten well-separated hues (HSV, full saturation and value), class c -> CLASS_PALETTE[c].
CLASS_PALETTE = np.array(
  [np.round(np.array(colorsys.hsv_to_rgb(h / 10.0, 1.0, 1.0)) * 255) for h in range(10)], np.uint8
)


def _check_digits(images, labels):
  images = np.asarray(images)
  labels = np.asarray(labels)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.ndim != 3:
    raise UserError(
      f"digit builders take grey images (N, H, W) or (N, H, W, 1), got shape {images.shape}."
    )
  if labels.shape != (images.shape[0],):
    raise UserError(f"labels must have shape ({images.shape[0]},), got {labels.shape}.")
  if images.dtype != np.uint8:
    raise UserError(f"digit images must be uint8 in 0..255, got dtype {images.dtype}.")
  return images, labels.astype(np.int32)


def to_rgb(images) -> np.ndarray:
  """Grey ``(N, H, W[, 1])`` uint8 -> ``(N, H, W, 3)`` (replicated channels)."""
  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 3:
    return images
  if images.ndim == 4:
    images = images[..., 0]
  return np.repeat(images[..., None], 3, axis=-1)


# ---- per-example draws -----------------------------------------------------------------------------
_M64 = (1 << 64) - 1


def _splitmix64(z):
  """SplitMix64's finaliser (Steele et al. 2014) on uint64 arrays: a bijective 64-bit mix."""
  z = (z + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(_M64)
  z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(_M64)
  z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(_M64)
  return z ^ (z >> np.uint64(31))


def keyed_uniform(seed: int, index, num: int) -> np.ndarray:
  """``(N, num)`` float64 uniforms in [0, 1), a fixed function of ``(seed, index[i], j)``: the
  draws of one example do not depend on which or how many other examples are built with it (so a
  digit renders the same with or without ``limit`` / split slicing)."""
  idx = np.asarray(index, np.int64).astype(np.uint64)
  with np.errstate(over="ignore"):
    key = _splitmix64(np.uint64(int(seed) & _M64) ^ np.uint64(0xD1B54A32D192ED03))
    base = _splitmix64(key ^ (idx[:, None] << np.uint64(8)) ^ np.arange(num, dtype=np.uint64))
    z = _splitmix64(base)
  return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _draws(seed, index, n, num):
  """``(n, num)`` uniforms: keyed by ``index`` when given, else sequential from the seeded rng
  (the builders' original behaviour)."""
  if index is None:
    return None
  index = np.asarray(index)
  if index.shape != (n,):
    raise UserError(f"index must have shape ({n},), got {index.shape}.")
  return keyed_uniform(seed, index, num)


# ---- MNIST-Color ---------------------------------------------------------------------------------
def _random_colours(rng, n, u=None):
  if u is not None:
    h, s, v = u[:, 0], 0.5 + 0.5 * u[:, 1], 0.5 + 0.5 * u[:, 2]
  else:
    h = rng.uniform(0.0, 1.0, n)
    s = rng.uniform(0.5, 1.0, n)
    v = rng.uniform(0.5, 1.0, n)
  return np.array([colorsys.hsv_to_rgb(*x) for x in zip(h, s, v)]).reshape(n, 3) * 255.0


def mnist_color(
  images,
  labels,
  *,
  seed: int = 0,
  mode: str = "random",
  p_correlated: float = 1.0,
  palette=None,
  index=None,
):
  """MNIST-Color from grey digits (module docstring). Returns ``(images (N, H, W, 3) uint8,
  labels (N,) int32, colours (N, 3) uint8)``, the colour of each image's strokes.

  Args:
    images, labels: grey uint8 digits and their classes.
    seed: numpy seed of the colour draws.
    mode: ``'random'`` (uniform colour per image) or ``'class'`` (palette colour of the label
      with probability ``p_correlated``, otherwise another palette colour).
    p_correlated: ``mode='class'`` only: the probability of the class's colour.
    palette: ``(num_classes, 3)`` uint8 colours for ``mode='class'`` (default
      :data:`CLASS_PALETTE`).
    index: optional ``(N,)`` example ids: each image's draws are then :func:`keyed_uniform` of
      ``(seed, index)``, independent of the other images (None: one seeded numpy stream).
  """
  x, y = _check_digits(images, labels)
  rng = np.random.default_rng(seed)
  n = len(y)
  u = _draws(seed, index, n, 3)
  if mode == "random":
    colours = _random_colours(rng, n, u)
  elif mode == "class":
    pal = np.asarray(CLASS_PALETTE if palette is None else palette, np.float64)
    k = pal.shape[0]
    if pal.ndim != 2 or pal.shape[1] != 3 or (n and y.max() >= k):
      raise UserError(
        f"mnist_color(mode='class'): palette must be (num_classes, 3) with a colour "
        f"for every label (labels up to {y.max() if n else 0}), got "
        f"{pal.shape}."
      )
    if not 0.0 <= float(p_correlated) <= 1.0:
      raise UserError(f"p_correlated must be in [0, 1], got {p_correlated!r}.")
    if u is None:
      shift, coin = rng.integers(1, k, n), rng.uniform(size=n)
    else:
      shift, coin = 1 + np.minimum((u[:, 0] * (k - 1)).astype(np.int64), k - 2), u[:, 1]
    other = (y + shift) % k  # uniform over the other k - 1 colours
    which = np.where(coin < p_correlated, y, other)
    colours = pal[which]
  else:
    raise UserError(f"mnist_color: mode must be 'random' or 'class', got {mode!r}.")
  out = x[..., None].astype(np.float64) / 255.0 * colours[:, None, None, :]
  return (np.clip(np.round(out), 0, 255).astype(np.uint8), y, np.round(colours).astype(np.uint8))


# ---- MNIST-M-style ---------------------------------------------------------------------------------
def procedural_textures(n: int, size: int = 28, *, seed: int = 0) -> np.ndarray:
  """``(n, size, size, 3)`` uint8 colour textures (offline stand-in for BSDS500 crops): per
  channel, 1-4 random sinusoidal gratings (frequency 0.5-4 cycles per image, random orientation
  and phase) plus a 4x4 noise field upsampled bilinearly, each channel rescaled to a random
  sub-range ``[lo, hi]`` of 0..255 with ``hi − lo >= 64``."""
  rng = np.random.default_rng(seed)
  t = np.linspace(0.0, 1.0, size)
  yy, xx = np.meshgrid(t, t, indexing="ij")
  coarse_t = np.linspace(0.0, 1.0, 4)
  out = np.empty((n, size, size, 3), np.uint8)
  for i in range(n):
    for c in range(3):
      f = np.zeros((size, size))
      for _ in range(rng.integers(1, 5)):
        freq = rng.uniform(0.5, 4.0)
        ang = rng.uniform(0.0, np.pi)
        f += rng.uniform(0.3, 1.0) * np.sin(
          2 * np.pi * freq * (np.cos(ang) * xx + np.sin(ang) * yy) + rng.uniform(0, 2 * np.pi)
        )
      coarse = rng.standard_normal((4, 4))
      rows = np.array([np.interp(t, coarse_t, r) for r in coarse])  # (4, size)
      f += 0.7 * np.array([np.interp(t, coarse_t, col) for col in rows.T]).T  # (size, size)
      f = (f - f.min()) / max(f.max() - f.min(), 1e-8)
      lo = rng.uniform(0, 191)
      hi = rng.uniform(lo + 64, 255)
      out[i, ..., c] = np.round(lo + (hi - lo) * f).astype(np.uint8)
  return out


def mnist_m(images, labels, *, seed: int = 0, textures=None, num_textures: int = 512, index=None):
  """MNIST-M-style digits (module docstring): ``|patch − digit|`` per channel, one random
  ``H x W`` patch per image. Returns ``(images (N, H, W, 3) uint8, labels (N,) int32)``.

  Args:
    images, labels: grey uint8 digits.
    seed: numpy seed of the patch choice and crop offsets.
    textures: uint8 ``(M, Ht, Wt, 3)`` colour images to crop patches from (``Ht >= H``,
      ``Wt >= W``); None: :func:`procedural_textures` (``num_textures`` of them, seeded by
      ``seed``). An MNIST-M-style substitute either way (the original crops BSDS500).
    index: optional ``(N,)`` example ids: patch choice and offsets are then
      :func:`keyed_uniform` of ``(seed, index)`` (None: one seeded numpy stream).
  """
  x, y = _check_digits(images, labels)
  n, h, w = x.shape
  rng = np.random.default_rng(seed)
  if textures is None:
    textures = procedural_textures(num_textures, max(h, w), seed=seed + 1)
  textures = np.asarray(textures)
  if (
    textures.ndim != 4
    or textures.shape[-1] != 3
    or textures.dtype != np.uint8
    or textures.shape[1] < h
    or textures.shape[2] < w
    or len(textures) == 0
  ):
    raise UserError(
      f"mnist_m: textures must be uint8 (M, H', W', 3) with H' >= {h}, W' >= {w}, "
      f"got {textures.dtype} {textures.shape}."
    )
  u = _draws(seed, index, n, 3)
  if u is None:
    which = rng.integers(0, len(textures), n)
    oy = rng.integers(0, textures.shape[1] - h + 1, n)
    ox = rng.integers(0, textures.shape[2] - w + 1, n)
  else:
    pick = lambda v, m: np.minimum((v * m).astype(np.int64), m - 1)
    which = pick(u[:, 0], len(textures))
    oy = pick(u[:, 1], textures.shape[1] - h + 1)
    ox = pick(u[:, 2], textures.shape[2] - w + 1)
  rows = oy[:, None] + np.arange(h)[None, :]
  cols = ox[:, None] + np.arange(w)[None, :]
  patches = textures[which[:, None, None], rows[:, :, None], cols[:, None, :]]  # (n, h, w, 3)
  out = np.abs(patches.astype(np.int16) - x[..., None].astype(np.int16))
  return out.astype(np.uint8), y


def digit_domains(images, labels, *, seed: int = 0, textures=None, color_mode: str = "random"):
  """The teacher's training set of the MNIST experiment: MNIST ∪ MNIST-Color ∪ MNIST-M(-style),
  all as RGB. Returns ``(images (3N, H, W, 3), labels (3N,), domain (3N,))`` with domain 0 =
  MNIST (grey replicated), 1 = MNIST-Color, 2 = MNIST-M-style; the student's set is domain 0."""
  x, y = _check_digits(images, labels)
  col, _, _ = mnist_color(x, y, seed=seed, mode=color_mode)
  mm, _ = mnist_m(x, y, seed=seed + 1, textures=textures)
  n = len(y)
  dom = np.repeat(np.arange(3, dtype=np.int32), n)
  return np.concatenate([to_rgb(x), col, mm]), np.tile(y, 3), dom


def load_mnist(split: str = "train", *, idx_dir=None, data_dir=None):
  """``(images (N, 28, 28), labels)`` of MNIST from its IDX files or a TFDS copy
  (:func:`kdjax.data.load_arrays`; raises its DatasetNotFoundError naming how to get them)."""
  s = arrays_lib.load_arrays("mnist", split, idx_dir=idx_dir, data_dir=data_dir)
  return s.images[..., 0], s.labels


# Digit-domain datasets buildable from MNIST: name -> domain ids of :func:`digit_domains`
# (kdjax.data.registry.DIGIT_DOMAIN_NAMES registers the same names).
DIGIT_DOMAINS = {
  "mnist_rgb": (0,),
  "mnist_color": (1,),
  "mnist_m": (2,),
  "mnist_domains": (0, 1, 2),
}
_TEST_SEED_OFFSET = 1000  # the test split's colours / patches / textures: seed + 1000
_DIGIT_SPLIT = re.compile(r"(train|test)(\[[^\]]*\])?")


def _domain_images(x, y, index, name, seed, textures, color_mode):
  """``(k, N, 28, 28, 3)`` renderings of the N digits in the k domains of ``name``."""
  out = []
  for d in DIGIT_DOMAINS[name]:
    if d == 0:
      out.append(to_rgb(x))
    elif d == 1:
      out.append(mnist_color(x, y, seed=seed, mode=color_mode, index=index)[0])
    else:
      out.append(mnist_m(x, y, seed=seed + 1, textures=textures, index=index)[0])
  return np.stack(out)


def missing_mnist_message(name: str, split: str, idx_dir, data_dir) -> str:
  """The one message when a digit domain's MNIST source is absent: where to put the IDX files."""
  dirs = arrays_lib.idx_dirs("mnist", idx_dir)
  env = registry.IDX_ENV_VARS["mnist"]
  looked = ", ".join(repr(d) for d in dirs) or "no directory"
  return (
    f"Dataset {name!r} (split {split!r}) is built from MNIST, which was not found: no "
    f"train-/t10k- images-idx3/labels-idx1 IDX files in {looked}"
    + ("" if idx_dir is not None else f" (${env} is {'set' if os.environ.get(env) else 'not set'})")
    + f" and no prepared TFDS 'mnist' under data_dir={data_dir or '~/tensorflow_datasets'!r}.\n"
    "To fix: download the four MNIST IDX files train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz "
    "(https://yann.lecun.com/exdb/mnist/ or a mirror, e.g. "
    "https://ossci-datasets.s3.amazonaws.com/mnist/; gzipped or not) into one directory DIR and "
    f"pass --config.dataset.idx_dir=DIR (Python: idx_dir=DIR), or set {env}=DIR. Debian has no "
    "MNIST package (dataset-fashion-mnist is Fashion-MNIST, a different dataset)."
  )


def load_digit_domain(
  name: str,
  split: str = "train",
  *,
  idx_dir=None,
  data_dir=None,
  seed: int = 0,
  limit: int | None = None,
  textures=None,
  color_mode: str = "random",
):
  """An :class:`~kdjax.data.ArraySplit` of a digit domain built from MNIST (offline); what
  ``kdjax.data.load_arrays(name, split, idx_dir=..., limit=...)`` returns for these names.

  ``name``: ``mnist_rgb`` (MNIST, grey replicated to RGB: the students' set), ``mnist_color``,
  ``mnist_m`` (MNIST-M-style) or ``mnist_domains`` (their union: the teacher's set).
  ``split``: ``train`` or ``test`` (MNIST's), optionally sliced as TFDS does (``train[:90%]``,
  ``test[:500]``); the slice selects MNIST digits. The test split draws its colours / patches /
  textures with ``seed + 1000``; every draw is keyed by the digit's MNIST index
  (:func:`keyed_uniform`), so a digit renders identically whatever the slice or ``limit``.

  Rows: for ``mnist_domains`` digit-major, row ``3·i + j`` = digit ``i`` in domain ``j``
  (0 MNIST, 1 Color, 2 M), so any prefix is balanced over the domains; ``index`` = MNIST index
  ``· k + j`` (k = number of domains; ``index % 3`` is the domain of a union row). ``limit``: the
  first ``limit`` rows (examples, as for every dataset), built from the first ``⌈limit / k⌉``
  digits. ``info`` is the registry's (:func:`kdjax.data.info`): all digit domains share MNIST's
  normalisation (``kdjax.data.registry``), so a teacher trained on the union sees the same inputs
  as a student on one domain.

  Raises kdjax's DatasetNotFoundError (naming the IDX files and where to put them) when MNIST
  is absent.
  """
  if name not in DIGIT_DOMAINS:
    raise UserError(f"unknown digit domain {name!r}; use one of {sorted(DIGIT_DOMAINS)}.")
  m = _DIGIT_SPLIT.fullmatch(split) if isinstance(split, str) else None
  if m is None:
    raise UserError(
      f"digit domains have splits 'train' and 'test' (TFDS slices such as 'train[:90%]' "
      f"allowed), got {split!r}."
    )
  k = len(DIGIT_DOMAINS[name])
  n_digits = None if limit is None else -(-max(0, int(limit)) // k)
  try:
    mn = arrays_lib.load_arrays("mnist", split, idx_dir=idx_dir, data_dir=data_dir, limit=n_digits)
  except registry.DatasetNotFoundError:
    raise registry.DatasetNotFoundError(
      missing_mnist_message(name, split, idx_dir, data_dir)
    ) from None
  x, y, mi = mn.images[..., 0], mn.labels, mn.index.astype(np.int64)
  s_seed = seed if m.group(1) == "train" else seed + _TEST_SEED_OFFSET
  ims = _domain_images(x, y, mi, name, s_seed, textures, color_mode)  # (k, n, 28, 28, 3)
  n = len(y)
  images = ims.transpose(1, 0, 2, 3, 4).reshape((n * k,) + ims.shape[2:])
  labels = np.repeat(y, k).astype(np.int32)
  index = (mi[:, None] * k + np.arange(k)[None, :]).reshape(-1)
  if limit is not None:
    images, labels, index = images[: int(limit)], labels[: int(limit)], index[: int(limit)]
  info = registry.info(name)
  return arrays_lib.ArraySplit(images, labels, index.astype(np.int32), info, split)


# ---- PACS / VLCS leave-one-domain-out -------------------------------------------------------------
KNOWN_DOMAINS = registry.LODO_DOMAINS  # pacs / vlcs -> their domain directory names
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class DomainSplit:
  """Files of one side of a leave-one-domain-out split: ``files`` (paths), ``labels`` (class
  index into ``classes``) and ``domains`` (index into ``domain_names``)."""

  files: tuple
  labels: np.ndarray
  domains: np.ndarray
  classes: tuple
  domain_names: tuple

  def __len__(self):
    return len(self.files)


def _layout_error(root, what):
  return UserError(
    f"{what}. Expected the directory layout <root>/<domain>/<class>/*.jpg (also .jpeg/.png), "
    f"e.g. {os.path.join(str(root), 'photo', 'dog', '0001.jpg')}, with root={str(root)!r}; "
    f"PACS domains {list(KNOWN_DOMAINS['pacs'])}, VLCS domains {list(KNOWN_DOMAINS['vlcs'])}."
  )


def lodo_split(root, held_out: str, *, domains: Sequence[str] | None = None):
  """Leave-one-domain-out split of a ``<root>/<domain>/<class>/*.jpg`` tree (PACS, VLCS).

  Args:
    root: the dataset directory.
    held_out: the unseen domain (test split), e.g. ``'photo'`` (PACS) or ``'Caltech101'`` (VLCS).
    domains: the domains to use (default: every sub-directory of ``root``, sorted).

  Returns:
    ``(train, test)`` :class:`DomainSplit`: train = every other domain, test = ``held_out``.
    Classes are the sorted union of class directories; every domain must have them all.

  Raises:
    UserError naming the expected layout when ``root`` is missing, a domain or class directory is
    absent or empty.
  """
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise _layout_error(root, f"dataset directory {root!r} does not exist")
  names = tuple(sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))))
  doms = tuple(domains) if domains is not None else names
  missing = [d for d in doms if d not in names]
  if not doms or missing:
    raise _layout_error(
      root,
      f"domain directories {missing or '(none)'} not found under {root!r} (it has {list(names)})",
    )
  if held_out not in doms:
    raise UserError(
      f"held_out domain {held_out!r} is not one of the domains {list(doms)} under {root!r}."
    )
  per_dom = {
    d: sorted(
      c for c in os.listdir(os.path.join(root, d)) if os.path.isdir(os.path.join(root, d, c))
    )
    for d in doms
  }
  classes = tuple(sorted(set().union(*per_dom.values())))
  for d, cs in per_dom.items():
    if set(cs) != set(classes):
      raise _layout_error(
        root, f"domain {d!r} lacks class directories {sorted(set(classes) - set(cs))}"
      )
  sides = {True: ([], [], []), False: ([], [], [])}
  for di, d in enumerate(doms):
    for ci, c in enumerate(classes):
      cdir = os.path.join(root, d, c)
      files = sorted(f for f in os.listdir(cdir) if f.lower().endswith(_IMAGE_EXTS))
      if not files:
        raise _layout_error(root, f"no images in {cdir!r}")
      f_, l_, d_ = sides[d == held_out]
      f_.extend(os.path.join(cdir, f) for f in files)
      l_.extend([ci] * len(files))
      d_.extend([di] * len(files))

  def make(side):
    f_, l_, d_ = sides[side]
    return DomainSplit(tuple(f_), np.asarray(l_, np.int32), np.asarray(d_, np.int32), classes, doms)

  return make(False), make(True)


def lodo_root(name: str, data_dir=None) -> str:
  """The ``pacs`` / ``vlcs`` directory: ``data_dir``, else ``$KDJAX_PACS_DIR`` /
  ``$KDJAX_VLCS_DIR``; DatasetNotFoundError naming the layout when neither holds the domains."""
  env = registry.LODO_ENV_VARS[name]
  for d in (data_dir, os.environ.get(env)):
    if d and all(os.path.isdir(os.path.join(os.fspath(d), x)) for x in KNOWN_DOMAINS[name]):
      return os.fspath(d)
  raise registry.DatasetNotFoundError(
    f"Dataset {name!r} was not found (data_dir={data_dir!r}, ${env} is "
    f"{'set' if os.environ.get(env) else 'not set'}): pass --config.dataset.data_dir=DIR "
    f"(or set {env}=DIR) with DIR/<domain>/<class>/*.jpg for the domains "
    f"{list(KNOWN_DOMAINS[name])}"
    + (" (PACS's kfold/ folder has this layout)" if name == "pacs" else "")
    + "."
  )


def _lodo_files(root: str, name: str):
  """{domain: (files, labels)} in a fixed shuffled order per domain (seeded permutation of the
  sorted list, numpy seed 0), so slices such as ``photo[:80%]`` mix the classes."""
  doms = KNOWN_DOMAINS[name]
  train, test = lodo_split(root, doms[0], domains=doms)
  n_cls = registry.info(name).num_classes
  if len(train.classes) != n_cls:
    raise _layout_error(
      root, f"{name} has {n_cls} classes but {root!r} has {len(train.classes)}: {train.classes}"
    )
  files = np.asarray(test.files + train.files, object)
  labels = np.concatenate([test.labels, train.labels])
  dom = np.concatenate([test.domains, train.domains])
  out = {}
  for di, d in enumerate(doms):
    sel = np.flatnonzero(dom == di)
    sel = sel[np.random.default_rng(0).permutation(len(sel))]
    out[d] = (files[sel].tolist(), labels[sel])
  return out


def load_lodo(name: str, split: str, *, data_dir=None, limit: int | None = None):
  """An :class:`~kdjax.data.ArraySplit` of PACS / VLCS (``kdjax.data.load_arrays(name, split,
  data_dir=ROOT)``): ``split`` is a ``+``-joined list of domains with TFDS slices, e.g.
  ``'art_painting+cartoon+sketch'`` (the paper's PACS students), ``'photo'`` (the unseen domain),
  ``'photo[:80%]'``. Within a domain the order is a fixed shuffle (:func:`_lodo_files`);
  ``index`` = the domain's offset (domains in :data:`KNOWN_DOMAINS` order) + position in it.
  Images are decoded to RGB and resized to the registry's 224x224. ``limit``: first rows."""
  root = lodo_root(name, data_dir)
  per = _lodo_files(root, name)
  sizes = {d: len(per[d][0]) for d in KNOWN_DOMAINS[name]}
  bad = [p.split("[")[0] for p in split.split("+") if p.split("[")[0] not in sizes]
  if bad:
    raise UserError(
      f"{name}: split {split!r} names unknown domains {bad}; its domains are {list(sizes)} "
      "(join them with '+', e.g. 'art_painting+cartoon+sketch')."
    )
  offsets = dict(zip(sizes, np.cumsum([0] + list(sizes.values()))[:-1]))
  files, labels, index = [], [], []
  for d, a, b in arrays_lib._absolute_instructions(split, sizes):  # pylint: disable=protected-access
    files += per[d][0][a:b]
    labels.append(per[d][1][a:b])
    index.append(offsets[d] + np.arange(a, b))
  if limit is not None:
    files = files[: max(0, int(limit))]
  n = len(files)
  info = registry.info(name)
  labels = np.concatenate(labels)[:n] if labels else np.zeros(0, np.int32)
  index = np.concatenate(index)[:n] if index else np.zeros(0, np.int64)
  images = load_images(files, info.image_shape[:2])
  return arrays_lib.ArraySplit(images, labels.astype(np.int32), index.astype(np.int32), info, split)


def load_images(files: Sequence[str], size: int | tuple = 224) -> np.ndarray:
  """``(N, H, W, 3)`` uint8: each file decoded to RGB and resized to ``size`` (bilinear; an int
  is a square). For the small PACS/VLCS/FairFace sets held in memory."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  hw = (size, size) if isinstance(size, int) else tuple(size)
  out = np.empty((len(files),) + hw + (3,), np.uint8)
  for i, f in enumerate(files):
    with Image.open(f) as im:
      out[i] = np.asarray(im.convert("RGB").resize((hw[1], hw[0]), Image.BILINEAR))
  return out


# ---- FairFace -------------------------------------------------------------------------------------
# FairFace's race labels in the order of its README / label files (race 1..7 of the paper: our
# reading, unverified).
FAIRFACE_RACES = (
  "White",
  "Black",
  "Latino_Hispanic",
  "East Asian",
  "Southeast Asian",
  "Indian",
  "Middle Eastern",
)
# Training images per race 1..7 (methods.md §6.3.7): the student's D_s and the teacher's D_t.
FAIRFACE_COUNTS = {
  "student": (600, 50, 2000, 200, 0, 200, 800),
  "teacher": (4000, 4000, 0, 4000, 4000, 4000, 4000),
}
GENDERS = ("Male", "Female")


@dataclasses.dataclass(frozen=True)
class FairFaceSubset:
  """``files`` (paths), ``labels`` (gender: 0 Male, 1 Female), ``race`` (index into
  :data:`FAIRFACE_RACES`), ``age`` (the CSV's age-group strings)."""

  files: tuple
  labels: np.ndarray
  race: np.ndarray
  age: tuple

  def __len__(self):
    return len(self.files)


def fairface_subset(
  root,
  counts,
  *,
  csv_name: str = "fairface_label_train.csv",
  seed: int = 0,
  check_files: bool = True,
) -> FairFaceSubset:
  """A FairFace subset with ``counts`` images per race, sampled without replacement.

  Args:
    root: FairFace directory holding ``csv_name`` (columns ``file,age,gender,race``; extra
      columns are ignored) and the images (``file`` relative to ``root``).
    counts: ``'student'`` / ``'teacher'`` (:data:`FAIRFACE_COUNTS`), 7 numbers in the order of
      :data:`FAIRFACE_RACES`, or a mapping race name -> count (missing races: 0).
    seed: numpy seed of the per-race sampling.
    check_files: raise if a sampled image file is missing.

  Raises:
    UserError when the CSV is absent or lacks columns, a race has fewer rows than asked, or a
    sampled image is missing.
  """
  root = os.fspath(root)
  path = os.path.join(root, csv_name)
  layout = (
    f"expected {path} with columns file,age,gender,race (FairFace's label CSV) and the "
    f"images it names under {root!r} (e.g. train/1.jpg)"
  )
  if not os.path.isfile(path):
    raise UserError(f"FairFace not found: {layout}.")
  if isinstance(counts, str):
    if counts not in FAIRFACE_COUNTS:
      raise UserError(
        f"counts must be one of {sorted(FAIRFACE_COUNTS)}, 7 numbers or a mapping "
        f"race -> count, got {counts!r}."
      )
    counts = FAIRFACE_COUNTS[counts]
  if isinstance(counts, Mapping):
    unknown = sorted(set(counts) - set(FAIRFACE_RACES))
    if unknown:
      raise UserError(f"unknown FairFace races {unknown}; races are {list(FAIRFACE_RACES)}.")
    counts = tuple(int(counts.get(r, 0)) for r in FAIRFACE_RACES)
  counts = tuple(int(c) for c in counts)
  if len(counts) != len(FAIRFACE_RACES) or min(counts) < 0:
    raise UserError(
      f"counts must be 7 non-negative numbers (races {list(FAIRFACE_RACES)}), got {counts}."
    )
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    cols = set(reader.fieldnames or ())
    need = {"file", "age", "gender", "race"}
    if not need <= cols:
      raise UserError(f"{path} lacks columns {sorted(need - cols)}: {layout}.")
    rows = list(reader)
  rng = np.random.default_rng(seed)
  files, labels, race, age = [], [], [], []
  for ri, (r, n) in enumerate(zip(FAIRFACE_RACES, counts)):
    cand = [row for row in rows if row["race"] == r]
    if len(cand) < n:
      raise UserError(f"FairFace race {r!r}: {n} images asked, {path} has {len(cand)}.")
    for j in sorted(rng.choice(len(cand), size=n, replace=False)) if n else ():
      row = cand[j]
      if row["gender"] not in GENDERS:
        raise UserError(f"{path}: gender {row['gender']!r} is not one of {list(GENDERS)}.")
      fp = os.path.join(root, row["file"])
      if check_files and not os.path.isfile(fp):
        raise UserError(f"FairFace image {fp!r} (listed in {path}) is missing: {layout}.")
      files.append(fp)
      labels.append(GENDERS.index(row["gender"]))
      race.append(ri)
      age.append(row["age"])
  return FairFaceSubset(
    tuple(files), np.asarray(labels, np.int32), np.asarray(race, np.int32), tuple(age)
  )
