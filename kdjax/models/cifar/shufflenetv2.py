"""ShuffleNet V2 (RepDistiller ``models/ShuffleNetv2.py``), registered as ``ShuffleV2``.

Net size 1: stage widths [116, 232, 464], blocks [3, 7, 3], final 1x1 conv to 1024. Stem: 1x1
conv to 24 + BN + ReLU (no stride, no max pool). Each stage is a stride-2 ``DownBlock`` (two
branches, concatenated, channel shuffle) followed by ``BasicBlock``s (split channels in half, keep
the first half, transform the second: 1x1-BN-ReLU, 3x3 depthwise-BN, 1x1-BN-ReLU; concatenate,
shuffle with 2 groups). Head: relu(bn2(conv2)), global average pooling, ``Linear``. No custom
init in RepDistiller: PyTorch defaults.

Taps (NHWC; at 32x32 input):

* ``stem``: relu(bn1(conv1(x))), 32x32x24.
* ``stage{i}``: stage outputs, after the ReLU **and the channel shuffle**: 16x16x116, 8x8x232,
  4x4x464.
* ``preact_stage{i}``: the last block's ``concat[x1, bn3 output]`` **before** the ReLU and the
  shuffle, so its channel order differs from ``stage{i}``.
* ``pooled``: global average of relu(bn2(conv2(stage3))) (RepDistiller ``avg_pool2d(4)``), 1024.
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

CONFIGS = {
  0.2: ((40, 80, 160, 512), (3, 3, 3)),
  0.3: ((40, 80, 160, 512), (3, 7, 3)),
  0.5: ((48, 96, 192, 1024), (3, 7, 3)),
  1: ((116, 232, 464, 1024), (3, 7, 3)),
  1.5: ((176, 352, 704, 1024), (3, 7, 3)),
  2: ((224, 488, 976, 2048), (3, 7, 3)),
}


class ShuffleV2Block(nn.Module):
  """Split block (stride 1). Returns ``(shuffled output, pre-ReLU pre-shuffle concat)``."""

  in_channels: int
  split_ratio: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    ura = not train
    c = int(self.in_channels * self.split_ratio)
    kw = dict(kernel_init=torch_default_kernel, dtype=self.dtype)
    x1, x2 = x[..., :c], x[..., c:]
    out = conv(c, 1, name="conv1", **kw)(x2)
    out = nn.relu(batch_norm(self.dtype, name="bn1")(out, use_running_average=ura))
    out = conv(c, 3, 1, 1, groups=c, name="conv2", **kw)(out)
    out = batch_norm(self.dtype, name="bn2")(out, use_running_average=ura)
    out = conv(c, 1, name="conv3", **kw)(out)
    pre = batch_norm(self.dtype, name="bn3")(out, use_running_average=ura)
    preact = jnp.concatenate([x1, pre], axis=-1)
    out = jnp.concatenate([x1, nn.relu(pre)], axis=-1)
    return channel_shuffle(out, 2), preact


class ShuffleV2DownBlock(nn.Module):
  """Stride-2 block with two branches, concatenated and shuffled."""

  in_channels: int
  out_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    ura = not train
    cin, mid = self.in_channels, self.out_channels // 2
    kw = dict(kernel_init=torch_default_kernel, dtype=self.dtype)

    def bn(name, y):
      return batch_norm(self.dtype, name=name)(y, use_running_average=ura)

    # left: 3x3 depthwise/2 - BN - 1x1 - BN - ReLU
    left = bn("bn1", conv(cin, 3, 2, 1, groups=cin, name="conv1", **kw)(x))
    left = nn.relu(bn("bn2", conv(mid, 1, name="conv2", **kw)(left)))
    # right: 1x1 - BN - ReLU - 3x3 depthwise/2 - BN - 1x1 - BN - ReLU
    right = nn.relu(bn("bn3", conv(mid, 1, name="conv3", **kw)(x)))
    right = bn("bn4", conv(mid, 3, 2, 1, groups=mid, name="conv4", **kw)(right))
    right = nn.relu(bn("bn5", conv(mid, 1, name="conv5", **kw)(right)))
    return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleNetV2(CifarNet):
  num_classes: int
  net_size: float = 1
  dtype: Any = jnp.float32

  num_stages = 3

  def setup(self):
    out_channels, num_blocks = CONFIGS[self.net_size]
    self.conv1 = conv(24, 1, kernel_init=torch_default_kernel, dtype=self.dtype)
    self.bn1 = batch_norm(self.dtype)
    cin = 24
    stages = []
    for cout, n in zip(out_channels[:3], num_blocks):
      stages.append(
        [ShuffleV2DownBlock(cin, cout, self.dtype)]
        + [ShuffleV2Block(cout, dtype=self.dtype) for _ in range(n)]
      )
      cin = cout
    self.layer1, self.layer2, self.layer3 = stages
    self.conv2 = conv(out_channels[3], 1, kernel_init=torch_default_kernel, dtype=self.dtype)
    self.bn2 = batch_norm(self.dtype)
    self.linear = dense(self.num_classes, out_channels[3], dtype=self.dtype)

  def apply_stem(self, x, train: bool):
    h = nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
    return h, {"stem": h}

  def _stage(self, h, i: int, train: bool):
    down, *blocks = (self.layer1, self.layer2, self.layer3)[i - 1]
    h = down(h, train)
    preact = None
    for block in blocks:
      h, preact = block(h, train)
    return h, {f"stage{i}": h, f"preact_stage{i}": preact}

  def apply_head(self, h, train: bool):
    h = nn.relu(self.bn2(self.conv2(h), use_running_average=not train))
    pooled = global_avg_pool(h)
    return self.linear(pooled), {"pooled": pooled}


@register("ShuffleV2")
def shufflev2(num_classes: int, **kw) -> ShuffleNetV2:
  return ShuffleNetV2(num_classes=num_classes, net_size=1, **kw)
