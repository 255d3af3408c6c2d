"""On-device vs host-side CIFAR input pipeline: gather + RandomCrop(32, 4) + flip + normalise of
a batch of 64 from a 50,000-image uint8 split.

  device: the split lives on the device; one jitted function gathers by index and augments
          (what kdjax's train step does, fused into the step);
  host:   NumPy gather/crop/flip/normalise per batch, then device_put (what a host feed does;
          tf.data is not installed on our machines, so the host baseline is NumPy).
Prints images/s of each (median of repeats). The trainer keeps the faster (device) path.

  .venv/bin/python bench/data_feed.py
"""

import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kdjax.data import augment, info  # noqa: E402

B, N, REPEATS, STEPS = 64, 50_000, 5, 50


def main():
  inf = info("cifar100")
  rs = np.random.RandomState(0)
  images = rs.randint(0, 256, (N, 32, 32, 3), dtype=np.uint8)
  mean, std = np.array(inf.mean, np.float32), np.array(inf.std, np.float32)

  dev_images = jax.device_put(images)
  fn = jax.jit(lambda im, idx, key: augment.train_transform(inf, im[idx], key))

  def device_epoch():
    out = None
    for s in range(STEPS):
      idx = jnp.asarray(rs.randint(0, N, B).astype(np.int32))
      out = fn(dev_images, idx, jax.random.PRNGKey(s))
    jax.block_until_ready(out)

  def host_epoch():
    out = None
    for _ in range(STEPS):
      idx = rs.randint(0, N, B)
      batch = images[idx]
      padded = np.pad(batch, ((0, 0), (4, 4), (4, 4), (0, 0)))
      ox, oy = rs.randint(0, 9, B), rs.randint(0, 9, B)
      crop = np.stack([padded[i, oy[i] : oy[i] + 32, ox[i] : ox[i] + 32] for i in range(B)])
      flip = rs.rand(B) < 0.5
      crop[flip] = crop[flip, :, ::-1]
      x = (crop.astype(np.float32) / 255.0 - mean) / std
      out = jax.device_put(x)
    jax.block_until_ready(out)

  res = {}
  for name, f in (
    ("device (in-jit gather+augment)", device_epoch),
    ("host (numpy + device_put)", host_epoch),
  ):
    f()
    ts = []
    for _ in range(REPEATS):
      t0 = time.perf_counter()
      f()
      ts.append(time.perf_counter() - t0)
    res[name] = B * STEPS / statistics.median(ts)
  for k, v in res.items():
    print(f"{k:<34} {v:10.0f} img/s")
  dev, host = list(res.values())
  print(f"device/host = {dev / host:.2f}")


if __name__ == "__main__":
  main()
