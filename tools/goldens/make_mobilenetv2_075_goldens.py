r"""Writes ``tests/golden/mobilenetv2_075.npz``: PyTorch parity fixture of CheckpointKD's student.

LeapLabTHU/CheckpointKD ``models/mobilenetv2.py`` defines ``mobilenetv2_075`` as
``MobileNetV2(T=6, width_mult=0.75)``: RepDistiller's CIFAR MobileNetV2 (stem conv 3x3/2, the seven
(t, c, n, s) groups with every block's 1x1 expansion, conv 1x1 to 1280, linear classifier) at width
0.75. The network is ``tools/parity/torch_models.py:MobileNetV2(width=0.75)``; its parameter count
is checked against the closed-form count of CheckpointKD's definition (:func:`ckd_param_count`,
written from the repository's layer list). The fixture format is ``tools/parity/make_fixtures.py``'s
(recipe weights, calibrated BN, float64 expected logits and taps at batch 2, 32x32, 100 classes).

Run with the torch venv (needs torch, not jax)::

    $KDJAX_TORCH_PYTHON tools/goldens/make_mobilenetv2_075_goldens.py
"""

import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "parity"))
import make_fixtures  # noqa: E402
import torch  # noqa: E402
import torch_models  # noqa: E402

ARCH = "mobilenetv2_075"
SETTING = [
  (1, 16, 1, 1),
  (6, 24, 2, 1),
  (6, 32, 3, 2),
  (6, 64, 4, 2),
  (6, 96, 3, 1),
  (6, 160, 3, 2),
  (6, 320, 1, 1),
]


def ckd_param_count(width: float = 0.75, num_classes: int = 100) -> int:
  """Trainable parameters of CheckpointKD's ``MobileNetV2(T=6, width_mult=width)``: convs without
  bias, BN weight + bias, Linear weight + bias."""
  cin = int(32 * width)
  n = 3 * 9 * cin + 2 * cin  # conv_bn(3, cin, 2)
  for t, c, reps, _ in SETTING:
    cout = int(c * width)
    for _ in range(reps):
      hid = cin * t
      n += cin * hid + 2 * hid + 9 * hid + 2 * hid + hid * cout + 2 * cout
      cin = cout
  last = int(1280 * width) if width > 1.0 else 1280
  n += cin * last + 2 * last + last * num_classes + num_classes
  return n


def main():
  count = ckd_param_count()
  torch_models.CIFAR[ARCH] = lambda k: torch_models.MobileNetV2(k, width=0.75)
  torch_models.PREACT_UNSUPPORTED.add(ARCH)
  make_fixtures.PARAM_COUNTS[ARCH] = count  # build() asserts the torch model has it
  make_fixtures.NUM_CLASSES[ARCH] = 100
  make_fixtures.INPUT_SHAPE[ARCH] = (2, 3, 32, 32)
  assert ckd_param_count(0.5) == make_fixtures.PARAM_COUNTS["MobileNetV2"]  # the formula's check
  torch.set_num_threads(1)
  out = os.path.join(ROOT, "tests", "golden")
  tmp = os.path.join(out, f"_{ARCH}_tmp")
  os.makedirs(tmp, exist_ok=True)
  path = make_fixtures.make(ARCH, tmp)
  shutil.move(path, os.path.join(out, f"{ARCH}.npz"))
  os.rmdir(tmp)
  print(f"{ARCH}: {count:,} parameters -> tests/golden/{ARCH}.npz")


if __name__ == "__main__":
  main()
