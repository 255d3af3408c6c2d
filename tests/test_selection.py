"""Checkpoint-KD teacher selection on a real (Fashion-MNIST) run with planted checkpoints."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_run_config
from kdjax.teachers.selection import classification_mi, minmax, reconstruction_mi, select_teacher
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train.loop import train_and_evaluate


def test_probes_rank_informative_features_higher():
  rs = np.random.RandomState(0)
  y = rs.randint(0, 4, 800).astype(np.int32)
  x = rs.randn(800, 6)
  informative = np.concatenate([np.eye(4)[y] * 3 + 0.1 * rs.randn(800, 4), x], 1)
  noise = rs.randn(800, 10)
  assert (
    classification_mi(informative[:400], y[:400], informative[400:], y[400:], 4)
    > classification_mi(noise[:400], y[:400], noise[400:], y[400:], 4) + 0.5
  )
  assert (
    reconstruction_mi(informative[:400], x[:400], informative[400:], x[400:])
    > reconstruction_mi(noise[:400], x[:400], noise[400:], x[400:]) + 0.5
  )
  np.testing.assert_allclose(minmax([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])


def _collapse(variables, frac):
  """Zeroes the BN scale/bias of a fraction of the last stage's channels: those features carry
  no information about X or Y any more."""
  v = jax.tree_util.tree_map(np.array, variables)
  bn = v["params"]["bns_1"]
  k = int(round(frac * bn["scale"].shape[0]))
  bn["scale"][:k] = 0.0
  bn["bias"][:k] = 0.0
  return v


@pytest.mark.slow
def test_selection_picks_the_planted_best_checkpoint(tmp_path, fmnist_dir, monkeypatch):
  monkeypatch.setenv("KDJAX_FASHION_MNIST_DIR", fmnist_dir)
  cfg = tiny_run_config(num_epochs=2)
  cfg.dataset.name = "fashion_mnist"
  cfg.dataset.train_limit, cfg.dataset.eval_limit = 2048, 500
  cfg.batch_size, cfg.optim.reference_batch_size = 64, 64
  wd = str(tmp_path / "teacher")
  train_and_evaluate(cfg, wd)
  variables, meta = ckpt_lib.load_model(wd, "final")
  ck = ckpt_lib.RunCheckpoints(wd, async_save=False)
  for i, frac in enumerate((0.75, 1.0)):  # worse than the trained network on both probes
    ck.save_model("kept", 1000 + i, _collapse(variables, frac), dict(meta, epoch=10 + i))
  ck.close()
  res = select_teacher(wd, num_examples=1000, eval_limit=500, probe_steps=200)
  assert res["selected"]["step"] == meta["step"]
  assert len(res["rows"]) == 3
  for f in ("selection.json", "selection.csv", "selection.png"):
    assert os.path.getsize(os.path.join(wd, f)) > 0
  # distil-time lookup of the selected checkpoint
  _, m = ckpt_lib.load_model(wd, "selected")
  assert m["step"] == meta["step"]
  assert json.load(open(os.path.join(wd, "selection.json")))["selected"]["epoch"] == 2
