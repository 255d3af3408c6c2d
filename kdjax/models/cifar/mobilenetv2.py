"""MobileNetV2 (RepDistiller ``models/mobilenetv2.py``), registered as ``MobileNetV2``.

This is RepDistiller's ``mobile_half``: width multiplier 0.5, expansion 6, last conv 1280.
Stem conv 3x3 stride 2 (conv-BN-ReLU); seven groups of inverted residual blocks
(t, c, n, s) = (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
(6, 160, 3, 2), (6, 320, 1, 1), channels scaled by 0.5 (8, 12, 16, 32, 48, 80, 160); every block
has the 1x1 expansion conv (also for t = 1); 1x1 conv to 1280 + BN + ReLU; global average
pooling; ``Linear`` classifier.

Stages (kdjax's split of RepDistiller's ``blocks``): stage1 = blocks[0..1], stage2 = blocks[2],
stage3 = blocks[3..4], stage4 = blocks[5..6]; the head is conv2 + pooling + classifier.

Taps (NHWC; at 32x32 input):

* ``stem``: conv1 output (after its ReLU), 16x16x16.
* ``stage{i}``: outputs after blocks[1], [2], [4], [6]: 16x16x12, 8x8x16, 4x4x48, 2x2x160
  (linear bottleneck outputs: no ReLU).
* ``preact_stage{i}``: **the same arrays as** ``stage{i}`` (RepDistiller ignores ``preact`` for
  MobileNetV2).
* ``pooled``: global average of relu(bn(conv2(stage4))), 1280.

Parameter names: ``conv1_conv``/``conv1_bn`` = ``conv1.0``/``conv1.1``; ``blocks_{g}_{b}/conv_{k}``
= ``blocks.g.b.conv.k``; ``conv2_conv``/``conv2_bn``; ``classifier`` = ``classifier.0``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdjax.models.cifar.common import (
  CifarNet,
  batch_norm,
  conv,
  dense,
  global_avg_pool,
  normal,
  zeros,
)
from kdjax.models.registry import register

# t (expansion; None = the model's expand_ratio), c, n, s
SETTING = (
  (1, 16, 1, 1),
  (None, 24, 2, 1),
  (None, 32, 3, 2),
  (None, 64, 4, 2),
  (None, 96, 3, 1),
  (None, 160, 3, 2),
  (None, 320, 1, 1),
)
# Which block groups make up each kdjax stage.
STAGE_GROUPS = ((0, 1), (2,), (3, 4), (5, 6))


class InvertedResidual(nn.Module):
  """1x1 expand - BN - ReLU - 3x3 depthwise - BN - ReLU - 1x1 project - BN (+ identity)."""

  inp: int
  oup: int
  stride: int
  expand_ratio: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    ura = not train
    hidden = self.inp * self.expand_ratio
    out = conv(hidden, 1, dtype=self.dtype, name="conv_0")(x)
    out = nn.relu(batch_norm(self.dtype, name="conv_1")(out, use_running_average=ura))
    out = conv(hidden, 3, self.stride, 1, groups=hidden, dtype=self.dtype, name="conv_3")(out)
    out = nn.relu(batch_norm(self.dtype, name="conv_4")(out, use_running_average=ura))
    out = conv(self.oup, 1, dtype=self.dtype, name="conv_6")(out)
    out = batch_norm(self.dtype, name="conv_7")(out, use_running_average=ura)
    if self.stride == 1 and self.inp == self.oup:
      out = x + out
    return out


class MobileNetV2(CifarNet):
  """CIFAR MobileNetV2 with width multiplier ``width_mult`` and expansion ``expand_ratio``."""

  num_classes: int
  width_mult: float = 0.5
  expand_ratio: int = 6
  dtype: Any = jnp.float32

  num_stages = 4

  def setup(self):
    inp = int(32 * self.width_mult)
    self.conv1_conv = conv(inp, 3, 2, 1, dtype=self.dtype)
    self.conv1_bn = batch_norm(self.dtype)
    groups = []
    for t, c, n, s in SETTING:
      oup = int(c * self.width_mult)
      t = self.expand_ratio if t is None else t
      group = []
      for b in range(n):
        group.append(InvertedResidual(inp, oup, s if b == 0 else 1, t, self.dtype))
        inp = oup
      groups.append(group)
    self.blocks = groups
    last = int(1280 * self.width_mult) if self.width_mult > 1.0 else 1280
    self.conv2_conv = conv(last, 1, dtype=self.dtype)
    self.conv2_bn = batch_norm(self.dtype)
    self.classifier = dense(
      self.num_classes, last, kernel_init=normal(0.01), bias_init=zeros, dtype=self.dtype
    )

  def apply_stem(self, x, train: bool):
    h = nn.relu(self.conv1_bn(self.conv1_conv(x), use_running_average=not train))
    return h, {"stem": h}

  def _stage(self, h, i: int, train: bool):
    for g in STAGE_GROUPS[i - 1]:
      for block in self.blocks[g]:
        h = block(h, train)
    return h, {f"stage{i}": h, f"preact_stage{i}": h}

  def apply_head(self, h, train: bool):
    h = nn.relu(self.conv2_bn(self.conv2_conv(h), use_running_average=not train))
    pooled = global_avg_pool(h)
    return self.classifier(pooled), {"pooled": pooled}


@register("MobileNetV2")
def mobilenetv2(num_classes: int, **kw) -> MobileNetV2:
  """RepDistiller ``mobile_half`` (= ``mobilenetv2_T_w(6, 0.5)``)."""
  return MobileNetV2(num_classes=num_classes, **kw)


@register("mobilenetv2_075")
def mobilenetv2_075(num_classes: int, **kw) -> MobileNetV2:
  """CheckpointKD's student ``mobilenetv2_075`` (LeapLabTHU/CheckpointKD ``models/mobilenetv2.py``:
  ``MobileNetV2(T=6, width_mult=0.75)``, the same network as RepDistiller's with width 0.75);
  parity: ``tests/test_mobilenetv2_075.py``."""
  return MobileNetV2(num_classes=num_classes, width_mult=0.75, **kw)
