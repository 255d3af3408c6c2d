"""Data parallelism on 8 fake CPU devices (subprocess: XLA_FLAGS must precede jax's import).

Tolerance: rtol 1e-5 / atol 1e-6 on every parameter and BN statistic after 4 SGD steps (the 8-way
all-reduce sums gradients in a different order than one device, so bitwise equality is not
expected; observed differences are ~1e-8).
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.multidevice
def test_8_fake_devices_match_one_device():
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=8",
    PYTHONPATH=os.path.dirname(HERE),
  )
  r = subprocess.run(
    [sys.executable, os.path.join(HERE, "multidevice_check.py")],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 0 and "MULTIDEVICE OK" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.multidevice
def test_crd_run_on_4_fake_devices_matches_one_device():
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=4",
    PYTHONPATH=os.path.dirname(HERE),
  )
  r = subprocess.run(
    [sys.executable, os.path.join(HERE, "multidevice_crd_check.py")],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 0 and "CRD MULTIDEVICE OK" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
