"""CIFAR ResNet50 (RepDistiller ``models/resnetv2.py``), registered as ``ResNet50``.

Bottleneck blocks [3, 4, 6, 3] (expansion 4, stride on the 3x3 conv), widths 64/128/256/512,
a 3x3 stride-1 stem without max pooling, four stages (strides 1, 2, 2, 2), global average
pooling and ``Linear(2048, K)``. A block gets a 1x1 conv + BN shortcut when its stride or width
changes.

Taps (NHWC; at 32x32 input):

* ``stem``: relu(bn1(conv1(x))), 32x32x64.
* ``stage{i}``: layer_i outputs (post-ReLU): 32x32x256, 16x16x512, 8x8x1024, 4x4x2048.
* ``preact_stage{i}``: the residual sum of layer_i's last block before its final ReLU.
  (RepDistiller returns a nested list with ``preact=True``; kdjax returns the same dict always.)
* ``pooled``: global average of ``stage4``, 2048.

Parameter names: ``layer1_0/conv1`` = ``layer1.0.conv1``; ``shortcut_conv``/``shortcut_bn`` =
``shortcut.0``/``shortcut.1``; ``linear``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdjax.models.cifar.common import CifarNet, batch_norm, conv, dense, global_avg_pool
from kdjax.models.registry import register


class Bottleneck(nn.Module):
  """1x1-BN-ReLU, 3x3/s-BN-ReLU, 1x1-BN, + shortcut, ReLU. Returns ``(out, preact)``."""

  in_planes: int
  planes: int
  stride: int = 1
  dtype: Any = jnp.float32

  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    ura = not train
    out_planes = self.expansion * self.planes

    def bn(name, y):
      return batch_norm(self.dtype, name=name)(y, use_running_average=ura)

    out = nn.relu(bn("bn1", conv(self.planes, 1, dtype=self.dtype, name="conv1")(x)))
    out = nn.relu(
      bn("bn2", conv(self.planes, 3, self.stride, 1, dtype=self.dtype, name="conv2")(out))
    )
    out = bn("bn3", conv(out_planes, 1, dtype=self.dtype, name="conv3")(out))
    shortcut = x
    if self.stride != 1 or self.in_planes != out_planes:
      shortcut = bn(
        "shortcut_bn", conv(out_planes, 1, self.stride, dtype=self.dtype, name="shortcut_conv")(x)
      )
    preact = out + shortcut
    return nn.relu(preact), preact


class ResNetV2(CifarNet):
  """CIFAR ResNet with Bottleneck blocks (``num_blocks`` per stage)."""

  num_classes: int
  num_blocks: Sequence[int] = (3, 4, 6, 3)
  dtype: Any = jnp.float32

  num_stages = 4

  def setup(self):
    self.conv1 = conv(64, 3, 1, 1, dtype=self.dtype)
    self.bn1 = batch_norm(self.dtype)
    in_planes = 64
    stages = []
    for planes, stride, n in zip((64, 128, 256, 512), (1, 2, 2, 2), self.num_blocks):
      blocks = []
      for b in range(n):
        blocks.append(Bottleneck(in_planes, planes, stride if b == 0 else 1, self.dtype))
        in_planes = planes * Bottleneck.expansion
      stages.append(blocks)
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.linear = dense(self.num_classes, in_planes, dtype=self.dtype)

  def apply_stem(self, x, train: bool):
    h = nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
    return h, {"stem": h}

  def _stage(self, h, i: int, train: bool):
    preact = None
    for block in (self.layer1, self.layer2, self.layer3, self.layer4)[i - 1]:
      h, preact = block(h, train)
    return h, {f"stage{i}": h, f"preact_stage{i}": preact}

  def apply_head(self, h, train: bool):
    pooled = global_avg_pool(h)
    return self.linear(pooled), {"pooled": pooled}


@register("ResNet50")
def resnet50(num_classes: int, **kw) -> ResNetV2:
  return ResNetV2(num_classes=num_classes, num_blocks=(3, 4, 6, 3), **kw)
