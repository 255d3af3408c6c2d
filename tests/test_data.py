"""Tests for kdjax.data (no network, no TensorFlow)."""

from __future__ import annotations

import gzip
import io
import os
import struct
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import kdjax.data as kd
from kdjax.data import idx, prepare, stream

FASHION_DIR = '/usr/share/datasets/fashion-mnist'


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
  """Any attempt to reach the TFDS downloader fails the test at once."""
  from tensorflow_datasets.core.download import download_manager as dm

  def boom(*a, **k):
    raise AssertionError('the TFDS downloader was reached')

  for attr in ('download', 'download_and_extract', 'extract'):
    monkeypatch.setattr(dm.DownloadManager, attr, boom)
  for var in ('KDJAX_MNIST_DIR', 'KDJAX_FASHION_MNIST_DIR', 'TFDS_DATA_DIR'):
    monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------- registry


def test_info_values():
  c100 = kd.info('cifar100')
  assert c100.num_classes == 100 and c100.image_shape == (32, 32, 3)
  assert c100.mean == (0.5071, 0.4867, 0.4408)
  assert c100.std == (0.2675, 0.2565, 0.2761)
  assert (c100.train_split, c100.eval_split) == ('train', 'test')
  assert (c100.num_train, c100.num_eval) == (50_000, 10_000) and c100.in_memory
  c10 = kd.info('cifar10')
  assert c10.num_classes == 10
  assert c10.mean == (0.4914, 0.4822, 0.4465)
  assert c10.std == (0.2470, 0.2435, 0.2616)
  m = kd.info('mnist')
  assert (m.mean, m.std, m.image_shape) == ((0.1307,), (0.3081,), (28, 28, 1))
  f = kd.info('fashion_mnist')
  assert (f.mean, f.std, f.num_classes) == ((0.2860,), (0.3530,), 10)
  assert (f.num_train, f.num_eval) == (60_000, 10_000) and f.in_memory
  im = kd.info('imagenet2012')
  assert im.mean == (0.485, 0.456, 0.406) and im.std == (0.229, 0.224, 0.225)
  assert im.num_classes == 1000 and not im.in_memory
  assert im.eval_split == 'validation'
  assert set(kd.KNOWN_DATASETS) == {
    'cifar10',
    'cifar100',
    'mnist',
    'fashion_mnist',
    'imagenet2012',
    'tiny_imagenet',
    'mnist_rgb',
    'mnist_color',
    'mnist_m',
    'mnist_domains',
    'pacs',
    'vlcs',
  }
  hash(c100)  # frozen, usable as a static jit argument


def test_unknown_name_is_value_error():
  with pytest.raises(ValueError, match='cifar100') as e:
    kd.info('svhn')
  assert 'fashion_mnist' in str(e.value) and 'imagenet2012' in str(e.value)
  with pytest.raises(ValueError, match='svhn'):
    kd.load_arrays('svhn', 'train')
  with pytest.raises(ValueError, match='HostStream'):
    kd.load_arrays('imagenet2012', 'train')


# ---------------------------------------------------------------- TFDS path


def test_mock_cifar100_load_arrays():
  with tfds.testing.mock_data(num_examples=20):
    s = kd.load_arrays('cifar100', 'train')
    part = kd.load_arrays('cifar100', 'test', limit=5)
  assert s.images.dtype == np.uint8 and s.images.shape == (20, 32, 32, 3)
  assert s.labels.dtype == np.int32 and s.labels.shape == (20,)
  assert s.index.dtype == np.int32
  np.testing.assert_array_equal(s.index, np.arange(20))
  assert s.labels.min() >= 0 and s.labels.max() < 100
  assert s.info is kd.info('cifar100') and s.split == 'train' and len(s) == 20
  assert part.images.shape == (5, 32, 32, 3) and part.split == 'test'

  sub = s.subset(3)
  assert len(sub) == 3 and sub.images.shape == (3, 32, 32, 3)
  sub = s.subset(np.array([7, 2, 11]))
  np.testing.assert_array_equal(sub.index, [7, 2, 11])
  np.testing.assert_array_equal(sub.images[1], s.images[2])
  np.testing.assert_array_equal(sub.subset([2]).index, [11])  # keeps index


