"""The validation split held out of the training split (``dataset.val_examples``,
kdjax/data/holdout.py): stratified, seeded, disjoint from what the run trains on, and rebuilt
identically from the run's config.json by the calibration study."""

import json
import os

import numpy as np
import pytest

from conftest import tiny_run_config
from kdjax import data as kdata
from kdjax.calibration.study import teacher_validation_split
from kdjax.config import json_normalise
from kdjax.errors import UserError
from kdjax.train import parallel, train_and_evaluate
from kdjax.train.runner import load_data


def test_holdout_is_stratified_seeded_and_sorted():
  # a split stored class by class (as the tiny-imagenet-200 directory): 4 classes of 30, 60, 90, 120
  labels = np.repeat(np.arange(4), [30, 60, 90, 120])
  pos = kdata.holdout_positions(labels, 30, seed=0)
  assert len(pos) == 30 and len(np.unique(pos)) == 30 and np.all(np.diff(pos) > 0)
  # proportional: 30 * n_c / 300 = 3, 6, 9, 12, up to one example of rounding per class
  counts = np.bincount(labels[pos], minlength=4)
  assert np.all(np.abs(counts - np.array([3, 6, 9, 12])) <= 1) and counts.sum() == 30
  np.testing.assert_array_equal(pos, kdata.holdout_positions(labels, 30, seed=0))
  assert not np.array_equal(pos, kdata.holdout_positions(labels, 30, seed=1))
  # growing N keeps the smaller split inside the larger one (the key order does not depend on N)
  assert set(pos) <= set(kdata.holdout_positions(labels, 60, seed=0))
  assert len(kdata.holdout_positions(labels, 0)) == 0


def test_holdout_refuses_bad_sizes():
  labels = np.arange(10) % 2
  with pytest.raises(UserError, match="leaves no training examples"):
    kdata.holdout_positions(labels, 10)
  with pytest.raises(UserError, match="val_examples"):
    kdata.holdout_positions(labels, -1)
  with pytest.raises(UserError, match="val_examples"):
    kdata.holdout_positions(labels, 2.5)


def _fm(fmnist_dir, **over):
  c = tiny_run_config(**over)
  c.dataset.name = "fashion_mnist"
  c.dataset.idx_dir = fmnist_dir
  c.dataset.train_limit, c.dataset.eval_limit = 400, 50
  return c


def test_load_data_trains_on_train_minus_val_and_the_study_rebuilds_it(tmp_path, fmnist_dir):
  mesh = parallel.make_mesh()
  full, *_ = load_data(_fm(fmnist_dir), mesh)
  assert full.n == 400 and full.val_split is None
  cfg = _fm(fmnist_dir, **{"dataset.val_examples": 100, "dataset.val_seed": 3})
  feed, _, _, n_train = load_data(cfg, mesh)
  val = feed.val_split
  assert n_train == feed.n == 300 and len(val) == 100
  train_index = set(np.asarray(feed.index).tolist())
  assert train_index.isdisjoint(val.index.tolist())
  assert train_index | set(val.index.tolist()) == set(range(400))
  # the held-out images are the loaded split's, not copies of training images
  ref = kdata.load_arrays("fashion_mnist", "train", idx_dir=fmnist_dir, limit=400)
  np.testing.assert_array_equal(val.images, ref.images[val.index])
  np.testing.assert_array_equal(val.labels, ref.labels[val.index])
  # config.json of the run -> the same examples (how kdjax.calibration.study finds them)
  wd = tmp_path / "teacher"
  os.makedirs(wd)
  (wd / "config.json").write_text(json.dumps(json_normalise(cfg)))
  again = teacher_validation_split(str(wd))
  np.testing.assert_array_equal(again.index, val.index)
  np.testing.assert_array_equal(again.labels, val.labels)


def test_streamed_datasets_refuse_val_examples():
  c = tiny_run_config(**{"dataset.name": "imagenet2012", "dataset.val_examples": 10})
  with pytest.raises(UserError, match="in-memory datasets only"):
    load_data(c, parallel.make_mesh())


def test_a_run_with_a_val_split_logs_val_metrics(tmp_path, fmnist_dir):
  """The held-out examples are evaluated with the test set at every evaluation (``val/`` in
  metrics.jsonl, ``last_val_*`` in the summary) and never trained on."""
  cfg = _fm(fmnist_dir, **{"dataset.val_examples": 100, "num_epochs": 1, "tensorboard": False})
  s = train_and_evaluate(cfg, str(tmp_path / "run"))
  assert s["step"] == 300 // cfg.batch_size + (300 % cfg.batch_size > 0)
  recs = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  val = [r for r in recs if "val/top1" in r]
  assert len(val) == 1 and 0.0 <= val[0]["val/top1"] <= 100.0 and val[0]["val/loss"] > 0
  assert s["last_val_top1"] == val[0]["val/top1"]
