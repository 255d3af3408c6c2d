r"""Golden OH margins from PyTorch teachers (float64): ``tests/golden/oh_margins.npz``.

  /path/to/python-with-torch tools/goldens/make_oh_margin_goldens.py

For resnet8x4, wrn_16_2, vgg8, MobileNetV2 and ResNet50 (``tools/parity/torch_models.py``, the
RepDistiller architectures with their state-dict names): every BatchNorm gets a random weight
(both signs, |w| in [0.05, 2]) and bias (N(0, 1.5²), so some channels hit the −3σ branch), then
our transcription of mdistiller's ``get_bn_before_relu()`` (``mdistiller/models/cifar/*.py``:
``layer_i[-1].bn2/bn3``; WRN ``block2.layer[0].bn1, block3.layer[0].bn1, bn1``; VGG
``block_i[-1]``; MobileNetV2 ``blocks[g][-1].conv[-1]`` for g = 1, 2, 4, 6) and of
``get_margin_from_BN`` (clovaai/overhaul-distillation ``distiller.py``: s = |w|, m = b,
``m − s·φ(m/s)/Φ(−m/s)`` if ``Φ(−m/s) > 0.001`` else ``−3s``, in Python floats). Stores every BN's
weight and bias under its torch name, the names of the chosen BNs and the margins.
"""

import math
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "parity"))
import torch_models as tm  # noqa: E402


def bn_before_relu(arch, m):
  if arch.startswith("resnet") or arch == "ResNet50":
    layers = [m.layer1, m.layer2, m.layer3] + ([m.layer4] if hasattr(m, "layer4") else [])
    return [l[-1].bn3 if hasattr(l[-1], "bn3") else l[-1].bn2 for l in layers]
  if arch.startswith("wrn"):
    return [m.block2.layer[0].bn1, m.block3.layer[0].bn1, m.bn1]
  if arch.startswith("vgg"):
    return [m.block1[-1], m.block2[-1], m.block3[-1], m.block4[-1]]
  if arch == "MobileNetV2":
    return [m.blocks[g][-1].conv[-1] for g in (1, 2, 4, 6)]
  raise ValueError(arch)


def margin_from_bn(bn):
  phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
  cdf = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))
  out = []
  for s, mu in zip(bn.weight.data.tolist(), bn.bias.data.tolist()):
    s = abs(s)
    if cdf(-mu / s) > 0.001:
      out.append(-s * phi(mu / s) / cdf(-mu / s) + mu)
    else:
      out.append(-3 * s)
  return np.array(out)


def main():
  torch.set_default_dtype(torch.float64)
  rng = np.random.default_rng(0)
  out = {}
  for arch in ("resnet8x4", "wrn_16_2", "vgg8", "MobileNetV2", "ResNet50"):
    m = tm.CIFAR[arch](100)
    names = {mod: name for name, mod in m.named_modules()}
    for name, mod in m.named_modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        c = mod.num_features
        w = rng.uniform(0.05, 2.0, c) * rng.choice([-1.0, 1.0], c)
        mod.weight.data = torch.tensor(w)
        mod.bias.data = torch.tensor(rng.normal(0.0, 1.5, c))
        out[f"{arch}/bn/{name}.weight"] = w.astype(np.float32)
        out[f"{arch}/bn/{name}.bias"] = mod.bias.data.numpy().astype(np.float32)
    chosen = bn_before_relu(arch, m)
    # margins of the stored float32 parameters (what kdjax will read)
    for bn in chosen:
      bn.weight.data = bn.weight.data.float().double()
      bn.bias.data = bn.bias.data.float().double()
    margins = [margin_from_bn(bn) for bn in chosen]
    out[f"{arch}/chosen"] = np.array([names[bn] for bn in chosen])
    for i, mg in enumerate(margins):
      out[f"{arch}/margin{i}"] = mg
    n3 = sum(
      int(np.sum(np.isclose(mg, -3 * np.abs(bn.weight.data.numpy()))))
      for mg, bn in zip(margins, chosen)
    )
    print(
      arch, [names[bn] for bn in chosen], "channels", [len(x) for x in margins], "-3s branch", n3
    )
  path = os.path.join(ROOT, "tests", "golden", "oh_margins.npz")
  np.savez_compressed(path, **out)
  print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
  main()
