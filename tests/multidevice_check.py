"""Run with 8 fake CPU devices (see test_multidevice.py): the data-parallel KD step on 8 devices
equals the 1-device step on the same global batch, and bad batch sizes are rejected."""
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from kdjax.train import parallel  # noqa: E402
from test_train import _kd_setup  # noqa: E402


def run(devices, n_steps=4, batch=16):
  steps, state, tv, images, labels, *_ = _kd_setup()
  mesh = parallel.make_mesh(devices)
  state = parallel.put_replicated(state, mesh)
  tv = parallel.put_replicated(tv, mesh)
  im = parallel.put_replicated(images, mesh)
  lab = parallel.put_replicated(labels, mesh)
  rs = np.random.RandomState(1)
  losses = []
  for _ in range(n_steps):
    idx = parallel.put_batch(rs.permutation(32)[:batch].astype(np.int32), mesh)
    state, m = steps.train_indexed(state, im, lab, parallel.put_replicated(np.arange(32, dtype=np.int32), mesh), idx, tv)
    losses.append(float(m["loss"]))
  return jax.device_get(state), losses, state


def main():
  assert jax.device_count() == 8, jax.devices()
  s8, l8, live = run(jax.devices())
  # The state really lives on all 8 devices.
  leaf = jax.tree_util.tree_leaves(live.params)[0]
  assert len(leaf.sharding.device_set) == 8, leaf.sharding
  s1, l1, _ = run(jax.devices()[:1])
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  worst = 0.0
  for a, b in zip(jax.tree_util.tree_leaves(s8.params) + jax.tree_util.tree_leaves(s8.batch_stats),
                  jax.tree_util.tree_leaves(s1.params) + jax.tree_util.tree_leaves(s1.batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    worst = max(worst, float(np.max(np.abs(a - b))))
  # Batch not divisible by the device count: one clear error before compiling.
  try:
    parallel.check_batch(12, parallel.make_mesh())
  except ValueError as e:
    assert "not divisible by the 8 local devices" in str(e), e
  else:
    raise AssertionError("batch 12 on 8 devices was accepted")
  print(f"MULTIDEVICE OK max|diff|={worst:.2e}")


if __name__ == "__main__":
  main()
