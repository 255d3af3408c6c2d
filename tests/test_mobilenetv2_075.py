"""``mobilenetv2_075`` (CheckpointKD's student) matches the PyTorch definition exactly.

Fixture ``tests/golden/mobilenetv2_075.npz`` from ``tools/goldens/make_mobilenetv2_075_goldens.py``
(torch: recipe weights, calibrated BN, float64 logits/taps; parameter count asserted against the
closed-form count of LeapLabTHU/CheckpointKD ``models/mobilenetv2.py``).
"""

import importlib.util
import os

import jax
import numpy as np

from kdjax import models
from kdjax.models import import_torch as it

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "golden", "mobilenetv2_075.npz")
RTOL = 1e-4  # max |kdjax - torch| / max |torch| per tensor, as tests/test_import_torch.py
_spec = importlib.util.spec_from_file_location(
  "parity_recipe", os.path.join(ROOT, "tests", "golden", "parity", "recipe.py")
)
recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe)


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def test_mobilenetv2_075_parity_with_pytorch(tmp_path):
  with np.load(FIXTURE) as f:
    fx = {k: f[k] for k in f.files}
  path = os.path.join(str(tmp_path), "sd.npz")
  np.savez(path, **recipe.state_dict(fx))
  variables, report = it.convert("mobilenetv2_075", it.load_torch_state_dict(path), guess=False)
  # parameter parity: the torch model's count (1,475,692 for 100 classes, asserted by the
  # generator against CheckpointKD's definition) is what kdjax builds
  model = models.get("mobilenetv2_075", num_classes=100)
  x = np.transpose(fx["input"], (0, 2, 3, 1))
  abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
  n_kdjax = models.count_params(abstract["params"])
  assert n_kdjax == report["num_params"] == 1_475_692
  assert n_kdjax != models.count_params(
    jax.eval_shape(
      lambda: models.get("MobileNetV2", num_classes=100).init(jax.random.PRNGKey(0), x, train=False)
    )["params"]
  )
  logits, taps = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  errors = {"logits": _rel(logits, fx["logits"])}
  feats = [fx[f"feat_{i}"] for i in range(6)]
  want = {"stem": feats[0], "pooled": feats[-1], **{f"stage{i}": feats[i] for i in range(1, 5)}}
  for k, v in want.items():
    errors[k] = _rel(taps[k], np.transpose(v, (0, 2, 3, 1)) if v.ndim == 4 else v)
  assert max(errors.values()) <= RTOL, errors