def _png(a):
  b = io.BytesIO()
  Image.fromarray(a).save(b, format='PNG')
  return b.getvalue()


def _fixture_image(i):
  img = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  img[0, 0, :2] = (i // 256, i % 256)  # the image says which example it is
  return img


@pytest.fixture(scope='module')
def cifar10_dir(tmp_path_factory):
  """A real, tiny prepared TFDS cifar10 (array_record) built without TF:
  images are PNG-encoded with PIL, which tfds.features.Image accepts."""
  base = tfds.builder_cls('cifar10')

  class TinyCifar10(base, skip_registration=True):
    name = 'cifar10'

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._gen(range(60)), 'test': self._gen(range(60, 80))}

    def _gen(self, ids):
      for i in ids:
        yield i, {'id': f'ex_{i}', 'image': _png(_fixture_image(i)), 'label': i % 10}

  d = tmp_path_factory.mktemp('tfds')
  TinyCifar10(data_dir=os.fspath(d), file_format='array_record').download_and_prepare()
  return os.fspath(d)


def test_prepared_array_record_and_split_slicing(cifar10_dir):
  s = kd.load_arrays('cifar10', 'train', data_dir=cifar10_dir)
  assert s.images.shape == (60, 32, 32, 3) and s.images.dtype == np.uint8
  np.testing.assert_array_equal(s.index, np.arange(60))
  ids = s.images[:, 0, 0, 0].astype(int) * 256 + s.images[:, 0, 0, 1]
  assert sorted(ids) == list(range(60))  # TFDS stores in its own order
  for k in range(0, 60, 7):
    np.testing.assert_array_equal(s.images[k], _fixture_image(ids[k]))
  np.testing.assert_array_equal(s.labels, ids % 10)

  head = kd.load_arrays('cifar10', 'train[:50%]', data_dir=cifar10_dir)
  np.testing.assert_array_equal(head.index, np.arange(30))
  np.testing.assert_array_equal(head.images, s.images[:30])
  tail = kd.load_arrays('cifar10', 'train[-10:]', data_dir=cifar10_dir)
  np.testing.assert_array_equal(tail.index, np.arange(50, 60))
  np.testing.assert_array_equal(tail.images, s.images[50:])
  lim = kd.load_arrays('cifar10', 'train[10:]', data_dir=cifar10_dir, limit=4)
  np.testing.assert_array_equal(lim.index, [10, 11, 12, 13])
  test = kd.load_arrays('cifar10', 'test', data_dir=cifar10_dir)
  assert len(test) == 20

  # The fast decoding path is taken and agrees with TFDS's own decoding.
  from kdjax.data import arrays

  src = tfds.data_source('cifar10', split='train', data_dir=cifar10_dir, download=False)
  fast = arrays._fast_arrays('cifar10', 'train', cifar10_dir, src, len(src))
  assert fast is not None
  ref = arrays.source_to_arrays(src, chunk=16)
  np.testing.assert_array_equal(fast[0], ref[0])
  np.testing.assert_array_equal(fast[1], ref[1])

  with pytest.raises(ValueError, match='validation') as e:
    kd.load_arrays('cifar10', 'validation', data_dir=cifar10_dir)
  assert e.value.__cause__ is None and e.value.__suppress_context__


