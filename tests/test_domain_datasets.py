"""The digit domains and PACS/VLCS as registered datasets (issue 14 item 5): ``kdjax.data.info`` /
``load_arrays`` for ``mnist_rgb`` / ``mnist_color`` / ``mnist_m`` / ``mnist_domains`` on fake MNIST
IDX files (MNIST is not installed on the test machines), the MNIST-missing message, an end-to-end
union teacher -> mnist_rgb KD student through ``train_and_evaluate`` with per-domain evaluation
(``configs/ojha/domains.py``), and ``pacs`` on a fake directory tree."""

import os
import struct

import numpy as np
import pytest
from PIL import Image, ImageDraw

from configs.ojha import domains as cfg_domains
from kdjax import data as kdata
from kdjax.config import base_config, validate
from kdjax.errors import UserError
from kdjax.methods import build_method
from kdjax.train import train_and_evaluate

DIGITS = ("mnist_rgb", "mnist_color", "mnist_m", "mnist_domains")


def _digits(n, seed):
  """Synthetic grey digits: PIL's default font, random offset and size, 28x28 uint8."""
  rs = np.random.RandomState(seed)
  labels = rs.randint(0, 10, n).astype(np.int32)
  out = np.zeros((n, 28, 28), np.uint8)
  for i, y in enumerate(labels):
    im = Image.new("L", (14, 14))
    ImageDraw.Draw(im).text((4 + rs.randint(-2, 3), 1 + rs.randint(-2, 3)), str(y), fill=255)
    out[i] = np.asarray(im.resize((28, 28), Image.BILINEAR))
  return out, labels


def _write_idx(path, arr):
  with open(path, "wb") as f:
    f.write(bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape))
    f.write(np.ascontiguousarray(arr, np.uint8).tobytes())


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
  """A fake MNIST IDX directory: 300 training and 100 test digits."""
  d = tmp_path_factory.mktemp("mnist")
  for prefix, (x, y) in (("train", _digits(300, 0)), ("t10k", _digits(100, 1))):
    _write_idx(d / f"{prefix}-images-idx3-ubyte", x)
    _write_idx(d / f"{prefix}-labels-idx1-ubyte", y)
  return str(d)


def test_digit_domains_are_registered_and_agree_with_their_loaded_splits(fake_mnist):
  for name in DIGITS:
    info = kdata.info(name)
    assert info.image_shape == (28, 28, 3) and info.num_classes == 10 and info.in_memory
    for split in ("train", "test"):
      s = kdata.load_arrays(name, split, idx_dir=fake_mnist)
      assert s.info == info  # one source of mean/std: training and evaluation normalise alike
      k = 3 if name == "mnist_domains" else 1
      assert s.images.shape == ((300 if split == "train" else 100) * k, 28, 28, 3)
      assert s.images.dtype == np.uint8 and len(set(s.index.tolist())) == len(s)
  # all digit domains share one normalisation (a union teacher sees a student's inputs as trained)
  assert len({(kdata.info(n).mean, kdata.info(n).std) for n in DIGITS}) == 1


def test_limit_and_slices_take_rows_of_the_full_split(fake_mnist):
  full = kdata.load_arrays("mnist_domains", "train", idx_dir=fake_mnist)
  part = kdata.load_arrays("mnist_domains", "train", idx_dir=fake_mnist, limit=10)
  assert len(part) == 10  # limit counts examples, as for every dataset
  np.testing.assert_array_equal(part.images, full.images[:10])  # a digit renders the same
  np.testing.assert_array_equal(part.index % 3, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0])  # balanced
  sl = kdata.load_arrays("mnist_m", "train[100:110]", idx_dir=fake_mnist)
  mm = kdata.load_arrays("mnist_m", "train", idx_dir=fake_mnist)
  np.testing.assert_array_equal(sl.images, mm.images[100:110])
  np.testing.assert_array_equal(sl.index, np.arange(100, 110))
  np.testing.assert_array_equal(full.images[2::3][100:110], sl.images)  # union row 3i+2 = M


