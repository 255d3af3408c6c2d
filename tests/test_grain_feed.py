"""kdjax.data.grain_feed on TFDS mock ImageNet (tfds.testing.mock_data + tfds.data_source)."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import Mesh

import kdjax.data as kd
from kdjax.data import grain_feed
from kdjax.errors import UserError

pytest.importorskip("grain")

N = 22  # mock examples: 5 train batches of 4 (2 dropped), 6 eval batches (last of 2)


@pytest.fixture(autouse=True)
def _mock():
  with tfds.testing.mock_data(num_examples=N):
    yield


def _stream(**kw):
  args = dict(batch_size=4, seed=3, train=True, image_size=32, process_index=0, process_count=1)
  args.update(kw)
  split = "train" if args["train"] else "validation"
  return grain_feed.GrainStream("imagenet2012", split, **args)


def _epoch(stream, epoch, offset=0):
  return list(stream.iter_epoch(epoch, offset))


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


def test_shapes_dtypes_and_equal_to_host_stream():
  s = _stream(image_size=224)
  assert len(s) == N // 4 and s.num_examples == N
  e0 = _epoch(s, 0)
  assert len(e0) == N // 4
  for b in e0:
    assert b["image"].shape == (4, 224, 224, 3) and b["image"].dtype == np.uint8
    assert b["label"].dtype == np.int32 and b["index"].dtype == np.int32
    assert 0 <= b["label"].min() and b["label"].max() < 1000
  # Same order and same per-example random draws as the single-process PIL stream.
  host = kd.HostStream("imagenet2012", "train", batch_size=4, seed=3, train=True)
  _assert_same(e0, list(host.iter_epoch(0)))
  idx = np.concatenate([b["index"] for b in e0])
  assert len(set(idx.tolist())) == len(idx) and not np.array_equal(idx, np.sort(idx))


def test_deterministic_per_seed_epoch_and_epochs_differ():
  s = _stream()
  e0, e0_again, e1 = _epoch(s, 0), _epoch(_stream(), 0), _epoch(s, 1)
  _assert_same(e0, e0_again)
  assert not np.array_equal(
    np.concatenate([b["index"] for b in e0]), np.concatenate([b["index"] for b in e1])
  )
  # The same example in two epochs: a different crop.
  at0 = {int(v): (bi, j) for bi, b in enumerate(e0) for j, v in enumerate(b["index"])}
  at1 = {int(v): (bi, j) for bi, b in enumerate(e1) for j, v in enumerate(b["index"])}
  both = sorted(set(at0) & set(at1))
  assert both  # 20 of 22 examples are used per epoch
  (b0, j0), (b1, j1) = at0[both[0]], at1[both[0]]
  assert not np.array_equal(e0[b0]["image"][j0], e1[b1]["image"][j1])
  it = _stream()
  _assert_same(list(it), e0)  # iterating advances the epoch, as HostStream
  _assert_same(list(it), e1)
  e0_seed = _epoch(_stream(seed=4), 0)
  assert not np.array_equal(e0[0]["index"], e0_seed[0]["index"])


@pytest.mark.parametrize("offset", [1, 3])
def test_resume_from_offset_is_the_tail(offset):
  s = _stream()
  full = _epoch(s, 2)
  _assert_same(_epoch(s, 2, offset), full[offset:])


def test_eval_center_crop_order_and_tail():
  s = _stream(train=False, batch_size=4)
  ev = _epoch(s, 0)
  assert [len(b["label"]) for b in ev] == [4, 4, 4, 4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in ev]), np.arange(N))
  _assert_same(ev, _epoch(s, 5))  # no randomness in eval
  host = kd.HostStream(
    "imagenet2012", "validation", batch_size=4, seed=3, train=False, image_size=32
  )
  _assert_same(ev, list(host.iter_epoch(0)))
  imgs, labels = next(grain_feed.eval_batches(s))
  np.testing.assert_array_equal(imgs, ev[0]["image"])


class _WithPid(grain_feed._LoadTransform):  # pylint: disable=protected-access
  def __call__(self, pos):
    return dict(super().__call__(pos), pid=np.int32(os.getpid()))


def test_worker_processes_give_the_same_batches(monkeypatch):
  monkeypatch.setattr(grain_feed, "_LoadTransform", _WithPid)
  s0, s2 = _stream(), _stream(num_workers=2)
  e0, e2 = _epoch(s0, 1, 1), _epoch(s2, 1, 1)
  pids = {int(p) for b in e2 for p in b.pop("pid")}
  assert {int(p) for b in e0 for p in b.pop("pid")} == {os.getpid()}
  assert len(pids) == 2 and os.getpid() not in pids  # two worker processes decoded
  _assert_same(e2, e0)


def test_process_shards_are_the_rows_of_the_global_batch():
  glob = _epoch(_stream(batch_size=4), 1)
  parts = [_epoch(_stream(batch_size=4, process_index=p, process_count=2), 1) for p in (0, 1)]
  for g, p0, p1 in zip(glob, *parts):
    for k in g:
      np.testing.assert_array_equal(np.concatenate([p0[k], p1[k]]), g[k])
  with pytest.raises(UserError, match="multiple of 2"):
    _stream(batch_size=5, process_count=2, process_index=0)
  with pytest.raises(UserError, match="drop_remainder"):
    _stream(train=False, process_count=2, process_index=1)


def test_feed_device_batches_prefetch_and_resume():
  mesh = Mesh(np.asarray(jax.local_devices()[:1]), ("data",))
  s = _stream()
  feed = grain_feed.GrainFeed(s, mesh, prefetch=2)
  assert feed.steps_per_epoch() == N // 4 and feed.index_space == N
  host = _epoch(s, 0)
  dev = list(feed.epoch(0, 0))
  assert all(isinstance(b["image"], jax.Array) for b in dev)
  _assert_same([jax.device_get(b) for b in dev], host)
  tail = [jax.device_get(b) for b in feed.epoch(0, 2)]
  _assert_same(tail, host[2:])
  with pytest.raises(UserError, match="global_mesh"):
    grain_feed.GrainFeed(_stream(process_count=2, process_index=0), mesh)
  # Stopping early (max_steps) closes the host iterator.
  gen = feed.epoch(0, 0)
  next(gen)
  gen.close()