def test_missing_dataset_error_is_quick_and_clear(tmp_path):
  t = time.perf_counter()
  with pytest.raises(kd.DatasetNotFoundError) as e:
    kd.load_arrays('cifar10', 'train', data_dir=os.fspath(tmp_path))
  assert time.perf_counter() - t < 5
  msg = str(e.value)
  assert isinstance(e.value, FileNotFoundError)
  assert 'cifar10' in msg and 'prepare' in msg
  assert 'cifar-10-binary.tar.gz' in msg and 'downloads/manual' in msg
  assert f'python -m kdjax.data.prepare cifar10 --data_dir {tmp_path}' in msg
  assert e.value.__cause__ is None and e.value.__suppress_context__

  with pytest.raises(kd.DatasetNotFoundError, match='cifar-100-binary.tar.gz'):
    kd.load_arrays('cifar100', 'test', data_dir=os.fspath(tmp_path))
  with pytest.raises(kd.DatasetNotFoundError, match='ILSVRC2012_img_train.tar'):
    kd.HostStream(
      'imagenet2012', 'train', batch_size=2, seed=0, train=True, data_dir=os.fspath(tmp_path)
    )
  empty = tmp_path / 'no_idx'
  empty.mkdir()
  with pytest.raises(kd.DatasetNotFoundError) as e:
    kd.load_arrays('fashion_mnist', 'train', data_dir=os.fspath(tmp_path), idx_dir=os.fspath(empty))
  msg = str(e.value)
  assert 'apt-get install dataset-fashion-mnist' in msg
  assert 'KDJAX_FASHION_MNIST_DIR' in msg and os.fspath(empty) in msg


# ---------------------------------------------------------------- IDX path


def _idx_bytes(arr, code=0x08):
  arr = np.asarray(arr)
  head = bytes([0, 0, code, arr.ndim]) + struct.pack(f'>{arr.ndim}I', *arr.shape)
  be = {0x08: 'u1', 0x0C: '>i4', 0x0D: '>f4'}[code]
  return head + arr.astype(be).tobytes()


def _write_idx_dir(d, n_train=5, n_test=3, gz=True):
  rng = np.random.default_rng(0)
  data = {}
  for prefix, n in (('train', n_train), ('t10k', n_test)):
    imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,), dtype=np.uint8)
    data[prefix] = (imgs, labels)
    for kind, arr in (('images-idx3', imgs), ('labels-idx1', labels)):
      raw = _idx_bytes(arr)
      if gz:
        (d / f'{prefix}-{kind}-ubyte.gz').write_bytes(gzip.compress(raw))
      else:
        (d / f'{prefix}-{kind}-ubyte').write_bytes(raw)
  return data


@pytest.mark.parametrize('gz', [True, False])
def test_idx_loader_handwritten(tmp_path, gz):
  src = tmp_path / 'idx'
  src.mkdir()
  data = _write_idx_dir(src, gz=gz)
  empty = os.fspath(tmp_path / 'tfds')
  s = kd.load_arrays('mnist', 'train', data_dir=empty, idx_dir=os.fspath(src))
  assert s.images.shape == (5, 28, 28, 1) and s.images.dtype == np.uint8
  assert s.labels.dtype == np.int32 and s.index.dtype == np.int32
  np.testing.assert_array_equal(s.images[..., 0], data['train'][0])
  np.testing.assert_array_equal(s.labels, data['train'][1])
  np.testing.assert_array_equal(s.index, np.arange(5))
  t = kd.load_arrays('mnist', 'test[1:]', data_dir=empty, idx_dir=os.fspath(src))
  np.testing.assert_array_equal(t.index, [1, 2])
  np.testing.assert_array_equal(t.labels, data['t10k'][1][1:])
  lim = kd.load_arrays('mnist', 'train', data_dir=empty, idx_dir=os.fspath(src), limit=2)
  np.testing.assert_array_equal(lim.images[..., 0], data['train'][0][:2])


def test_idx_env_var(tmp_path, monkeypatch):
  _write_idx_dir(tmp_path)
  monkeypatch.setenv('KDJAX_MNIST_DIR', os.fspath(tmp_path))
  s = kd.load_arrays('mnist', 'test', data_dir=os.fspath(tmp_path / 'none'))
  assert s.images.shape == (3, 28, 28, 1)


