"""Run with fake CPU devices (see test_multidevice.py): a whole CRD distillation run (memory banks
and the fixed normalisers Z as explicit state, negatives sampled inside the jitted step) on 4
devices equals the same run on 1 device: student, connectors, BN statistics and the CRD state."""

import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from conftest import tiny_run_config  # noqa: E402
from kdjax.train import parallel  # noqa: E402
from kdjax.train.loop import train_and_evaluate  # noqa: E402


def main():
  assert jax.device_count() == 4, jax.devices()
  tmp = tempfile.mkdtemp()
  with tfds.testing.mock_data(num_examples=40):
    teacher = os.path.join(tmp, "teacher")
    tc = tiny_run_config(num_epochs=1)
    tc.model_kwargs = dict(width=12)
    train_and_evaluate(tc, teacher)
    out = {}
    for n in (4, 1):
      c = tiny_run_config(num_epochs=2)
      c.teacher.workdir = teacher
      c.method.name, c.method.ce_weight = "crd", 1.0
      c.method.terms.crd = dict(weight=0.8, nce_k=16, feat_dim=8)
      out[n] = train_and_evaluate(
        c, os.path.join(tmp, f"crd{n}"), mesh=parallel.make_mesh(jax.devices()[:n])
      )
  s4, s1 = jax.device_get(out[4]["state"]), jax.device_get(out[1]["state"])
  ms = s4.method_state["crd"]
  assert {"memory_s", "memory_t"} <= set(ms), sorted(ms)
  assert int(s4.step) == int(s1.step) == 10
  worst = 0.0
  for tree in ("params", "batch_stats", "method_state"):
    for a, b in zip(
      jax.tree_util.tree_leaves(getattr(s4, tree)), jax.tree_util.tree_leaves(getattr(s1, tree))
    ):
      a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=tree)
      worst = max(worst, float(np.max(np.abs(a - b))) if a.size else 0.0)
  # The banks were really written during the run (updated rows are L2-normalised).
  norms = np.linalg.norm(np.asarray(ms["memory_s"]), axis=-1)
  assert np.sum(np.abs(norms - 1.0) < 1e-5) >= 8, norms
  assert out[4]["last_top1"] == out[1]["last_top1"]
  print(f"CRD MULTIDEVICE OK max|diff|={worst:.2e}")


if __name__ == "__main__":
  main()
