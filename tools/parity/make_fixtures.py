r"""Writes the PyTorch parity fixtures ``tests/golden/parity/<arch>.npz`` (needs torch, not jax).

  /path/to/python-with-torch tools/parity/make_fixtures.py [--out tests/golden/parity] [arch ...]

For every architecture: builds the reference of ``tools/parity/torch_models.py`` (torch seed 0),
overwrites every parameter with the deterministic recipe of ``tests/golden/parity/recipe.py``
(BN affine parameters random too), calibrates the BN running statistics with four train-mode
forward passes on random batches (cumulative average; random weights with the default 0/1
statistics make deep residual nets' activations explode, up to 1e9 in resnet110), then runs the
eval-mode forward on a fixed random input with ``is_feat=True`` and ``preact=False`` /
``preact=True`` in float64 (the same module after ``.double()``; its float32 outputs must agree to
1e-4, recorded as ``torch_float32_rel_err``) and saves (compressed):

* ``sd_*``: the state-dict recipe (keys, kinds, shapes, seeds, CRC32 of every tensor) and the
  calibrated running statistics ``sd_value/<key>``;
* ``input``: NCHW float32 (CIFAR: 2x3x32x32; ImageNet: 1x3x64x64);
* ``logits``; ``feat_{i}`` = RepDistiller's ``feats[i]`` (NCHW, the last one is the pooled
  vector); ``preact_feat_{i}`` for the stage entries i = 1..N of the ``preact=True`` list (absent
  where the model ignores ``preact``: MobileNetV2); all float64 results rounded to float32;
* ``arch``, ``num_classes``, ``preact_supported``, ``torch_float32_rel_err``.

The test (tests/test_import_torch.py) rebuilds the state dict from the recipe, writes it as a
``.npz`` state dict, imports it with ``kdjax.models.import_torch`` and compares every output.
Weights are not stored because the 26 float32 state dicts would take ~650 MB.

Also checks the reference parameter counts against RepDistiller's (anchors §3, 100 classes) and
torchvision's (1000 classes).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "golden", "parity"))
import recipe  # noqa: E402
import torch_models  # noqa: E402

PARAM_COUNTS = {  # anchors §3 (100 classes) and torchvision (1000 classes)
  "resnet8": 83_892,
  "resnet14": 181_108,
  "resnet20": 278_324,
  "resnet32": 472_756,
  "resnet44": 667_188,
  "resnet56": 861_620,
  "resnet110": 1_736_564,
  "resnet8x4": 1_233_540,
  "resnet32x4": 7_433_860,
  "wrn_16_1": 180_916,
  "wrn_16_2": 703_284,
  "wrn_40_1": 569_780,
  "wrn_40_2": 2_255_156,
  "vgg8": 3_965_028,
  "vgg11": 9_277_284,
  "vgg13": 9_462_180,
  "vgg16": 14_774_436,
  "vgg19": 20_086_692,
  "MobileNetV2": 812_836,
  "ShuffleV1": 949_258,
  "ShuffleV2": 1_355_528,
  "ResNet50": 23_705_252,
  "resnet18_imagenet": 11_689_512,
  "resnet34_imagenet": 21_797_672,
  "resnet50_imagenet": 25_557_032,
  "mobilenetv1_imagenet": 4_231_976,
  "resnet101_imagenet": 44_549_160,
  "resnet152_imagenet": 60_192_808,
}
NUM_CLASSES = {**{a: 100 for a in torch_models.CIFAR}, **{a: 1000 for a in torch_models.IMAGENET}}
# PyTorch's own float32-vs-float64 error bound. The 33- and 50-block ResNet-101/152 accumulate
# float32 rounding through their deep third stage (measured 3e-4 on stage4 for resnet101 with
# the recipe's random weights); their kdjax test compares against a multiple of the stored error.
TORCH32_MAX_REL_ERR = {"resnet101_imagenet": 2e-3, "resnet152_imagenet": 2e-3}
INPUT_SHAPE = {
  **{a: (2, 3, 32, 32) for a in torch_models.CIFAR},
  **{a: (1, 3, 64, 64) for a in torch_models.IMAGENET},
}


def _kinds(model: nn.Module) -> dict:
  kinds = {}
  for mname, m in model.named_modules():
    pre = f"{mname}." if mname else ""
    if isinstance(m, nn.Conv2d):
      kinds[pre + "weight"] = "conv"
      if m.bias is not None:
        kinds[pre + "bias"] = "bias"
    elif isinstance(m, nn.Linear):
      kinds[pre + "weight"] = "linear"
      kinds[pre + "bias"] = "bias"
    elif isinstance(m, nn.BatchNorm2d):
      kinds.update(
        {
          pre + "weight": "bn_weight",
          pre + "bias": "bn_bias",
          pre + "running_mean": "stored",
          pre + "running_var": "stored",
          pre + "num_batches_tracked": "count",
        }
      )
  return kinds


def build(arch: str):
  torch.manual_seed(0)
  ctor = {**torch_models.CIFAR, **torch_models.IMAGENET}[arch]
  model = ctor(NUM_CLASSES[arch])
  n = sum(p.numel() for p in model.parameters())
  if n != PARAM_COUNTS[arch]:
    raise AssertionError(f"{arch}: reference has {n:,} params, expected {PARAM_COUNTS[arch]:,}")
  kinds = _kinds(model)
  sd = model.state_dict()
  missing = set(sd) - set(kinds)
  if missing:
    raise AssertionError(f"{arch}: no kind for {sorted(missing)}")
  entries = [(k, kinds[k], tuple(v.shape)) for k, v in sd.items()]
  with torch.no_grad():
    for k, kind, shape in entries:
      if kind != "stored":
        sd[k].copy_(torch.from_numpy(recipe.make_tensor(kind, shape, recipe.seed_for(arch, k))))
  stored = calibrate_bn(model, INPUT_SHAPE[arch])
  arrays = recipe.recipe_arrays(arch, entries, stored)
  values = recipe.state_dict(arrays)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in values.items()}, strict=True)
  model.eval()
  return model, arrays


def calibrate_bn(model: nn.Module, input_shape, batches: int = 4) -> dict:
  """Running statistics = cumulative averages over ``batches`` random train-mode batches."""
  bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
  for m in bns:
    m.reset_running_stats()
    m.momentum = None
  rng = np.random.Generator(np.random.PCG64(99))
  model.train()
  with torch.no_grad():
    for _ in range(batches):
      shape = (8 * input_shape[0],) + tuple(input_shape[1:])
      model(torch.from_numpy(rng.standard_normal(shape).astype(np.float32)))
  for m in bns:
    m.momentum = 0.1
  model.eval()
  return {
    k: v.numpy().copy()
    for k, v in model.state_dict().items()
    if k.endswith(("running_mean", "running_var"))
  }


def _f32(t):
  return t.numpy().astype(np.float32)


def _rel(a, b):
  return float((a.double() - b).abs().max() / b.abs().max())


def make(arch: str, out_dir: str) -> str:
  model, arrays = build(arch)
  rng = np.random.Generator(np.random.PCG64(1234))
  x = rng.standard_normal(INPUT_SHAPE[arch]).astype(np.float32)
  with torch.no_grad():
    # float32 forward (what a PyTorch user runs) ...
    feats32, logits32 = model(torch.from_numpy(x), is_feat=True, preact=False)
    pfeats32, _ = model(torch.from_numpy(x), is_feat=True, preact=True)
    # ... and the same module in float64: the stored expectations (rounded to float32), so the
    # test measures kdjax's own float32 error rather than the sum of two (deep nets such as
    # resnet110 reach ~4e-5 relative error in float32 on either side).
    model.double()
    x64 = torch.from_numpy(x).double()
    feats, logits = model(x64, is_feat=True, preact=False)
    pfeats, plogits = model(x64, is_feat=True, preact=True)
  assert torch.equal(logits, plogits)
  torch32_err = max(
    _rel(a, b) for a, b in zip([logits32, *feats32, *pfeats32], [logits, *feats, *pfeats])
  )
  assert torch32_err <= TORCH32_MAX_REL_ERR.get(arch, 1e-4), (arch, torch32_err)
  out = dict(
    arrays,
    input=x,
    logits=_f32(logits),
    arch=np.array(arch),
    num_classes=np.array(NUM_CLASSES[arch]),
    preact_supported=np.array(arch not in torch_models.PREACT_UNSUPPORTED),
    torch_float32_rel_err=np.array(torch32_err),
  )
  for i, f in enumerate(feats):
    out[f"feat_{i}"] = _f32(f)
  if arch not in torch_models.PREACT_UNSUPPORTED:
    assert torch.equal(pfeats[0], feats[0]) and torch.equal(pfeats[-1], feats[-1])
    for i in range(1, len(feats) - 1):
      out[f"preact_feat_{i}"] = _f32(pfeats[i])
  for k, v in out.items():
    if v.dtype.kind == "f":
      assert np.all(np.isfinite(v)), (arch, k)
  path = os.path.join(out_dir, f"{arch}.npz")
  np.savez_compressed(path, **out)
  return path


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default=os.path.join(ROOT, "tests", "golden", "parity"))
  p.add_argument("archs", nargs="*")
  a = p.parse_args()
  archs = a.archs or list(torch_models.CIFAR) + list(torch_models.IMAGENET)
  os.makedirs(a.out, exist_ok=True)
  torch.set_num_threads(1)
  for arch in archs:
    path = make(arch, a.out)
    with np.load(path) as f:
      scale = {k: float(np.abs(f[k]).max()) for k in f.files if k.startswith(("feat", "logits"))}
    print(
      f"{arch:22s} {os.path.getsize(path) / 2**20:6.2f} MiB  torch float32 rel err "
      f"{float(np.load(path)['torch_float32_rel_err']):.1e}  max|.|: "
      + " ".join(f"{k}={v:.3g}" for k, v in scale.items())
    )


if __name__ == "__main__":
  main()