def test_read_idx_dtypes_and_errors(tmp_path):
  a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
  p = tmp_path / 'ints'
  p.write_bytes(_idx_bytes(a, 0x0C))
  out = kd.read_idx(p)
  np.testing.assert_array_equal(out, a)
  assert out.dtype == np.int32 and out.dtype.isnative
  f = np.linspace(-1, 1, 6, dtype=np.float32)
  (tmp_path / 'f.gz').write_bytes(gzip.compress(_idx_bytes(f, 0x0D)))
  np.testing.assert_array_equal(kd.read_idx(tmp_path / 'f.gz'), f)
  assert idx.read_idx_header(p) == (np.dtype('>i4'), (2, 3, 4))
  np.testing.assert_array_equal(kd.read_idx(p, max_items=1), a[:1])

  raw = _idx_bytes(np.zeros((4, 28, 28), np.uint8))
  trunc = tmp_path / 'trunc-images-idx3-ubyte'
  trunc.write_bytes(raw[:-10])
  with pytest.raises(kd.IdxFormatError, match='truncated') as e:
    kd.read_idx(trunc)
  assert str(trunc) in str(e.value)
  trunc_gz = tmp_path / 'trunc.gz'
  trunc_gz.write_bytes(gzip.compress(raw)[:-30])
  with pytest.raises(kd.IdxFormatError, match='trunc.gz'):
    kd.read_idx(trunc_gz)
  bad = tmp_path / 'bad'
  bad.write_bytes(b'\x12\x34\x08\x01' + raw[4:])
  with pytest.raises(kd.IdxFormatError, match='bad magic'):
    kd.read_idx(bad)
  extra = tmp_path / 'extra'
  extra.write_bytes(raw + b'\0')
  with pytest.raises(kd.IdxFormatError, match='trailing'):
    kd.read_idx(extra)
  assert issubclass(kd.IdxFormatError, ValueError)


def test_truncated_idx_in_load_arrays_names_file(tmp_path):
  _write_idx_dir(tmp_path, gz=False)
  f = tmp_path / 'train-images-idx3-ubyte'
  f.write_bytes(f.read_bytes()[:-100])
  with pytest.raises(kd.IdxFormatError, match='train-images-idx3-ubyte'):
    kd.load_arrays(
      'mnist', 'train', data_dir=os.fspath(tmp_path / 'x'), idx_dir=os.fspath(tmp_path)
    )


@pytest.mark.skipif(
  not os.path.isdir(FASHION_DIR),
  reason=f'{FASHION_DIR} missing: apt-get install dataset-fashion-mnist',
)
def test_fashion_mnist_real_idx(tmp_path):
  empty = os.fspath(tmp_path)  # no prepared TFDS copy -> IDX files
  train = kd.load_arrays('fashion_mnist', 'train', data_dir=empty)
  test = kd.load_arrays('fashion_mnist', 'test', data_dir=empty)
  assert train.images.shape == (60_000, 28, 28, 1)
  assert test.images.shape == (10_000, 28, 28, 1)
  for s in (train, test):
    assert s.images.dtype == np.uint8 and s.labels.dtype == np.int32
    assert set(np.unique(s.labels)) == set(range(10))
    np.testing.assert_array_equal(s.index, np.arange(len(s)))
  # Matches the registered normalisation constants.
  assert abs(train.images.mean() / 255 - 0.2860) < 1e-3
  assert abs(train.images.std() / 255 - 0.3530) < 1e-3


# ---------------------------------------------------------------- augment


def test_crop_flip_identity():
  x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), np.uint8)
  y = kd.random_crop_flip(x, jax.random.key(0), pad=0, flip=False)
  assert y.dtype == jnp.uint8
  np.testing.assert_array_equal(y, x)


_crop_flip = jax.jit(kd.random_crop_flip, static_argnames=('pad', 'flip'))


