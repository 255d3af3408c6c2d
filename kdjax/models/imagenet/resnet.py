"""ImageNet ResNets in torchvision's layout: ``resnet18/34/50/101/152_imagenet``.

7x7 stride-2 conv stem + BN + ReLU, 3x3 stride-2 max pooling, four stages of BasicBlocks
([2, 2, 2, 2] / [3, 4, 6, 3]) or Bottlenecks ([3, 4, 6, 3] / [3, 4, 23, 3] / [3, 8, 36, 3] for
50 / 101 / 152, expansion 4, stride on the 3x3 conv: torchvision's "ResNet v1.5"), global average
pooling, ``Linear``. A stage's first block gets a 1x1 conv + BN shortcut when its stride or width
changes. Initialisers as torchvision
(``kaiming_normal_(fan_out)`` convs, BN 1/0, default ``Linear``). Parameter counts with 1000
classes equal torchvision's: 11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 / 60,192,808.

Taps (NHWC; at 224x224 input), as mdistiller's ImageNet ResNet (``feats`` / ``preact_feats``):

* ``stem``: relu(bn1(conv1(x))) **before** the max pool, 112x112x64. The max pool runs at the
  start of ``apply_stage(1)``.
* ``stage{i}``: layer_i outputs (post-ReLU): 56x56x64, 28x28x128, 14x14x256, 7x7x512 (x4 channels
  for resnet50/101/152).
* ``preact_stage{i}``: the residual sum of layer_i's last block before its final ReLU.
* ``pooled``: global average of ``stage4``: 512 (2048 for resnet50/101/152).

Parameter names follow torchvision's state-dict keys: ``layer1_0/conv1`` = ``layer1.0.conv1``,
``downsample_conv``/``downsample_bn`` = ``downsample.0``/``downsample.1``, ``fc``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdjax.models.cifar.common import CifarNet, batch_norm, conv, dense, global_avg_pool
from kdjax.models.cifar import resnet as cifar_resnet
from kdjax.models.registry import register


class BasicBlock(cifar_resnet.BasicBlock):
  """torchvision's BasicBlock: the same block as the CIFAR ResNets' (parameter names included)."""

  expansion = 1


class Bottleneck(nn.Module):
  """1x1-BN-ReLU, 3x3/s-BN-ReLU, 1x1-BN (x4 channels) + shortcut, ReLU. Returns ``(out, preact)``."""

  planes: int
  stride: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32

  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    ura = not train

    def bn(name, y):
      return batch_norm(self.dtype, name=name)(y, use_running_average=ura)

    out = nn.relu(bn("bn1", conv(self.planes, 1, dtype=self.dtype, name="conv1")(x)))
    out = nn.relu(
      bn("bn2", conv(self.planes, 3, self.stride, 1, dtype=self.dtype, name="conv2")(out))
    )
    out = bn("bn3", conv(self.planes * 4, 1, dtype=self.dtype, name="conv3")(out))
    residual = x
    if self.downsample:
      residual = bn(
        "downsample_bn",
        conv(self.planes * 4, 1, self.stride, dtype=self.dtype, name="downsample_conv")(x),
      )
    preact = out + residual
    return nn.relu(preact), preact


class ImageNetResNet(CifarNet):
  """torchvision ResNet; ``block`` is ``'basic'`` or ``'bottleneck'``."""

  num_classes: int
  block: str = "basic"
  layers: Sequence[int] = (2, 2, 2, 2)
  dtype: Any = jnp.float32

  num_stages = 4

  def setup(self):
    block = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
    self.conv1 = conv(64, 7, 2, 3, dtype=self.dtype)
    self.bn1 = batch_norm(self.dtype)
    inplanes = 64
    stages = []
    for planes, stride, n in zip((64, 128, 256, 512), (1, 2, 2, 2), self.layers):
      blocks = []
      for b in range(n):
        s = stride if b == 0 else 1
        blocks.append(
          block(
            planes,
            s,
            downsample=(b == 0 and (s != 1 or inplanes != planes * block.expansion)),
            dtype=self.dtype,
          )
        )
        inplanes = planes * block.expansion
      stages.append(blocks)
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.fc = dense(self.num_classes, inplanes, dtype=self.dtype)

  def apply_stem(self, x, train: bool):
    h = nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
    return h, {"stem": h}

  def _stage(self, h, i: int, train: bool):
    if i == 1:  # torchvision's maxpool (3x3, stride 2, padding 1; pads with -inf like PyTorch)
      h = nn.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    preact = None
    for block in (self.layer1, self.layer2, self.layer3, self.layer4)[i - 1]:
      h, preact = block(h, train)
    return h, {f"stage{i}": h, f"preact_stage{i}": preact}

  def apply_head(self, h, train: bool):
    pooled = global_avg_pool(h)
    return self.fc(pooled), {"pooled": pooled}


@register("resnet18_imagenet")
def resnet18_imagenet(num_classes: int, **kw) -> ImageNetResNet:
  return ImageNetResNet(num_classes=num_classes, block="basic", layers=(2, 2, 2, 2), **kw)


@register("resnet34_imagenet")
def resnet34_imagenet(num_classes: int, **kw) -> ImageNetResNet:
  return ImageNetResNet(num_classes=num_classes, block="basic", layers=(3, 4, 6, 3), **kw)


@register("resnet50_imagenet")
def resnet50_imagenet(num_classes: int, **kw) -> ImageNetResNet:
  return ImageNetResNet(num_classes=num_classes, block="bottleneck", layers=(3, 4, 6, 3), **kw)


@register("resnet101_imagenet")
def resnet101_imagenet(num_classes: int, **kw) -> ImageNetResNet:
  return ImageNetResNet(num_classes=num_classes, block="bottleneck", layers=(3, 4, 23, 3), **kw)


@register("resnet152_imagenet")
def resnet152_imagenet(num_classes: int, **kw) -> ImageNetResNet:
  return ImageNetResNet(num_classes=num_classes, block="bottleneck", layers=(3, 8, 36, 3), **kw)
