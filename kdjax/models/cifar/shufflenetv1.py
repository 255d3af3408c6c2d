"""ShuffleNet V1 (RepDistiller ``models/ShuffleNetv1.py``), registered as ``ShuffleV1``.

Groups 3, stage widths [240, 480, 960], blocks [4, 8, 4]. Stem: 1x1 conv to 24 + BN + ReLU (no
stride, no max pool). Bottleneck: grouped 1x1 (groups 1 when the block input has 24 channels)
- BN - ReLU - channel shuffle - 3x3 depthwise (stride s) - BN - ReLU - grouped 1x1 - BN; the
first block of each stage has stride 2, a 3x3/2 average-pool shortcut (zero padding counted,
like PyTorch's ``count_include_pad=True``) and concatenates ``[branch, shortcut]``; other blocks
add. Global average pooling and ``Linear``. No custom init in RepDistiller: PyTorch defaults.

Taps (NHWC; at 32x32 input):

* ``stem``: relu(bn1(conv1(x))), 32x32x24.
* ``stage{i}``: stage outputs (post-ReLU): 16x16x240, 8x8x480, 4x4x960.
* ``preact_stage{i}``: last block's ``branch + residual`` before the final ReLU.
* ``pooled``: global average of ``stage3`` (RepDistiller ``avg_pool2d(4)``), 960.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdjax.models.cifar.common import (
  CifarNet,
  batch_norm,
  channel_shuffle,
  conv,
  dense,
  global_avg_pool,
  torch_default_kernel,
)
from kdjax.models.registry import register


class ShuffleV1Bottleneck(nn.Module):
  """Returns ``(relu(preact), preact)``."""

  in_planes: int
  out_planes: int
  stride: int
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    ura = not train
    mid = self.out_planes // 4
    g = 1 if self.in_planes == 24 else self.groups
    kw = dict(kernel_init=torch_default_kernel, dtype=self.dtype)
    out = conv(mid, 1, groups=g, name="conv1", **kw)(x)
    out = nn.relu(batch_norm(self.dtype, name="bn1")(out, use_running_average=ura))
    out = channel_shuffle(out, g)
    out = conv(mid, 3, self.stride, 1, groups=mid, name="conv2", **kw)(out)
    out = nn.relu(batch_norm(self.dtype, name="bn2")(out, use_running_average=ura))
    out = conv(self.out_planes, 1, groups=self.groups, name="conv3", **kw)(out)
    out = batch_norm(self.dtype, name="bn3")(out, use_running_average=ura)
    if self.stride == 2:
      res = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=True)
      preact = jnp.concatenate([out, res], axis=-1)
    else:
      preact = out + x
    return nn.relu(preact), preact


class ShuffleNetV1(CifarNet):
  num_classes: int
  out_planes: tuple = (240, 480, 960)
  num_blocks: tuple = (4, 8, 4)
  groups: int = 3
  dtype: Any = jnp.float32

  num_stages = 3

  def setup(self):
    self.conv1 = conv(24, 1, kernel_init=torch_default_kernel, dtype=self.dtype)
    self.bn1 = batch_norm(self.dtype)
    in_planes = 24
    stages = []
    for out_planes, n in zip(self.out_planes, self.num_blocks):
      blocks = []
      for b in range(n):
        cat = in_planes if b == 0 else 0
        blocks.append(
          ShuffleV1Bottleneck(
            in_planes, out_planes - cat, 2 if b == 0 else 1, self.groups, self.dtype
          )
        )
        in_planes = out_planes
      stages.append(blocks)
    self.layer1, self.layer2, self.layer3 = stages
    self.linear = dense(self.num_classes, self.out_planes[2], dtype=self.dtype)

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
    return self.linear(pooled), {"pooled": pooled}


@register("ShuffleV1")
def shufflev1(num_classes: int, **kw) -> ShuffleNetV1:
  return ShuffleNetV1(num_classes=num_classes, **kw)
