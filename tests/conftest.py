"""Shared fixtures. Tests never reach the network: TFDS is only used with mock data or local files."""

import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

os.environ.setdefault("TFDS_DISABLE_GCS", "1")
FMNIST_DIR = os.environ.get("KDJAX_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")

# One JAX persistent compilation cache per test session, shared by both xdist workers and by the
# launch scripts the tests run as subprocesses: the same tiny models and steps are compiled by many
# tests, and a cached XLA:CPU executable loads in milliseconds. JAX reads these variables at import
# (subprocesses inherit them); a cache hit returns the executable XLA built for the same HLO and
# options, so results are unchanged. KDJAX_TEST_JAX_CACHE=<dir> keeps a cache across sessions;
# KDJAX_TEST_JAX_CACHE=off disables it.
_CACHE_ENV = "KDJAX_TEST_JAX_CACHE"
_OWN_CACHE = None


def pytest_configure(config):
  global _OWN_CACHE
  if hasattr(config, "workerinput"):  # an xdist worker: the controller set the environment up
    return
  where = os.environ.get(_CACHE_ENV, "")
  if where == "off":
    return
  if not where:
    where = _OWN_CACHE = tempfile.mkdtemp(prefix="kdjax-test-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = where
  # Cache every executable: the defaults (>= 1 s compile time) skip nearly all CPU programs.
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"


def pytest_unconfigure(config):
  if _OWN_CACHE is not None and not hasattr(config, "workerinput"):
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


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
