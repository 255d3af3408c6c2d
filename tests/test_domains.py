"""kdjax/data/domains.py: MNIST-Color / MNIST-M-style builders on synthetic digits (MNIST itself is
not installed on the test machines), PACS/VLCS leave-one-domain-out and FairFace subsets on fake
trees in tmp_path."""

import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kdjax.data import domains as D
from kdjax.errors import UserError


def _digits(n=40, seed=0):
  """Synthetic grey digits: PIL's default font drawn at a random offset, 28x28 uint8."""
  rs = np.random.RandomState(seed)
  labels = rs.randint(0, 10, n).astype(np.int32)
  out = np.zeros((n, 28, 28), np.uint8)
  for i, y in enumerate(labels):
    im = Image.new("L", (28, 28))
    ImageDraw.Draw(im).text((8 + rs.randint(-3, 4), 6 + rs.randint(-3, 4)), str(y), fill=255)
    out[i] = np.asarray(im.resize((28, 28)))
  return out, labels


def test_mnist_color_random_mode_colours_only_the_strokes():
  x, y = _digits()
  col, yl, colours = D.mnist_color(x, y, seed=1)
  assert col.shape == (40, 28, 28, 3) and col.dtype == np.uint8
  np.testing.assert_array_equal(yl, y)
  np.testing.assert_array_equal(col[x == 0], 0)  # background stays black
  full = x == 255  # fully-on strokes = the colour
  for i in range(40):
    np.testing.assert_array_equal(col[i][full[i]], np.broadcast_to(colours[i], (full[i].sum(), 3)))
  assert len({tuple(c) for c in colours}) > 30  # colours vary per image
  np.testing.assert_array_equal(D.mnist_color(x, y, seed=1)[0], col)  # seeded
  assert not np.array_equal(D.mnist_color(x, y, seed=2)[0], col)


def test_mnist_color_class_mode_is_a_spurious_correlation():
  x, y = _digits(400)
  _, _, colours = D.mnist_color(x, y, mode="class", p_correlated=1.0)
  np.testing.assert_array_equal(colours, D.CLASS_PALETTE[y])
  _, _, c9 = D.mnist_color(x, y, mode="class", p_correlated=0.9, seed=3)
  match = (c9 == D.CLASS_PALETTE[y]).all(1)
  assert 0.85 < match.mean() < 0.95  # 400 draws: s.e. 0.015
  # the uncorrelated images take another palette colour, never their own
  assert all(tuple(c) in {tuple(p) for p in D.CLASS_PALETTE} for c in c9[~match])
  with pytest.raises(UserError):
    D.mnist_color(x, y, mode="stripes")
  with pytest.raises(UserError):
    D.mnist_color(x.astype(np.float32), y)


def test_mnist_m_blends_digits_with_colour_patches():
  x, y = _digits()
  mm, yl = D.mnist_m(x, y, seed=0)
  assert mm.shape == (40, 28, 28, 3) and mm.dtype == np.uint8
  np.testing.assert_array_equal(yl, y)
  # |patch - digit|: where the digit is 0 the pixel is the patch (a colour texture), where it is
  # 255 it is 255 - patch; so pixels on and off the strokes sum to 255 exactly per channel only
  # if the patch is constant. Check the blend with given textures instead:
  tex = np.random.RandomState(0).randint(0, 256, (3, 40, 40, 3)).astype(np.uint8)
  mt, _ = D.mnist_m(x, y, seed=5, textures=tex)
  rng = np.random.default_rng(5)
  which = rng.integers(0, 3, 40)
  oy, ox = rng.integers(0, 13, 40), rng.integers(0, 13, 40)
  for i in (0, 17, 39):
    patch = tex[which[i], oy[i] : oy[i] + 28, ox[i] : ox[i] + 28].astype(int)
    np.testing.assert_array_equal(mt[i], np.abs(patch - x[i][..., None].astype(int)))
  # the procedural patches are coloured: channels differ and vary spatially
  t = D.procedural_textures(8, seed=0)
  assert t.shape == (8, 28, 28, 3)
  assert (t.std(axis=(1, 2)) > 10).all() and np.abs(t[..., 0].astype(int) - t[..., 1]).mean() > 10
  with pytest.raises(UserError):
    D.mnist_m(x, y, textures=tex[:, :20, :20])