def _windows(x, pad):
  """(2*pad+1, 2*pad+1, B, H, W, C): every HxW window of the padded batch."""
  _, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return np.stack(
    [
      np.stack([xp[:, i : i + h, j : j + w] for j in range(2 * pad + 1)])
      for i in range(2 * pad + 1)
    ]
  )


def test_crop_is_window_of_padded_image():
  b, h, w, pad = 300, 8, 8, 2
  x = np.arange(b * h * w * 2, dtype=np.float32).reshape(b, h, w, 2) + 1
  y = np.asarray(_crop_flip(x, jax.random.key(1), pad=pad, flip=False))
  assert y.shape == x.shape and y.dtype == np.float32
  win = _windows(x, pad)
  hits = np.all(win == y, axis=(3, 4, 5))  # (2p+1, 2p+1, B)
  np.testing.assert_array_equal(hits.sum(axis=(0, 1)), 1)  # one window each
  # Every offset in [0, 2*pad]^2 occurs.
  assert np.all(hits.any(axis=2))

  # With flipping, each output is a window or the mirror of one.
  yf = np.asarray(_crop_flip(x, jax.random.key(2), pad=pad, flip=True))
  plain = np.all(win == yf, axis=(3, 4, 5)).any(axis=(0, 1))
  mirrored = np.all(win[:, :, :, :, ::-1] == yf, axis=(3, 4, 5)).any(axis=(0, 1))
  assert np.all(plain | mirrored) and mirrored.any() and plain.any()


def test_flip_probability_and_determinism():
  b = 4000
  x = (
    np.broadcast_to(np.arange(4, dtype=np.uint8), (b, 2, 4, 4)).transpose(0, 1, 3, 2).copy()
  )  # columns differ
  assert not np.array_equal(x[0], x[0][:, ::-1])
  y = np.asarray(_crop_flip(x, jax.random.key(3), pad=0, flip=True))
  flipped = np.all(y == x[:, :, ::-1], axis=(1, 2, 3))
  kept = np.all(y == x, axis=(1, 2, 3))
  assert np.all(flipped ^ kept)
  assert abs(flipped.mean() - 0.5) < 0.04

  z = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), np.uint8)
  a1 = _crop_flip(z, jax.random.key(7))
  a2 = _crop_flip(z, jax.random.key(7))
  a3 = _crop_flip(z, jax.random.key(8))
  np.testing.assert_array_equal(a1, a2)
  assert not np.array_equal(a1, a3)


def test_normalize_and_transforms():
  info = kd.info('cifar100')
  x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8)
  want = (x / 255.0 - np.array(info.mean)) / np.array(info.std)
  got = kd.normalize(x, info.mean, info.std)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(kd.eval_transform(info, x), want, rtol=1e-5, atol=1e-5)
  step = jax.jit(lambda im, k: kd.train_transform(info, im, k))
  out = step(x, jax.random.key(0))
  assert out.shape == x.shape and out.dtype == jnp.float32
  # crop_pad=0, flip=False: train == eval.
  np.testing.assert_allclose(
    kd.train_transform(info, x, jax.random.key(0), crop_pad=0, flip=False),
    want,
    rtol=1e-5,
    atol=1e-5,
  )
  m = kd.info('fashion_mnist')
  xm = np.full((2, 28, 28, 1), 255, np.uint8)
  np.testing.assert_allclose(kd.eval_transform(m, xm), (1 - 0.2860) / 0.3530, rtol=1e-5)


# ---------------------------------------------------------------- batching


