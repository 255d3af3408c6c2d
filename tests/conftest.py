"""Shared fixtures. Tests never reach the network: TFDS is only used with mock data or local files."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

os.environ.setdefault("TFDS_DISABLE_GCS", "1")
FMNIST_DIR = os.environ.get("KDJAX_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def tiny_run_config(**over):
  """A fast supervised config on mock CIFAR-100 with the toy model."""
  from kdjax.config import base_config

  c = base_config()
  c.model = "tiny_cnn"
  c.dataset.name = "cifar100"
  c.batch_size = 8
  c.eval_batch_size = 16
  c.num_epochs = 2
  c.optim.lr = 0.05
  c.optim.reference_batch_size = 8
  c.optim.schedule = "multistep"
  c.optim.milestones = (1,)
  c.log_every_steps = 2
  c.progress = False
  c.tensorboard = True
  c.async_checkpoint = False
  for k, v in over.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


@pytest.fixture
def mock_cifar100():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=40):
    yield


@pytest.fixture
def fmnist_dir():
  if not os.path.isdir(FMNIST_DIR):
    pytest.fail(
      f"Fashion-MNIST IDX files missing at {FMNIST_DIR}: "
      "apt-get install dataset-fashion-mnist (scripts/setup.sh does it)."
    )
  return FMNIST_DIR