def test_digit_domains_union():
  x, y = _digits(10)
  im, lab, dom = D.digit_domains(x, y)
  assert im.shape == (30, 28, 28, 3)
  np.testing.assert_array_equal(dom, np.repeat([0, 1, 2], 10))
  np.testing.assert_array_equal(lab, np.tile(y, 3))
  np.testing.assert_array_equal(im[:10, ..., 1], x)  # MNIST: grey replicated


def _touch_image(path, value=128):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full((6, 5, 3), value, np.uint8)).save(path)


def test_lodo_split_on_a_fake_pacs_tree(tmp_path):
  doms, classes = ("art_painting", "cartoon", "photo", "sketch"), ("dog", "horse")
  for di, d in enumerate(doms):
    for ci, c in enumerate(classes):
      for k in range(di + ci + 1):
        _touch_image(str(tmp_path / d / c / f"{k}.jpg"), 10 * di + ci)
  train, test = D.lodo_split(tmp_path, "photo")
  assert train.classes == classes and train.domain_names == doms
  assert set(test.domains) == {2} and 2 not in set(train.domains)
  assert len(test) == 3 + 4 and len(train) == (1 + 2) + (2 + 3) + (4 + 5)
  assert all(os.sep + "photo" + os.sep in f for f in test.files)
  np.testing.assert_array_equal(test.labels, [0] * 3 + [1] * 4)
  imgs = D.load_images(test.files, size=4)
  assert imgs.shape == (7, 4, 4, 3)
  np.testing.assert_array_equal(imgs[:, 0, 0, 0], [20] * 3 + [21] * 4)
  tr2, te2 = D.lodo_split(tmp_path, "sketch", domains=("photo", "sketch"))
  assert set(tr2.domains) == {0} and len(te2) == 4 + 5


def test_lodo_split_errors_name_the_layout(tmp_path):
  with pytest.raises(UserError, match=r"<root>/<domain>/<class>/\*\.jpg"):
    D.lodo_split(tmp_path / "nope", "photo")
  _touch_image(str(tmp_path / "photo" / "dog" / "a.jpg"))
  (tmp_path / "sketch" / "cat").mkdir(parents=True)
  with pytest.raises(UserError, match="lacks class directories"):
    D.lodo_split(tmp_path, "photo")
  with pytest.raises(UserError, match="not one of the domains"):
    D.lodo_split(tmp_path, "Caltech101", domains=("photo",))


def _fake_fairface(root, per_race=5):
  rows = ["file,age,gender,race,service_test"]
  k = 0
  for r in D.FAIRFACE_RACES:
    for j in range(per_race):
      f = f"train/{k}.jpg"
      _touch_image(os.path.join(root, f), k % 256)
      rows.append(f"{f},20-29,{'Male' if j % 2 else 'Female'},{r},True")
      k += 1
  with open(os.path.join(root, "fairface_label_train.csv"), "w") as fh:
    fh.write("\n".join(rows) + "\n")


def test_fairface_subset_on_a_fake_tree(tmp_path):
  _fake_fairface(str(tmp_path))
  s = D.fairface_subset(tmp_path, (3, 1, 0, 2, 5, 0, 4), seed=0)
  assert len(s) == 15
  np.testing.assert_array_equal(np.bincount(s.race, minlength=7), [3, 1, 0, 2, 5, 0, 4])
  assert set(s.labels) <= {0, 1}
  s2 = D.fairface_subset(tmp_path, (3, 1, 0, 2, 5, 0, 4), seed=0)
  assert s2.files == s.files and np.array_equal(s2.labels, s.labels)  # seeded
  assert D.fairface_subset(tmp_path, (3, 1, 0, 2, 5, 0, 4), seed=1).files != s.files
  m = D.fairface_subset(tmp_path, {"Black": 2, "Indian": 5})
  np.testing.assert_array_equal(np.bincount(m.race, minlength=7), [0, 2, 0, 0, 0, 5, 0])
  # gender labels follow the CSV: the fake tree alternates Female/Male within each race
  assert sorted(m.labels[m.race == 5].tolist()) == [0, 0, 1, 1, 1]
  with pytest.raises(UserError, match="4000 images asked"):
    D.fairface_subset(tmp_path, "teacher")
  with pytest.raises(UserError, match="unknown FairFace races"):
    D.fairface_subset(tmp_path, {"Martian": 1})
  os.remove(tmp_path / "train" / "0.jpg")
  with pytest.raises(UserError, match="missing"):
    D.fairface_subset(tmp_path, (5, 0, 0, 0, 0, 0, 0))


