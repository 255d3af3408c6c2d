"""The BatchNorm before each stage-end ReLU of a model (Overhaul distillation's margins).

Heo et al., "A Comprehensive Overhaul of Feature Distillation", ICCV 2019, take the per-channel
margin of the teacher's pre-ReLU features from the affine parameters of the BN that produces them
(``get_bn_before_relu()`` + ``get_margin_from_BN``). mdistiller's CIFAR models
(megvii-research/mdistiller ``mdistiller/models/cifar/*.py``, the same architectures as
RepDistiller's) define it per family; here the same choice is read off the kdjax parameter tree
(whose module names follow the PyTorch ones, ``kdjax.models.import_torch.flax_module_path``):

* ResNets (CIFAR ``resnet*``, ``resnet*x4``, ``ResNet50``): the last block of each
  ``layer<i>``, its ``bn3`` (bottleneck) or ``bn2`` (basic block) — ``layer<i>[-1].bn2/3``;
* WRN (pre-activation): the BN that opens the next stage, ``block2.layer[0].bn1``,
  ``block3.layer[0].bn1`` and the final ``bn1`` (RepDistiller's WRN ``preact`` features are these
  BNs' outputs);
* VGG: the last BN of ``block1`` .. ``block4`` (``block<i>[-1]``);
* MobileNetV2: the last BN (``conv[-1]``) of the last block of the groups 1, 2, 4 and 6.

ShuffleNets have none (mdistiller raises "not supported for Overhaul teacher"); nor do the toy
models. The ImageNet models are not mapped (mdistiller's ImageNet ResNets return only
``layer2..4`` for four stages, MobileNetV1 ``model[3, 5, 11, 13][-2]``; not reproduced here):
they raise, like ShuffleNets (the OH term's ``margins='batch'`` is the fallback). For ResNets and MobileNetV2 the pre-activation tap also contains the residual sum, so the
BN is the reference's approximation, reproduced as is.
"""

from __future__ import annotations

import re
from typing import List, Mapping, Tuple

import jax.numpy as jnp


def _is_bn(node) -> bool:
  return hasattr(node, "keys") and set(node.keys()) == {"scale", "bias"}


def _last_index(params, pattern):
  """The key of ``params`` matching ``pattern`` (a regex with one integer group) with the
  largest index, or None."""
  best = None
  for k in params:
    m = re.fullmatch(pattern, k)
    if m and (best is None or int(m.group(1)) > best[0]):
      best = (int(m.group(1)), k)
  return best[1] if best else None


def _last_bn(block) -> str:
  bns = [
    (int(re.search(r"(\d+)$", k).group(1)), k)
    for k, v in block.items()
    if _is_bn(v) and re.search(r"(\d+)$", k)
  ]
  return max(bns)[1] if bns else None


def bn_before_relu_paths(params: Mapping) -> List[Tuple[str, ...]]:
  """Parameter paths of the BNs before each stage-end ReLU, in stage order (see the module
  docstring). Raises ValueError for a family without them."""
  p = params
  stem = p.get("conv1", {}).get("kernel") if hasattr(p.get("conv1"), "get") else None
  if (
    "layer1_0" in p
    and stem is not None
    and tuple(stem.shape[:2]) == (3, 3)
    and "bn4" not in p["layer1_0"]
  ):  # CIFAR ResNets (not ShuffleNets' 1x1 stem)
    out = []
    i = 1
    while f"layer{i}_0" in p:
      last = _last_index(p, rf"layer{i}_(\d+)")
      blk = p[last]
      bn = "bn3" if "bn3" in blk else "bn2"
      out.append((last, bn))
      i += 1
    return out
  if "block2_0" in p and "block3_0" in p and "bn1" in p:  # WRN
    return [("block2_0", "bn1"), ("block3_0", "bn1"), ("bn1",)]
  if "block1" in p and _is_bn(p["block1"].get("bn0", {})):  # VGG
    return [(f"block{i}", _last_bn(p[f"block{i}"])) for i in range(1, 5)]
  if "blocks_1_0" in p:  # MobileNetV2
    out = []
    for g in (1, 2, 4, 6):
      last = _last_index(p, rf"blocks_{g}_(\d+)")
      out.append((last, _last_bn(p[last])))
    return out
  raise ValueError(
    "This model has no BatchNorm-before-ReLU mapping for OH margins (ShuffleNets have none, as "
    "in mdistiller; nor do the toy models; the ImageNet models are not mapped): use the OH "
    "term's margins='batch' (margins estimated from the teacher's pre-activations on the first "
    "batch)."
  )


def bn_before_relu(params: Mapping) -> List[Tuple[jnp.ndarray, jnp.ndarray]]:
  """``[(scale, bias), ...]``: the affine parameters of :func:`bn_before_relu_paths`."""
  out = []
  for path in bn_before_relu_paths(params):
    node = params
    for k in path:
      node = node[k]
    out.append((jnp.asarray(node["scale"]), jnp.asarray(node["bias"])))
  return out
