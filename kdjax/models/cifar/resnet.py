"""CIFAR ResNets (RepDistiller ``models/resnet.py``): resnet8..110, resnet8x4, resnet32x4.

"6n+2" networks of BasicBlocks; filters ``[16, 16, 32, 64]`` (x4 variants ``[32, 64, 128, 256]``);
3x3 stride-1 stem, three stages (strides 1, 2, 2), global average pooling, ``Linear``.
A stage's first block gets a 1x1 conv + BN shortcut when its stride or width changes.

Taps (NHWC; shapes for resnet8..110 at 32x32 input):

* ``stem``: relu(bn1(conv1(x))), 32x32x16.
* ``stage{i}``: output of stage i's last block (post-ReLU): 32x32x16, 16x16x32, 8x8x64.
* ``preact_stage{i}``: the residual sum of stage i's last block **before** its final ReLU
  (RepDistiller's ``is_last`` preact).
* ``pooled``: global average of ``stage3`` (RepDistiller ``avgpool(8)``), 64.

Parameter names follow the PyTorch ones (``layer1_0/conv1`` = ``layer1.0.conv1``,
``downsample_conv``/``downsample_bn`` = ``downsample.0``/``downsample.1``).
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from kdjax.models.cifar.common import CifarNet, batch_norm, conv, dense, global_avg_pool
from kdjax.models.registry import register


class BasicBlock(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU. Returns ``(out, preact)``."""

  planes: int
  stride: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    ura = not train
    out = conv(self.planes, 3, self.stride, 1, dtype=self.dtype, name="conv1")(x)
    out = nn.relu(batch_norm(self.dtype, name="bn1")(out, use_running_average=ura))
    out = conv(self.planes, 3, 1, 1, dtype=self.dtype, name="conv2")(out)
    out = batch_norm(self.dtype, name="bn2")(out, use_running_average=ura)
    residual = x
    if self.downsample:
      residual = conv(self.planes, 1, self.stride, 0, dtype=self.dtype, name="downsample_conv")(x)
      residual = batch_norm(self.dtype, name="downsample_bn")(residual, use_running_average=ura)
    preact = out + residual
    return nn.relu(preact), preact


class ResNet(CifarNet):
  """CIFAR ResNet with BasicBlocks; ``depth = 6n + 2``."""

  num_classes: int
  depth: int = 8
  num_filters: Sequence[int] = (16, 16, 32, 64)
  dtype: Any = jnp.float32

  num_stages = 3

  def setup(self):
    if (self.depth - 2) % 6 != 0 or self.depth < 8:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, ...), got {self.depth}.")
    n = (self.depth - 2) // 6
    nf = tuple(self.num_filters)
    self.conv1 = conv(nf[0], 3, 1, 1, dtype=self.dtype)
    self.bn1 = batch_norm(self.dtype)
    inplanes = nf[0]
    stages = []
    for planes, stride in zip(nf[1:], (1, 2, 2)):
      blocks = []
      for b in range(n):
        s = stride if b == 0 else 1
        blocks.append(
          BasicBlock(
            planes, s, downsample=(b == 0 and (s != 1 or inplanes != planes)), dtype=self.dtype
          )
        )
        inplanes = planes
      stages.append(blocks)
    self.layer1, self.layer2, self.layer3 = stages
    self.fc = dense(self.num_classes, nf[3], dtype=self.dtype)

  def apply_stem(self, x, train: bool):
    h = nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
    return h, {"stem": h}

  def _stage(self, h, i: int, train: bool):
    preact = None
    for block in (self.layer1, self.layer2, self.layer3)[i - 1]:
      h, preact = block(h, train)
    return h, {f"stage{i}": h, f"preact_stage{i}": preact}

  def apply_head(self, h, train: bool):
    pooled = global_avg_pool(h)
    return self.fc(pooled), {"pooled": pooled}


def _make(depth: int, filters: Tuple[int, ...]):
  def build(num_classes: int, **kw) -> ResNet:
    return ResNet(num_classes=num_classes, depth=depth, num_filters=filters, **kw)

  return build


_BASE = (16, 16, 32, 64)
_X4 = (32, 64, 128, 256)

resnet8 = register("resnet8")(_make(8, _BASE))
resnet14 = register("resnet14")(_make(14, _BASE))
resnet20 = register("resnet20")(_make(20, _BASE))
resnet32 = register("resnet32")(_make(32, _BASE))
resnet44 = register("resnet44")(_make(44, _BASE))
resnet56 = register("resnet56")(_make(56, _BASE))
resnet110 = register("resnet110")(_make(110, _BASE))
resnet8x4 = register("resnet8x4")(_make(8, _X4))
resnet32x4 = register("resnet32x4")(_make(32, _X4))
