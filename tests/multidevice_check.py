"""Run with 8 fake CPU devices (see test_multidevice.py): the data-parallel KD step on 8 devices
equals the 1-device step on the same global batch, and bad batch sizes are rejected.

Why equality is tested over 4 steps of a tiny model, not over a whole run (issue 15, item 11):
``python tests/multidevice_check.py drift`` trains resnet8 on 2,048 Fashion-MNIST images (batch
64, SGD lr 0.1) for 32 steps three ways and prints max|param difference|. Measured (2 fake CPU
devices, jax 0.12):

  step                            1        4        8        32
  float32, 1 vs 2 devices         7.5e-8   2.5e-7   1.3e-3   4.5e-2
  float32, 1 device, batch order  5.2e-8   4.2e-4   5.3e-3   9.1e-2   (same maths, other order)
  float64, 1 vs 2 devices         5.6e-17  2.2e-16  3.3e-16  1.2e-15
  float64, 1 device, batch order  2.2e-16  2.2e-16  3.4e-16  8.8e-16

So the two runs compute the same function: the drift is float32 rounding of reductions in
another order (a 1-device run with its batch permuted drifts as much), and it is amplified in
jumps, not smoothly -- float64 errors do not grow at all -- because a 1e-7 difference flips
ReLU kinks (and argmax/top-k ties) whose gradient is discontinuous, each flip moving the
parameters by ~lr x grad. Equality is meaningful per step (here rtol 1e-5 after 4 steps) and in
float64 over a run; top-1 of float32 runs agrees only statistically.
"""

import os
import sys

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)
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
    state, m = steps.train_indexed(
      state, im, lab, parallel.put_replicated(np.arange(32, dtype=np.int32), mesh), idx, tv
    )
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
  for a, b in zip(
    jax.tree_util.tree_leaves(s8.params) + jax.tree_util.tree_leaves(s8.batch_stats),
    jax.tree_util.tree_leaves(s1.params) + jax.tree_util.tree_leaves(s1.batch_stats),
  ):
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


def drift_study(n_steps=32):
  """The table of the module docstring (not a test: prints the figures)."""
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  import jax.numpy as jnp  # noqa: E402
  from conftest import FMNIST_DIR, tiny_run_config  # noqa: E402
  from kdjax import data as kdata, models  # noqa: E402
  from kdjax.data import augment  # noqa: E402
  from kdjax.methods import build_method  # noqa: E402
  from kdjax.train import state as state_lib  # noqa: E402
  from kdjax.train.optim import make_optimizer  # noqa: E402
  from kdjax.train.step import make_steps  # noqa: E402

  info = kdata.info("fashion_mnist")
  tr = kdata.load_arrays("fashion_mnist", "train", idx_dir=FMNIST_DIR, limit=2048)
  cfg = tiny_run_config().optim
  cfg.lr, cfg.schedule = 0.1, "constant"
  tx, _ = make_optimizer(cfg, steps_per_epoch=32)
  for dt in (jnp.float32, jnp.float64):
    jax.config.update("jax_enable_x64", dt == jnp.float64)
    student = models.get("resnet8", num_classes=10, dtype=dt)
    tf = lambda im, r=None: augment.eval_transform(info, im).astype(dt)
    steps = make_steps(
      student=student, method=build_method(None), tx=tx, train_transform=tf, eval_transform=tf
    )

    def train(devices, permute):
      v = student.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1), dt), train=False)
      v = jax.tree_util.tree_map(lambda a: a.astype(dt), v)
      st = state_lib.create(
        {"student": v["params"]}, {"student": v["batch_stats"]}, tx, jax.random.PRNGKey(7)
      )
      mesh = parallel.make_mesh(devices)
      st = parallel.put_replicated(st, mesh)
      put = lambda a: parallel.put_replicated(a, mesh)
      im, lab = put(tr.images), put(tr.labels.astype(np.int32))
      ds = put(np.arange(len(tr.labels), dtype=np.int32))
      rs, rp, out = np.random.RandomState(1), np.random.RandomState(2), {}
      for i in range(n_steps):
        idx = rs.permutation(len(tr.labels))[:64].astype(np.int32)
        idx = idx[rp.permutation(64)] if permute else idx
        st, _ = steps.train_indexed(st, im, lab, ds, parallel.put_batch(idx, mesh), {})
        if i + 1 in (1, 4, 8, n_steps):
          out[i + 1] = jax.device_get(st.params)
      return out

    diff = lambda a, b: max(
      float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
      for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )
    one, two = train(jax.devices()[:1], False), train(jax.devices()[:2], False)
    perm = train(jax.devices()[:1], True)
    for k in one:
      print(
        f"{np.dtype(dt).name} step {k:3d}: 1 vs 2 devices {diff(one[k], two[k]):.1e}, "
        f"1 device with the batch order permuted {diff(one[k], perm[k]):.1e}"
      )


if __name__ == "__main__":
  if sys.argv[1:] == ["drift"]:
    drift_study()
  else:
    main()
