"""Tiny-ImageNet from its original directory layout (kdjax.data.tiny_imagenet), on a fake
``tiny-imagenet-200`` folder built in tmp_path: 200 wnids, 2 training JPEGs per class, 5
validation JPEGs. Every image is one flat colour that encodes its class and position, so labels
and order are checked through the pixels (flat-colour JPEGs decode to within a few levels)."""

import os

import numpy as np
import pytest
from PIL import Image

from kdjax import data as kdata
from kdjax.data import tiny_imagenet as ti
from kdjax.errors import UserError

WNIDS = [f"n{10_000_000 + 7 * i:08d}" for i in range(200)]
PER_CLASS = 2
VAL = [
  ("val_3.JPEG", 17),
  ("val_0.JPEG", 199),
  ("val_2.JPEG", 0),
  ("val_1.JPEG", 5),
  ("val_4.JPEG", 17),
]


def _colour(label, k):
  return (label, 40 * k + 20, 200)


def _jpeg(path, colour, size=64, mode="RGB"):
  img = Image.new("RGB", (size, size), colour)
  if mode == "L":
    img = img.convert("L")
  img.save(path, "JPEG", quality=95)


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
  monkeypatch.delenv(ti.ENV_VAR, raising=False)
  root = tmp_path / "tiny-imagenet-200"
  order = np.random.RandomState(0).permutation(200)  # wnids.txt is not sorted
  (root / "val" / "images").mkdir(parents=True)
  (root / "wnids.txt").write_text("".join(WNIDS[i] + "\n" for i in order))
  for label, w in enumerate(WNIDS):
    d = root / "train" / w / "images"
    d.mkdir(parents=True)
    (root / "train" / w / f"{w}_boxes.txt").write_text("")
    for k in range(PER_CLASS):
      _jpeg(d / f"{w}_{k}.JPEG", _colour(label, k))
  with open(root / "val" / "val_annotations.txt", "w") as fh:
    for name, label in VAL:
      fh.write(f"{name}\t{WNIDS[label]}\t0\t0\t63\t63\n")
      _jpeg(root / "val" / "images" / name, _colour(label, 3))
  return str(root)


def _close(images, colours):
  np.testing.assert_allclose(
    images.reshape(len(images), -1, 3).mean(1), np.asarray(colours), atol=3
  )


def test_registry_info():
  info = kdata.info("tiny_imagenet")
  assert (info.num_classes, info.image_shape, info.in_memory) == (200, (64, 64, 3), True)
  assert (info.train_split, info.eval_split) == ("train", "validation")
  assert (info.num_train, info.num_eval) == (100_000, 10_000)


def test_missing_directory_is_one_line_user_error(tmp_path, monkeypatch):
  monkeypatch.delenv(ti.ENV_VAR, raising=False)
  with pytest.raises(ti.TinyImageNetNotFoundError) as e:
    ti.load("train", data_dir=str(tmp_path / "nothing"))
  assert isinstance(e.value, UserError) and isinstance(e.value, FileNotFoundError)
  msg = str(e.value)
  assert "\n" not in msg and ti.URL in msg and ti.ENV_VAR in msg
  assert "--config.dataset.data_dir" in msg and str(tmp_path / "nothing") in msg


def test_train_labels_follow_sorted_wnids(fake_root):
  images, labels, index = ti.load("train", data_dir=fake_root)
  assert images.shape == (400, 64, 64, 3) and images.dtype == np.uint8
  want = np.repeat(np.arange(200), PER_CLASS)
  np.testing.assert_array_equal(labels, want)
  np.testing.assert_array_equal(index, np.arange(400))
  _close(images, [_colour(y, k) for y in range(200) for k in range(PER_CLASS)])


def test_validation_from_annotations(fake_root):
  images, labels, index = ti.load("validation", data_dir=fake_root)
  rows = sorted(VAL)  # by file name
  np.testing.assert_array_equal(labels, [y for _, y in rows])
  np.testing.assert_array_equal(index, np.arange(5))
  _close(images, [_colour(y, 3) for _, y in rows])