def test_batch_indices():
  n, bs = 103, 10
  e0 = kd.batch_indices(n, bs, seed=1, epoch=0)
  assert [len(b) for b in e0] == [10] * 10 + [3]
  np.testing.assert_array_equal(np.sort(np.concatenate(e0)), np.arange(n))
  e0b = kd.batch_indices(n, bs, seed=1, epoch=0)
  assert all(np.array_equal(a, b) for a, b in zip(e0, e0b))
  e1 = kd.batch_indices(n, bs, seed=1, epoch=1)
  np.testing.assert_array_equal(np.sort(np.concatenate(e1)), np.arange(n))
  assert not np.array_equal(np.concatenate(e0), np.concatenate(e1))
  s2 = kd.batch_indices(n, bs, seed=2, epoch=0)
  assert not np.array_equal(np.concatenate(e0), np.concatenate(s2))
  dropped = kd.batch_indices(n, bs, seed=1, epoch=0, drop_remainder=True)
  assert [len(b) for b in dropped] == [10] * 10
  plain = kd.batch_indices(7, 3, seed=0, epoch=5, shuffle=False)
  assert [b.tolist() for b in plain] == [[0, 1, 2], [3, 4, 5], [6]]
  assert kd.batch_indices(0, 4, seed=0, epoch=0) == []


# ---------------------------------------------------------------- stream


def test_host_stream_mock_imagenet():
  with tfds.testing.mock_data(num_examples=10):
    tr = kd.HostStream('imagenet2012', 'train', batch_size=4, seed=3, train=True)
    ev = kd.HostStream('imagenet2012', 'validation', batch_size=4, seed=3, train=False)
    assert len(tr) == 2 and len(ev) == 3
    b0 = list(tr.iter_epoch(0))
    b0_again = list(tr.iter_epoch(0))
    b1 = list(tr.iter_epoch(1))
    e = list(ev)
  assert len(b0) == 2
  for b in b0:
    assert b['image'].shape == (4, 224, 224, 3) and b['image'].dtype == np.uint8
    assert b['label'].dtype == np.int32 and b['index'].dtype == np.int32
    assert b['label'].min() >= 0 and b['label'].max() < 1000
  for a, b in zip(b0, b0_again):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(b0[0]['image'], b1[0]['image'])
  assert [len(b['label']) for b in e] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([b['index'] for b in e]), np.arange(10))
  assert tr.epoch == 0 and ev.epoch == 1


def test_stream_transforms():
  rng = np.random.default_rng(0)
  for hw in [(375, 500), (500, 100), (40, 1000), (224, 224)]:
    for _ in range(20):
      top, left, h, w = stream.random_resized_crop_box(*hw, rng)
      assert 0 <= top and top + h <= hw[0] and 0 <= left and left + w <= hw[1]
      assert h > 0 and w > 0
  img = rng.integers(0, 256, (375, 500, 3), np.uint8)
  out = stream.train_image_transform(img, np.random.default_rng(1))
  assert out.shape == (224, 224, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, stream.train_image_transform(img, np.random.default_rng(1)))
  gray = rng.integers(0, 256, (100, 80), np.uint8)
  assert stream.train_image_transform(gray, rng).shape == (224, 224, 3)
  # Resize(256) of a 256x320 image is a no-op, so the centre crop is exact.
  img = rng.integers(0, 256, (256, 320, 3), np.uint8)
  np.testing.assert_array_equal(stream.eval_image_transform(img), img[16:240, 48:272])
  assert stream.eval_image_transform(rng.integers(0, 256, (333, 500, 3), np.uint8)).shape == (
    224,
    224,
    3,
  )


# ---------------------------------------------------------------- prepare


def test_prepare_args_and_tf_missing(monkeypatch, capsys, tmp_path):
  a = prepare.parse_args(['cifar100', '--data_dir', '/d'])
  assert (a.name, a.data_dir, a.manual_dir) == ('cifar100', '/d', None)
  a = prepare.parse_args(['mnist', '--data_dir', '/d', '--manual_dir', '/m'])
  assert a.manual_dir == '/m'
  with pytest.raises(SystemExit):
    prepare.parse_args(['svhn', '--data_dir', '/d'])
  monkeypatch.setattr(prepare, 'tensorflow_available', lambda: False)
  assert prepare.main(['cifar10', '--data_dir', os.fspath(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert 'pip install tensorflow-cpu' in err