def test_fairface_absent_names_the_layout(tmp_path):
  with pytest.raises(UserError, match="file,age,gender,race"):
    D.fairface_subset(tmp_path, "student")


def _write_idx(path, arr):
  import struct  # pylint: disable=g-import-not-at-top

  code = {np.dtype(np.uint8): 0x08}[arr.dtype]
  with open(path, "wb") as f:
    f.write(bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape))
    f.write(arr.tobytes())


def test_load_digit_domain_from_fake_mnist_idx_files(tmp_path):
  x, y = _digits(30)
  for prefix, (xi, yi) in (("train", (x[:20], y[:20])), ("t10k", (x[20:], y[20:]))):
    _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", xi)
    _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", yi.astype(np.uint8))
  tr = D.load_digit_domain("mnist_domains", "train", idx_dir=str(tmp_path))
  assert tr.images.shape == (60, 28, 28, 3) and tr.info.num_classes == 10
  np.testing.assert_array_equal(tr.labels, np.repeat(y[:20], 3))  # digit-major rows
  np.testing.assert_array_equal(tr.index, np.arange(60))  # 3 * digit + domain
  np.testing.assert_array_equal(tr.images[0::3, ..., 1], x[:20])  # domain 0: grey replicated
  # domain 1 / 2 rows are the single-domain datasets' rows
  col = D.load_digit_domain("mnist_color", "train", idx_dir=str(tmp_path))
  mm = D.load_digit_domain("mnist_m", "train", idx_dir=str(tmp_path))
  np.testing.assert_array_equal(tr.images[1::3], col.images)
  np.testing.assert_array_equal(tr.images[2::3], mm.images)
  te = D.load_digit_domain("mnist_m", "test", idx_dir=str(tmp_path))
  assert te.images.shape == (10, 28, 28, 3)
  assert not np.array_equal(te.images, mm.images[:10])  # seed + 1000 textures / patches
  # one normalisation for every digit domain: the registry's (MNIST's statistics)
  assert tr.info == D.registry.info("mnist_domains") and te.info.mean == tr.info.mean
  with pytest.raises(UserError):
    D.load_digit_domain("svhn", "train", idx_dir=str(tmp_path))
  with pytest.raises(UserError, match="splits 'train' and 'test'"):
    D.load_digit_domain("mnist_m", "validation", idx_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="IDX"):
    D.load_digit_domain("mnist_color", "train", idx_dir=str(tmp_path / "none"))


def test_keyed_draws_do_not_depend_on_the_other_examples():
  x, y = _digits(12)
  idx = np.arange(100, 112)
  full, _, c_full = D.mnist_color(x, y, seed=4, index=idx)
  part, _, c_part = D.mnist_color(x[5:9], y[5:9], seed=4, index=idx[5:9])
  np.testing.assert_array_equal(part, full[5:9])
  np.testing.assert_array_equal(c_part, c_full[5:9])
  mf, _ = D.mnist_m(x, y, seed=4, index=idx, num_textures=8)
  mp, _ = D.mnist_m(x[5:9], y[5:9], seed=4, index=idx[5:9], num_textures=8)
  np.testing.assert_array_equal(mp, mf[5:9])
  # another seed, other draws; the uniforms are spread over [0, 1)
  assert not np.array_equal(D.mnist_color(x, y, seed=5, index=idx)[2], c_full)
  u = D.keyed_uniform(0, np.arange(4000), 3)
  assert u.min() >= 0 and u.max() < 1
  # 12,000 uniforms: mean 0.5 with s.e. 0.0026, deciles 0.1 with s.e. 0.0027
  assert abs(u.mean() - 0.5) < 0.015
  np.testing.assert_allclose(np.histogram(u, bins=10, range=(0, 1))[0] / u.size, 0.1, atol=0.015)
  # class mode with keyed draws: the wrong colours are never the class's own
  _, _, cc = D.mnist_color(x, y, seed=1, mode="class", p_correlated=0.5, index=idx)
  own = (cc == D.CLASS_PALETTE[y]).all(1)
  assert all(tuple(c) in {tuple(p) for p in D.CLASS_PALETTE} for c in cc[~own])