def test_missing_mnist_is_one_message_naming_the_fix(tmp_path, monkeypatch):
  monkeypatch.delenv("KDJAX_MNIST_DIR", raising=False)
  where = str(tmp_path / "nowhere")
  with pytest.raises(kdata.DatasetNotFoundError) as e:
    kdata.load_arrays("mnist_color", "train", idx_dir=where, data_dir=str(tmp_path))
  msg = str(e.value)
  assert msg.startswith("Dataset 'mnist_color' (split 'train') is built from MNIST")
  for s in (repr(where), "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    assert s in msg
  assert "--config.dataset.idx_dir=DIR" in msg and "KDJAX_MNIST_DIR=DIR" in msg
  assert "Debian has no MNIST package" in msg
  assert "kdjax.data.prepare" not in msg  # not the nested TFDS instructions of plain 'mnist'


def _run(name, *, model="tiny_cnn", epochs=1):
  c = base_config()
  c.model = model
  c.dataset.name = name
  c.dataset.crop_pad = 2
  c.dataset.flip = False
  c.batch_size = 32
  c.eval_batch_size = 100
  c.num_epochs = epochs
  c.optim.lr = 0.05
  c.optim.reference_batch_size = 32
  c.optim.schedule = "constant"
  c.progress = False
  c.tensorboard = False
  c.async_checkpoint = False
  c.log_every_steps = 10
  return c


def test_union_teacher_then_mnist_rgb_student_end_to_end(tmp_path, fake_mnist):
  twd, swd = str(tmp_path / "teacher"), str(tmp_path / "kd")
  t = _run("mnist_domains")
  t.dataset.idx_dir = fake_mnist
  ts = train_and_evaluate(t, twd)
  s = _run("mnist_rgb")
  s.dataset.idx_dir = fake_mnist
  s.teacher.workdir = twd
  s.method.name = "kl"
  s.method.ce_weight = 0.1
  s.method.terms.kl = dict(
    weight=0.9, teacher_temperature=8.0, student_temperature=8.0, form="cross_entropy"
  )
  ss = train_and_evaluate(s, swd)
  assert ss["last_agreement"] is not None and np.isfinite(ss["last_top1"])
  per_t = cfg_domains.evaluate_domains(twd, idx_dir=fake_mnist)
  per_s = cfg_domains.evaluate_domains(swd, idx_dir=fake_mnist)
  assert sorted(per_t) == sorted(per_s) == sorted(cfg_domains.DIGIT_EVAL)
  # Consistency of the three paths (tolerance: one test example of 300 / 100, in case a near-tie
  # argmax differs between differently padded compiled batches):
  # the union's test split is the 100 digits in each domain, so its top-1 is the domains' mean;
  assert ts["last_top1"] == pytest.approx(np.mean(list(per_t.values())), abs=100 / 300)
  # the distillation run evaluated its teacher on mnist_rgb's test split, normalised as trained;
  assert ss["teacher_top1"] == pytest.approx(per_t["mnist_rgb"], abs=1.0)
  # and the student's own test split is mnist_rgb's.
  assert ss["last_top1"] == pytest.approx(per_s["mnist_rgb"], abs=1.0)


def test_domain_transfer_config_cells_build():
  for arg in ("teacher", "student", "kl", "hint", "crd", "pacs_teacher", "vlcs_student"):
    c = cfg_domains.get_config(arg)
    validate(c)
    m = build_method(c.method)
    assert m.needs_teacher == (arg in ("kl", "hint", "crd"))
    assert c.dataset.name in kdata.KNOWN_DATASETS
  kl = cfg_domains.get_config("kl,quick")
  assert kl.dataset.name == "mnist_rgb" and kl.num_epochs == 1 and kl.dataset.train_limit == 3000
  assert dict(kl.method.terms.kl) == dict(
    weight=0.9, teacher_temperature=8.0, student_temperature=8.0, form="cross_entropy"
  )
  assert cfg_domains.get_config("teacher").dataset.name == "mnist_domains"
  assert cfg_domains.get_config("pacs_teacher").dataset.train_split == (
    "art_painting+cartoon+photo+sketch"
  )
  with pytest.raises(ValueError, match="unknown cell"):
    cfg_domains.get_config("pacs_hint")


PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")


def _fake_pacs(root, per_class=2):
  for di, d in enumerate(kdata.registry.LODO_DOMAINS["pacs"]):
    for ci, c in enumerate(PACS_CLASSES):
      for k in range(per_class):
        p = os.path.join(root, d, c, f"{k}.png")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        Image.fromarray(np.full((6, 5, 3), 30 * di + ci, np.uint8)).save(p)


def test_pacs_leave_one_domain_out_as_a_dataset(tmp_path, monkeypatch):
  monkeypatch.delenv("KDJAX_PACS_DIR", raising=False)
  _fake_pacs(str(tmp_path))
  info = kdata.info("pacs")
  assert info.num_classes == 7 and info.eval_split == "photo"
  tr = kdata.load_arrays("pacs", info.train_split, data_dir=str(tmp_path))
  te = kdata.load_arrays("pacs", info.eval_split, data_dir=str(tmp_path))
  assert tr.images.shape == (3 * 14, 224, 224, 3) and len(te) == 14 and tr.info == info
  # pixel value 30·domain + class: the test split is photo (domain 2) only, labels match
  np.testing.assert_array_equal(te.images[:, 0, 0, 0], 60 + te.labels)
  assert sorted(set(tr.images[:, 0, 0, 0] // 30)) == [0, 1, 3]
  np.testing.assert_array_equal(tr.images[:, 0, 0, 0] % 30, tr.labels)
  assert len(set(tr.index.tolist()) | set(te.index.tolist())) == 56  # unique across domains
  # slices of a domain partition it and mix the classes (fixed shuffle within the domain)
  a = kdata.load_arrays("pacs", "photo[:50%]", data_dir=str(tmp_path))
  b = kdata.load_arrays("pacs", "photo[50%:]", data_dir=str(tmp_path))
  assert sorted(a.index.tolist() + b.index.tolist()) == sorted(te.index.tolist())
  assert len(set(a.labels.tolist())) > 1
  with pytest.raises(UserError, match="unknown domains"):
    kdata.load_arrays("pacs", "photo+clipart", data_dir=str(tmp_path))
  with pytest.raises(kdata.DatasetNotFoundError, match="KDJAX_PACS_DIR"):
    kdata.load_arrays("pacs", "photo", data_dir=str(tmp_path / "nope"))