def test_split_slices_limit_and_parent_dir(fake_root):
  parent = os.path.dirname(fake_root)  # the folder holding tiny-imagenet-200
  images, labels, index = ti.load("train[396:]+validation[:2]", data_dir=parent)
  np.testing.assert_array_equal(index, [396, 397, 398, 399, 0, 1])
  np.testing.assert_array_equal(labels, [198, 198, 199, 199, 199, 5])  # val_0, val_1
  _, labels, index = ti.load("train[10:]", data_dir=fake_root, limit=3)
  np.testing.assert_array_equal(index, [10, 11, 12])
  np.testing.assert_array_equal(labels, [5, 5, 6])
  with pytest.raises(UserError, match="'train' and 'validation'"):
    ti.load("test", data_dir=fake_root)
  with pytest.raises(UserError, match="bad split"):
    ti.load("train[", data_dir=fake_root)


def test_environment_variable(fake_root, monkeypatch):
  monkeypatch.setenv(ti.ENV_VAR, os.path.dirname(fake_root))
  assert ti.find_root(None) == fake_root
  _, labels, _ = ti.load("validation")
  assert len(labels) == 5


def test_greyscale_becomes_rgb_and_bad_sizes_are_rejected(fake_root):
  w = WNIDS[0]
  _jpeg(os.path.join(fake_root, "train", w, "images", f"{w}_0.JPEG"), (90, 90, 90), mode="L")
  images, _, _ = ti.load("train[:1]", data_dir=fake_root)
  assert images.shape == (1, 64, 64, 3)
  _close(images, [(90, 90, 90)])
  _jpeg(os.path.join(fake_root, "train", w, "images", f"{w}_1.JPEG"), (1, 2, 3), size=32)
  with pytest.raises(UserError, match="32x32, expected 64x64"):
    ti.load("train[:2]", data_dir=fake_root)


def test_full_split_is_cached(fake_root):
  first = ti.load("validation", data_dir=fake_root)[0]
  assert os.path.isfile(os.path.join(fake_root, "kdjax_cache_validation.npz"))
  # A changed JPEG is not re-read while the listing (files and labels) is unchanged.
  _jpeg(os.path.join(fake_root, "val", "images", "val_0.JPEG"), (0, 0, 0))
  np.testing.assert_array_equal(ti.load("validation", data_dir=fake_root)[0], first)
  os.remove(os.path.join(fake_root, "kdjax_cache_validation.npz"))
  again = ti.load("validation", data_dir=fake_root)[0]
  assert again[0].mean() < 3  # val_0 is first by file name


def test_wrong_wnid_count(fake_root):
  with open(os.path.join(fake_root, "wnids.txt"), "a") as fh:
    fh.write("n99999999\n")
  with pytest.raises(UserError, match="201 distinct wnids"):
    ti.load("validation", data_dir=fake_root)


def _load_arrays_reads_tiny_imagenet() -> bool:
  import inspect
  from kdjax.data import arrays

  return "tiny_imagenet" in inspect.getsource(arrays.load_arrays)


# Strict: once kdjax/data/arrays.py dispatches (the source check), the mark turns itself off.
@pytest.mark.xfail(
  not _load_arrays_reads_tiny_imagenet(),
  strict=True,
  raises=kdata.DatasetNotFoundError,
  reason="kdjax.data.load_arrays does not dispatch to kdjax.data.tiny_imagenet "
  "yet (kdjax/data/arrays.py, outside this branch's files)",
)
def test_train_loop_reads_the_directory(fake_root, tmp_path):
  from conftest import tiny_run_config
  from kdjax.train.loop import train_and_evaluate

  split = kdata.load_arrays("tiny_imagenet", "train[:8]", data_dir=fake_root)
  assert split.images.shape == (8, 64, 64, 3) and split.info.name == "tiny_imagenet"
  cfg = tiny_run_config(num_epochs=1)
  cfg.dataset.name, cfg.dataset.data_dir = "tiny_imagenet", fake_root
  cfg.dataset.train_limit, cfg.dataset.eval_limit = 16, 5
  s = train_and_evaluate(cfg, str(tmp_path / "run"))
  assert s["finished"] and s["step"] == 2 and s["last_top1"] is not None
